"""Model-name globs as SQL conditions, the same on both backends."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import false, or_

from registry.domain.permissions import like_patterns


def name_matches(column: Any, patterns: Sequence[str], sqlite: bool) -> Any:
    """The column matches one of the globs ('*', '?'): GLOB on SQLite, whose LIKE ignores case;
    LIKE with the wildcards translated on PostgreSQL."""
    if not patterns:
        return false()
    if sqlite:
        return or_(*(column.op("GLOB")(p) for p in patterns))
    return or_(*(column.like(p, escape="\\") for p in like_patterns(patterns)))


def like(column: Any, pattern: str, sqlite: bool) -> Any:
    """SQL LIKE ('%', '_'), case-sensitive on both backends: SQLite's LIKE ignores ASCII case, so
    there the pattern becomes a GLOB (its own wildcards in brackets, so they match themselves)."""
    if not sqlite:  # no escape character, as on SQLite: a backslash is itself
        return column.like(literal_backslashes(pattern))
    glob = "".join({"%": "*", "_": "?", "*": "[*]", "?": "[?]", "[": "[[]"}.get(ch, ch) for ch in pattern)
    return column.op("GLOB")(glob)


def literal_backslashes(pattern: str) -> str:
    """A LIKE pattern for PostgreSQL, whose LIKE takes a backslash as its escape character (and
    refuses a pattern ending in one): each backslash doubled matches one backslash."""
    return pattern.replace("\\", "\\\\")
