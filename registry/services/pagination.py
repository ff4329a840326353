"""Opaque list cursors and the shared limit rule."""

from __future__ import annotations

import base64
import json
from typing import Any

from registry.domain.errors import ValidationError

DEFAULT_LIMIT, MAX_LIMIT = 50, 1000


def check_limit(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise ValidationError(f"limit must be between 1 and {MAX_LIMIT}")
    return limit


def encode_cursor(key: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps([key], separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, kind: type) -> Any:
    """The key encoded by :func:`encode_cursor`, or None; a cursor we did not issue is a 400."""
    if not cursor:
        return None
    try:
        decoded = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, RecursionError):  # RecursionError: a forged cursor of nested brackets
        raise ValidationError("cursor is not one this service issued") from None
    if not isinstance(decoded, list) or len(decoded) != 1:
        raise ValidationError("cursor is not one this service issued")
    (key,) = decoded
    if (not isinstance(key, kind) or isinstance(key, bool) or (kind is int and not 0 <= key < 2**63)
            or (kind is str and "\x00" in key)):  # PostgreSQL text cannot hold NUL: ours never do
        raise ValidationError("cursor is not one this service issued")
    return key


def page(items: list[Any], limit: int, key_of: Any) -> tuple[list[Any], str | None]:
    """Split a fetch of ``limit + 1`` rows into the page and the cursor of the next one."""
    if len(items) > limit:
        items = items[:limit]
        return items, encode_cursor(key_of(items[-1]))
    return items, None
