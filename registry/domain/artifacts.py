"""Artifact files of a model version: which paths are acceptable, what a client's digest header
says, and the manifest that sealing a version freezes.

A path names a file relative to its version (``model.onnx``, ``weights/part-0001.bin``). It is
refused rather than repaired when it could mean something else on some store: ``..`` or ``.``
segments, an absolute path, backslashes, control characters, empty segments, or a percent-escape
left after the server decoded the URL once (a double-encoded ``%252e%252e`` is a trick, not a name).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote

from registry.domain.errors import ValidationError

MAX_PATH_BYTES = 512
MAX_SEGMENT_BYTES = 255  # what local file systems allow for one name
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTENT_DIGEST_SHA256 = re.compile(r"^sha-256=:([A-Za-z0-9+/]{43}=):$")
_BASE64_SHA256 = re.compile(r"^[A-Za-z0-9+/]{43}=$")


def artifact_path(raw: str) -> str:
    """The normalised (NFC) path, or ValidationError saying why it is refused."""
    if not raw:
        raise ValidationError("an artifact path must name a file")
    if any(ch < " " or "\x7f" <= ch <= "\x9f" for ch in raw):
        raise ValidationError("an artifact path cannot hold control characters (NUL included)")
    if any("\ud800" <= ch <= "\udfff" for ch in raw):
        raise ValidationError("an artifact path must be valid Unicode (no lone surrogates)")
    if "\\" in raw:
        raise ValidationError("an artifact path uses '/' between names, never '\\'")
    if raw.startswith("/") or _DRIVE.match(raw):
        raise ValidationError("an artifact path is relative to its version, not absolute")
    if unquote(raw) != raw:
        raise ValidationError("an artifact path cannot hold percent-escapes after URL decoding "
                              "(double-encoded paths are refused)")
    path = unicodedata.normalize("NFC", raw)
    if len(path.encode()) > MAX_PATH_BYTES:
        raise ValidationError(f"an artifact path is at most {MAX_PATH_BYTES} bytes of UTF-8")
    for segment in path.split("/"):
        if segment in ("", ".", ".."):
            raise ValidationError("an artifact path cannot hold empty, '.' or '..' segments")
        if len(segment.encode()) > MAX_SEGMENT_BYTES:
            raise ValidationError(f"each name in an artifact path is at most {MAX_SEGMENT_BYTES} bytes")
    return path


def sha256_hex(value: str) -> str:
    """A digest given as 64 lower-case hex digits (upper case is accepted and lowered)."""
    digest = value.strip().lower()
    if not SHA256_HEX.fullmatch(digest):
        raise ValidationError("sha256 must be 64 hex digits")
    return digest


def client_digest(content_digest: str | None, amz_checksum: str | None) -> str | None:
    """The sha256 (hex) a client declared for its upload, in exactly one of two forms:
    ``Content-Digest: sha-256=:<base64>:`` (RFC 9530) or ``x-amz-checksum-sha256: <base64>``."""
    if content_digest is not None and amz_checksum is not None:
        raise ValidationError("give the digest in Content-Digest or x-amz-checksum-sha256, not both")
    if content_digest is not None:
        match = _CONTENT_DIGEST_SHA256.fullmatch(content_digest.strip())
        if match is None:
            raise ValidationError("Content-Digest must be exactly sha-256=:<base64 of 32 bytes>:")
        return _hex_of(match.group(1))
    if amz_checksum is not None:
        if not _BASE64_SHA256.fullmatch(amz_checksum.strip()):
            raise ValidationError("x-amz-checksum-sha256 must be the base64 of 32 bytes")
        return _hex_of(amz_checksum.strip())
    return None


def _hex_of(b64: str) -> str:
    try:
        raw = base64.b64decode(b64, validate=True)
    except binascii.Error:
        raise ValidationError("the digest is not valid base64") from None
    if len(raw) != 32:
        raise ValidationError("a sha-256 digest is 32 bytes")
    return raw.hex()


def content_digest(sha256: str) -> str:
    """The ``Content-Digest`` header value for a hex sha256."""
    return "sha-256=:" + base64.b64encode(bytes.fromhex(sha256)).decode() + ":"


@dataclass(frozen=True, slots=True)
class Artifact:
    path: str
    size: int
    sha256: str
    uploaded_at: datetime
    uploaded_by: str
    key: str = ""  # where the store holds the bytes; not part of the manifest

    def entry(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


@dataclass(frozen=True, slots=True)
class Manifest:
    """What a sealed version holds: every file's path, size and sha256, ordered by path."""

    files: tuple[Mapping[str, Any], ...]

    @classmethod
    def of(cls, artifacts: Iterable[Artifact]) -> Manifest:
        return cls(tuple(a.entry() for a in sorted(artifacts, key=lambda a: a.path)))

    def canonical(self) -> str:
        """RFC 8785 (JCS) text: for these fixed ASCII keys, strings and integers, sorted keys and
        minimal separators without ASCII escaping are exactly JCS."""
        return json.dumps({"files": list(self.files)}, sort_keys=True, separators=(",", ":"),
                          ensure_ascii=False)

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.canonical().encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {"files": [dict(f) for f in self.files], "digest": self.digest}
