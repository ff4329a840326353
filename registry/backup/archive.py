"""The archive format: gzip'd JSON Lines, written and read as a stream.

    {"format": "model-registry-archive", "version": 1, "schema_revision": "0009", ...}   header
    {"table": "registered_models", "columns": ["id", ...], "last_id": 12}                 a section
    [1, "fraud", ...]                                                                       its rows,
    ...                                                                                     by key
    {"end": "registered_models", "rows": 3}
    ...                                                                                     (each table)
    {"trailer": true, "rows": {"registered_models": 3, ...}, "sha256": "..."}

Values are encoded by the column's type, so they come back identical on either backend:
timestamps as RFC 3339 with their UTC offset, JSON columns as JSON, binary as base64, and the
rest as JSON scalars. ``last_id`` is the highest id the source ever handed out (at least its
largest row's), so a restored database never reuses an id a deleted row had: a model's id names
its audit chain, which outlives the model. The trailer's SHA-256 covers every line before it, so
a truncated or edited archive is refused before anything is committed.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import json
import zlib
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import JSON, Boolean, Column, DateTime, Float, Integer, LargeBinary, String

from registry.adapters.db.tables import UTCDateTime

FORMAT = "model-registry-archive"
VERSION = 1


class ArchiveError(ValueError):
    """The file is not an archive this release can restore: damaged, truncated, or newer."""


# -- values ---------------------------------------------------------------------------------------

Codec = tuple[Callable[[Any], Any], Callable[[Any], Any]]


def _timestamp(value: Any) -> datetime:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp without a UTC offset: {value!r}")
    return parsed


def _typed(kind: type | tuple[type, ...]) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ValueError(f"{value!r} is not of the column's type")
        return value
    return check


def _same(value: Any) -> Any:
    return value


CODECS: list[tuple[type, Codec]] = [
    # Order matters: UTCDateTime before DateTime, Boolean and Float before Integer.
    (UTCDateTime, (lambda v: v.isoformat(), _timestamp)),
    (DateTime, (lambda v: v.isoformat(), _timestamp)),
    (JSON, (_same, _same)),
    (Boolean, (_same, _typed(bool))),
    (Float, (float, lambda v: float(_typed((int, float))(v)))),
    (Integer, (int, _typed(int))),
    (LargeBinary, (lambda v: base64.b64encode(v).decode(), base64.b64decode)),
    (String, (_same, _typed(str))),  # Text too
]


def codec(column: Column[Any]) -> Codec:
    """How a column's values go into an archive and come back (raises for a type without one,
    so a new kind of column cannot be exported wrongly)."""
    for kind, pair in CODECS:
        if isinstance(column.type, kind):
            return pair
    raise TypeError(f"no archive encoding for {column.table.name}.{column.name} ({column.type!r})")


def encoder(columns: list[Column[Any]]) -> Callable[[Any], list[Any]]:
    coders = [codec(c)[0] for c in columns]
    return lambda row: [None if v is None else enc(v) for enc, v in zip(coders, row, strict=True)]


def decoder(columns: list[Column[Any]]) -> Callable[[list[Any]], dict[str, Any]]:
    names = [c.name for c in columns]
    coders = [codec(c)[1] for c in columns]

    def decode(values: list[Any]) -> dict[str, Any]:
        if not isinstance(values, list) or len(values) != len(names):
            raise ArchiveError(f"a row has {len(values) if isinstance(values, list) else 'no'} "
                               f"values where {len(names)} columns were declared")
        try:
            return {n: None if v is None else dec(v) for n, dec, v in zip(names, coders, values, strict=True)}
        except (ValueError, TypeError) as exc:
            raise ArchiveError(f"a row does not fit its columns: {exc}") from None
    return decode


# -- lines ----------------------------------------------------------------------------------------


def _line(obj: Any) -> bytes:
    # ASCII: a string with a lone surrogate (which UTF-8 cannot hold) still round-trips.
    return json.dumps(obj, separators=(",", ":")).encode() + b"\n"


class Writer:
    """Writes an archive line by line, hashing what it writes."""

    def __init__(self, out: IO[bytes]) -> None:
        self._out = out
        self._digest = hashlib.sha256()

    def write(self, obj: Any) -> None:
        line = _line(obj)
        self._digest.update(line)
        self._out.write(line)

    def finish(self, rows: dict[str, int]) -> None:
        self._out.write(_line({"trailer": True, "rows": rows, "sha256": self._digest.hexdigest()}))


@contextlib.contextmanager
def open_for_writing(path: Path) -> Iterator[IO[bytes]]:
    """A new gzip file at ``path`` (never an existing one). mtime 0: the same data gives the same
    bytes; level 6: most of level 9's size for a third of its CPU."""
    with path.open("xb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                                compresslevel=6, mtime=0) as out:
        yield out


class Reader:
    """Reads an archive's lines in order, hashing them; damage of any kind is an ArchiveError."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._digest = hashlib.sha256()
        self._lines = self._read()

    def _read(self) -> Iterator[bytes]:
        try:
            with gzip.open(self.path, "rb") as f:
                yield from f
        except (OSError, EOFError, zlib.error) as exc:  # BadGzipFile is an OSError
            raise ArchiveError(f"{self.path} is damaged or truncated ({exc})") from None

    def next(self, hashed: bool = True) -> Any:
        line = next(self._lines, None)
        if line is None:
            raise ArchiveError(f"{self.path} ends early: it is truncated")
        if hashed:
            self._digest.update(line)
        try:
            return json.loads(line)
        except ValueError:
            raise ArchiveError(f"{self.path} has a line that is not JSON: it is damaged") from None

    def header(self) -> dict[str, Any]:
        head = self.next()
        if not isinstance(head, dict) or head.get("format") != FORMAT:
            raise ArchiveError(f"{self.path} is not a model registry archive")
        version = head.get("version")
        if not isinstance(version, int) or version > VERSION:
            raise ArchiveError(f"{self.path} is archive format version {version!r}; this release "
                               f"reads version {VERSION} and older: restore it with a newer release")
        if not isinstance(head.get("schema_revision"), str):
            raise ArchiveError(f"{self.path} does not name its schema revision")
        return head

    def check_trailer(self, trailer: dict[str, Any], rows: dict[str, int]) -> None:
        """The trailer must match the rows read and the hash of every line before it; nothing may
        follow it."""
        if trailer.get("rows") != rows:
            raise ArchiveError(f"{self.path}: the trailer's row counts {trailer.get('rows')} do "
                               f"not match the rows read {rows}")
        if trailer.get("sha256") != self._digest.hexdigest():
            raise ArchiveError(f"{self.path}: the content does not match its SHA-256: it was "
                               "changed or damaged")
        if next(self._lines, None) is not None:
            raise ArchiveError(f"{self.path} has data after its trailer")
