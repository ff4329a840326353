"""A list of names folded into one column of a row, the same on both backends.

``string_agg`` (PostgreSQL) and ``group_concat`` (SQLite) join the names with commas inside a
correlated subquery, so a version's aliases come with the version's own row: no second round trip
on the hot reads. The separator is safe because no alias holds a comma (domain.model.validate_alias).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Text
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

SEPARATOR = ","


class joined_names(FunctionElement[str]):  # noqa: N801 (a SQL function, named as SQLAlchemy's are)
    """``joined_names(column)``: the column's values of the group, comma-separated; NULL for none."""

    type = Text()
    inherit_cache = True
    name = "joined_names"


@compiles(joined_names, "postgresql")
def _string_agg(element: joined_names, compiler: Any, **kw: Any) -> str:
    return f"string_agg({compiler.process(element.clauses, **kw)}, '{SEPARATOR}')"


@compiles(joined_names, "sqlite")
def _group_concat(element: joined_names, compiler: Any, **kw: Any) -> str:
    return f"group_concat({compiler.process(element.clauses, **kw)}, '{SEPARATOR}')"


def split_names(joined: str | None) -> list[str]:
    """The names of a ``joined_names`` value, sorted (the aggregate's order is unspecified)."""
    return sorted(joined.split(SEPARATOR)) if joined else []
