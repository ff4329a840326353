"""structlog, configured once: JSON lines in production, console on a TTY, for every logger.

The standard library's loggers (uvicorn's, SQLAlchemy's, alembic's, ``warnings``) and structlog's
own all end in one handler on the root logger whose ``ProcessorFormatter`` renders them alike: one
JSON object a line with ``timestamp``, ``level``, ``logger`` and ``event``, tracebacks as
structured ``exception`` lists (without local variables, which may hold secrets).

Request-scoped values (``request_id``, ``trace_id``, ``span_id``, ``actor``, ``model``,
``version``) are bound in contextvars by the API edge, so every line of a request carries them,
library lines included.

Levels: the registry's own loggers at INFO, uvicorn's start and stop lines and alembic's migration
lines at INFO, every other library at WARNING. ``REGISTRY_LOG_LEVEL`` changes them: a level for
the registry, then any ``logger=level`` pairs, e.g. ``debug,sqlalchemy.engine=info``.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

import structlog

# The libraries whose INFO lines an operator wants: the server starting and stopping, migrations.
LIBRARY_LEVELS = {"uvicorn.error": logging.INFO, "alembic.runtime.migration": logging.INFO}
LEVEL_VARIABLE = "REGISTRY_LOG_LEVEL"
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
           "error": logging.ERROR, "critical": logging.CRITICAL}

_handler: logging.Handler | None = None
_configured: tuple[Any, ...] | None = None


def parse_levels(text: str | None, default: int = logging.INFO) -> tuple[int, dict[str, int], list[str]]:
    """``REGISTRY_LOG_LEVEL``: the registry's level, levels per logger, and the parts not
    understood (logged as a warning and ignored: a typo in a log setting must not stop a start)."""
    level, per_logger, bad = default, {}, []
    for part in (text or "").split(","):
        part = part.strip()
        if not part:
            continue
        name, _, value = part.rpartition("=")
        number = _LEVELS.get(value.strip().lower())
        if number is None or (name == "" and "=" in part):
            bad.append(part)
        elif name:
            per_logger[name.strip()] = number
        else:
            level = number
    return level, per_logger, bad


# uvicorn's ANSI-coloured copy of the message, and what another handler's Formatter left on the
# record (the message again, its time): not extra fields of the line.
_NOT_EXTRA = ("color_message", "message", "asctime")


def _drop_not_extra(_: Any, __: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    for key in _NOT_EXTRA:
        event_dict.pop(key, None)
    return event_dict


def _shared_processors() -> list[Any]:
    """What every line gets, whether structlog or the standard library wrote it."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
    ]


def formatter(log_format: str) -> structlog.stdlib.ProcessorFormatter:
    """The formatter of the one handler: renders structlog's events and foreign log records."""
    if log_format == "console":
        final: list[Any] = [structlog.dev.ConsoleRenderer()]
    else:
        tracebacks = structlog.processors.ExceptionRenderer(
            structlog.tracebacks.ExceptionDictTransformer(show_locals=False))
        final = [tracebacks, structlog.processors.JSONRenderer()]
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_shared_processors(), structlog.stdlib.ExtraAdder(), _drop_not_extra],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *final],
    )


def configure(log_format: str, level: int = logging.INFO) -> None:
    """Set up logging (and trace export, see registry.tracing) for this process. Called by each
    command and by each uvicorn worker process; a second call with the same settings does
    nothing, a call with others replaces the first's handler."""
    global _handler, _configured
    registry_level, per_logger, bad = parse_levels(os.environ.get(LEVEL_VARIABLE), level)
    key = (log_format, registry_level, tuple(sorted(per_logger.items())), sys.stderr)
    if key == _configured:
        return
    root = logging.getLogger()
    if _handler is not None:
        root.removeHandler(_handler)
    _handler = logging.StreamHandler(sys.stderr)
    _handler.setFormatter(formatter(log_format))
    root.addHandler(_handler)
    root.setLevel(logging.WARNING)
    for name, number in {**LIBRARY_LEVELS, "registry": registry_level, **per_logger}.items():
        logging.getLogger(name).setLevel(number)
    logging.captureWarnings(True)
    structlog.configure(
        processors=[*_shared_processors(), structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        # the stdlib loggers' levels decide; this only skips the work below the lowest of ours
        wrapper_class=structlog.make_filtering_bound_logger(min(
            [registry_level, *(n for name, n in per_logger.items() if name.startswith("registry"))])),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    _configured = key
    if bad:
        structlog.get_logger("registry.start").warning(
            "log_level_ignored", variable=LEVEL_VARIABLE, parts=bad,
            detail="each part is a level (debug, info, warning, error, critical) or logger=level")
    from registry import tracing

    tracing.configure()
