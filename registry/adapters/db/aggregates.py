"""A list of names folded into one column of a row, the same on both backends.

SQLAlchemy's ``aggregate_strings`` is ``string_agg`` on PostgreSQL and ``group_concat`` on SQLite;
inside a correlated subquery it brings a version's aliases with the version's own row: no second
round trip on the hot reads. The separator is safe because no alias holds a comma
(domain.model.validate_alias).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, literal_column

SEPARATOR = ","


def joined_names(column: Any) -> Any:
    """The column's values of the group, comma-separated; NULL for none. The separator is a
    literal in the SQL (a bound one would be rendered at execution, which prebuilt statements
    compiled once for the driver cannot take)."""
    return func.aggregate_strings(column, literal_column(f"'{SEPARATOR}'"))  # type: ignore[arg-type]


def split_names(joined: str | None) -> list[str]:
    """The names of a ``joined_names`` value, sorted (the aggregate's order is unspecified)."""
    return sorted(joined.split(SEPARATOR)) if joined else []
