"""structlog, configured once: JSON lines in production, console on a TTY, for every logger.

The standard library's loggers (uvicorn's, SQLAlchemy's, alembic's, ``warnings``) end in one
handler on the root logger whose ``ProcessorFormatter`` renders them as structlog renders its own
lines, which it writes to the same stream directly (``NamedWriter``: the hot path, one access line
per request): one JSON object a line with ``timestamp``, ``level``, ``logger`` and ``event``,
tracebacks as structured ``exception`` lists (without local variables, which may hold secrets).
An exception nobody catches, in any thread, is such a line too (``uncaught_exception``), and so
is a command's last word when it cannot go on (``fatal``: ``cannot_continue``).

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
import threading
from typing import Any, NoReturn

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


def _renderers(log_format: str) -> list[Any]:
    """The last processors of every line: tracebacks as dicts, then JSON (or the console's)."""
    if log_format == "console":
        return [structlog.dev.ConsoleRenderer()]
    tracebacks = structlog.processors.ExceptionRenderer(
        structlog.tracebacks.ExceptionDictTransformer(show_locals=False))
    return [tracebacks, structlog.processors.JSONRenderer()]


def formatter(log_format: str) -> structlog.stdlib.ProcessorFormatter:
    """The formatter of the one handler: renders the standard library's log records."""
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*_shared_processors(), structlog.stdlib.ExtraAdder(), _drop_not_extra],
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *_renderers(log_format)],
    )


class NamedWriter(structlog.WriteLogger):
    """Where structlog's own lines go: rendered by structlog and written straight to the stream.
    Through the standard library's record, handler and formatter, the access line of every
    request cost three times as much (about 40 us instead of 12). The line keeps its logger's
    name, and the standard library logger of that name still decides its level."""

    def __init__(self, name: str, file: Any) -> None:
        super().__init__(file)
        self.name = name
        self.std = logging.getLogger(name)


_METHOD_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING,
                  "warn": logging.WARNING, "error": logging.ERROR, "exception": logging.ERROR,
                  "critical": logging.CRITICAL, "fatal": logging.CRITICAL}


def _by_logger_level(logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    if not logger.std.isEnabledFor(_METHOD_LEVELS.get(method_name, logging.INFO)):
        raise structlog.DropEvent
    return event_dict


def _route_uncaught(log_format: str) -> None:
    """In JSON, an exception nobody caught (in the main thread or another) is a log line too,
    its traceback structured, instead of the interpreter's plain text between the JSON lines."""
    if log_format != "json":
        sys.excepthook, threading.excepthook = sys.__excepthook__, threading.__excepthook__
        return
    log = structlog.get_logger("registry")

    def uncaught(kind: type[BaseException], value: BaseException, tb: Any) -> None:
        if issubclass(kind, KeyboardInterrupt):
            sys.__excepthook__(kind, value, tb)
            return
        log.critical("uncaught_exception", exc_info=(kind, value, tb))

    def uncaught_in_thread(args: threading.ExceptHookArgs) -> None:
        if args.exc_type is SystemExit:
            return
        log.error("uncaught_exception_in_thread", thread=getattr(args.thread, "name", None),
                  exc_info=(args.exc_type, args.exc_value, args.exc_traceback))

    sys.excepthook, threading.excepthook = uncaught, uncaught_in_thread


def fatal(message: str, logger: str = "registry.start") -> None:
    """Say why a command cannot go on: an ``error`` line of the log once logging is JSON (one
    more line for the log shipper), else ``error: ...`` on stderr for the person at the shell."""
    if _configured is not None and _configured[0] == "json":
        structlog.get_logger(logger).error("cannot_continue", detail=message)
    else:
        print(f"error: {message}", file=sys.stderr, flush=True)


def fail(message: str) -> NoReturn:
    """``fatal``, then end the process with status 1."""
    fatal(message)
    sys.exit(1)


def invalid_configuration(problem: str) -> NoReturn:
    """End a command whose settings are wrong, saying so in the log's own format: that of
    ``REGISTRY_LOG_FORMAT`` when it is a valid one (the wrong setting may be another), else the
    default (JSON unless stderr is a terminal)."""
    from registry.config import default_log_format, log_format_of

    configure(log_format_of(os.environ) or default_log_format())
    fail(f"invalid configuration: {problem}")


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
    stream = sys.stderr
    structlog.configure(
        processors=[_by_logger_level, *_shared_processors(), *_renderers(log_format)],
        # the stdlib loggers' levels decide; this only skips the work below the lowest of ours
        wrapper_class=structlog.make_filtering_bound_logger(min(
            [registry_level, *(n for name, n in per_logger.items() if name.startswith("registry"))])),
        logger_factory=lambda *args: NamedWriter(args[0] if args else "registry", stream),
        cache_logger_on_first_use=True,
    )
    _configured = key
    _route_uncaught(log_format)
    if bad:
        structlog.get_logger("registry.start").warning(
            "log_level_ignored", variable=LEVEL_VARIABLE, parts=bad,
            detail="each part is a level (debug, info, warning, error, critical) or logger=level")
    from registry import tracing

    tracing.configure()
