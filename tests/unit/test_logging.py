"""Logs and trace context without a server: the one formatter every line goes through, the
configuration as a whole (structlog, the standard library, warnings), REGISTRY_LOG_LEVEL, and
W3C traceparent parsing and spans. The served process is in tests/e2e/test_json_logs.py and
tests/e2e/test_trace_context.py."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import structlog

from registry import log as registry_log
from registry import tracing
from registry.adapters.lineage import LineageBuilder
from tests.lineage_spec import validate_run_event

TRACE = "0af7651916cd43dd8448eb211c80319c"
PARENT = "b7ad6b7169203331"


def _record(name: str, level: int, msg: str, *args: Any, exc_info: Any = None, **extra: Any) -> logging.LogRecord:
    record = logging.LogRecord(name, level, __file__, 1, msg, args, exc_info)
    record.__dict__.update(extra)
    return record


def test_a_library_line_is_one_json_object_with_its_logger_name() -> None:
    line = registry_log.formatter("json").format(
        _record("uvicorn.error", logging.INFO, "Started server process [%d]", 42,
                color_message="\x1b[36m42\x1b[0m", worker="w1"))
    out = json.loads(line)
    assert out["logger"] == "uvicorn.error" and out["level"] == "info"
    assert out["event"] == "Started server process [42]" and out["timestamp"].endswith("Z")
    assert out["worker"] == "w1"  # extra= fields are kept
    assert "color_message" not in out  # uvicorn's ANSI copy of the message is not


def test_a_library_traceback_is_a_structured_list_without_local_variables() -> None:
    secret = "whsec_do-not-log-me"  # noqa: F841  (a local of the failing frame)
    try:
        raise ValueError("boom")
    except ValueError:
        exc_info = sys.exc_info()
    line = registry_log.formatter("json").format(
        _record("sqlalchemy.pool.impl.AsyncAdaptedQueuePool", logging.ERROR, "Exception during reset",
                exc_info=exc_info))
    out = json.loads(line)
    assert "\n" not in line and "Traceback" not in line and "do-not-log-me" not in line
    [exc] = out["exception"]
    assert exc["exc_type"] == "ValueError" and exc["exc_value"] == "boom"
    assert exc["frames"][-1]["name"] == "test_a_library_traceback_is_a_structured_list_without_local_variables"
    assert "locals" not in exc["frames"][-1]


def test_the_console_format_stays_readable() -> None:
    line = registry_log.formatter("console").format(_record("alembic.runtime.migration", logging.INFO,
                                                            "Running upgrade 0009 -> 0010"))
    assert "Running upgrade 0009 -> 0010" in line and "alembic.runtime.migration" in line
    assert not line.startswith("{")


@pytest.mark.parametrize(("text", "expected"), [
    (None, (logging.INFO, {}, [])),
    ("", (logging.INFO, {}, [])),
    ("debug", (logging.DEBUG, {}, [])),
    ("WARNING, sqlalchemy.engine=info", (logging.WARNING, {"sqlalchemy.engine": logging.INFO}, [])),
    ("info,uvicorn.error=error,httpx=debug",
     (logging.INFO, {"uvicorn.error": logging.ERROR, "httpx": logging.DEBUG}, [])),
    ("loud,sqlalchemy=lots,=info", (logging.INFO, {}, ["loud", "sqlalchemy=lots", "=info"])),
])
def test_log_levels_from_the_setting(text: str | None, expected: tuple[Any, ...]) -> None:
    assert registry_log.parse_levels(text) == expected


@pytest.fixture
def configured(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], io.StringIO]]:
    """registry.log.configure() in this process, writing to a buffer; everything it changed is
    put back afterwards."""

    def configure() -> io.StringIO:
        stream = io.StringIO()
        monkeypatch.setattr(sys, "stderr", stream)  # here: pytest swaps stderr between phases
        registry_log.configure("json")
        return stream

    monkeypatch.setenv(registry_log.LEVEL_VARIABLE, "info,tests.library=info")
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", raising=False)
    root = logging.getLogger()
    saved_levels = {name: logging.getLogger(name).level
                    for name in ["", "registry", "tests.library", *registry_log.LIBRARY_LEVELS]}
    saved_handlers = list(root.handlers)
    monkeypatch.setattr(tracing, "_configured", False)
    monkeypatch.setattr(sys, "excepthook", sys.excepthook)  # put back after configure's hooks
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    try:
        yield configure
    finally:
        if registry_log._handler is not None:
            root.removeHandler(registry_log._handler)
        root.handlers[:] = saved_handlers
        for name, level in saved_levels.items():
            logging.getLogger(name).setLevel(level)
        logging.captureWarnings(False)
        structlog.reset_defaults()
        registry_log._handler = None
        registry_log._configured = None


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


UNCAUGHT = """
import sys, threading
from registry.log import configure
configure(sys.argv[1])
worker = threading.Thread(target=lambda: {}["missing"], name="loader")
worker.start()
worker.join()
raise ValueError("boom")
"""


def _uncaught(log_format: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", UNCAUGHT, log_format], capture_output=True,
                          text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})


def test_in_json_an_uncaught_exception_is_a_log_line_with_its_traceback_in_fields() -> None:
    """In the main thread and in another: no plain traceback between the JSON lines."""
    done = _uncaught("json")
    assert done.returncode == 1, done.stderr
    thread, main = [json.loads(line) for line in done.stderr.splitlines()]  # each line is JSON
    assert thread["event"] == "uncaught_exception_in_thread" and thread["thread"] == "loader"
    assert thread["level"] == "error" and thread["exception"][0]["exc_type"] == "KeyError"
    assert main["event"] == "uncaught_exception" and main["level"] == "critical"
    [exc] = main["exception"]
    assert (exc["exc_type"], exc["exc_value"]) == ("ValueError", "boom")
    assert exc["frames"][-1]["name"] == "<module>" and all("locals" not in f for f in exc["frames"])


def test_on_a_console_the_interpreter_prints_tracebacks_as_usual() -> None:
    done = _uncaught("console")
    assert done.returncode == 1
    assert "Exception in thread loader" in done.stderr
    assert done.stderr.rstrip().endswith("ValueError: boom") and "Traceback" in done.stderr


def test_fatal_is_an_error_line_in_json_and_plain_words_on_a_console(
        configured: Callable[[], io.StringIO], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry_log, "_configured", None)
    registry_log.fatal("before configure")  # nothing configured yet: for a person
    assert capsys.readouterr().err == "error: before configure\n"
    stream = configured()
    registry_log.fatal("the schema is old")
    [line] = _lines(stream)
    assert (line["level"], line["logger"], line["event"]) == ("error", "registry.start", "cannot_continue")
    assert line["detail"] == "the schema is old"


def test_structlog_the_standard_library_and_warnings_all_come_out_as_json(
        configured: Callable[[], io.StringIO]) -> None:
    stream = configured()
    registry_log.configure("json")  # each uvicorn worker configures again: still one handler
    with structlog.contextvars.bound_contextvars(request_id="r-1"):
        structlog.get_logger("registry.tests").info("canonical_line", model="m", version=3)
        logging.getLogger("tests.library").info("library line %s", "with args")
    logging.getLogger("tests.quiet").info("an INFO line of a library left at WARNING")
    warnings.warn("something deprecated", DeprecationWarning, stacklevel=1)
    lines = _lines(stream)
    assert [(x["logger"], x["event"]) for x in lines[:2]] == [
        ("registry.tests", "canonical_line"), ("tests.library", "library line with args")]
    assert lines[0]["model"] == "m" and lines[0]["version"] == 3
    assert lines[0]["request_id"] == lines[1]["request_id"] == "r-1"  # request context on both
    assert len(lines) == 3, lines  # once each, and nothing from the quiet library
    assert lines[2]["logger"] == "py.warnings" and "something deprecated" in lines[2]["event"]


def test_a_bad_level_setting_is_a_warning_not_a_failure(configured: Callable[[], io.StringIO],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(registry_log.LEVEL_VARIABLE, "warning,verbose")
    stream = configured()
    structlog.get_logger("registry.tests").info("below the level")
    [line] = _lines(stream)
    assert line["event"] == "log_level_ignored" and line["parts"] == ["verbose"]


# -- trace context ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("header", "sampled"), [
    (f"00-{TRACE}-{PARENT}-01", True),
    (f"00-{TRACE}-{PARENT}-00", False),
    (f"00-{TRACE}-{PARENT}-03", True),  # other flag bits: only "sampled" is ours to read
    (f"  00-{TRACE}-{PARENT}-01 ", True),
    (f"cc-{TRACE}-{PARENT}-01-what-a-later-version-adds", True),
])
def test_a_valid_traceparent_is_continued(header: str, sampled: bool) -> None:
    ctx = tracing.parse_traceparent(header)
    assert ctx == tracing.TraceContext(TRACE, PARENT, sampled)
    assert ctx.traceparent == f"00-{TRACE}-{PARENT}-{'01' if sampled else '00'}"


@pytest.mark.parametrize("header", [
    None, "", "garbage", f"00-{TRACE}-{PARENT}", f"00-{TRACE}-{PARENT}-1",
    f"00-{TRACE.upper()}-{PARENT}-01", f"00-{'0' * 32}-{PARENT}-01", f"00-{TRACE}-{'0' * 16}-01",
    f"ff-{TRACE}-{PARENT}-01", f"00-{TRACE}-{PARENT}-01-extra", f"00-{TRACE}x-{PARENT}-01",
    f"0-{TRACE}-{PARENT}-01", f"00_{TRACE}_{PARENT}_01", f"00-{TRACE}-{PARENT}-01" + "-x" * 300,
])
def test_an_invalid_traceparent_is_ignored(header: str | None) -> None:
    assert tracing.parse_traceparent(header) is None


def test_a_span_continues_its_parent_and_binds_its_ids_for_the_log_lines() -> None:
    parent = tracing.parse_traceparent(f"00-{TRACE}-{PARENT}-01")
    assert tracing.current() is None and tracing.inject({"a": "b"}) == {"a": "b"}
    with tracing.span("GET", parent, kind="server") as span:
        ctx = span.context
        assert ctx.trace_id == TRACE and ctx.span_id not in (PARENT, "0" * 16) and ctx.sampled
        assert structlog.contextvars.get_contextvars() == {"trace_id": TRACE, "span_id": ctx.span_id}
        assert tracing.current_traceparent() == f"00-{TRACE}-{ctx.span_id}-01"
        assert tracing.inject({"a": "b"}) == {"a": "b", "traceparent": ctx.traceparent}
        with tracing.delivery(ctx.traceparent, "webhook:1", {"id": "e", "type": "model.created"}, 1) as d:
            assert d.context.trace_id == TRACE and d.context.span_id != ctx.span_id
        assert tracing.current() == ctx
    assert tracing.current() is None and structlog.contextvars.get_contextvars() == {}


def test_without_a_parent_a_span_starts_a_new_trace() -> None:
    with tracing.span("GET", None) as one, tracing.span("GET", None) as two:
        assert one.context.trace_id != two.context.trace_id
        assert len(one.context.trace_id) == 32 and not one.context.sampled
    with tracing.delivery(None, "lineage:file", {}, 1) as d:  # events from before tracing
        assert tracing.parse_traceparent(d.context.traceparent) == d.context


def test_an_endpoint_without_the_packages_is_one_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "_configured", False)
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    with structlog.testing.capture_logs() as logs:
        assert tracing.configure({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}) is False
        assert tracing.configure({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}) is False
    assert [x["event"] for x in logs] == ["tracing_unavailable"]
    assert tracing._tracer is None


def test_without_an_endpoint_nothing_is_imported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "_configured", False)
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # an import would raise
    with structlog.testing.capture_logs() as logs:
        assert tracing.configure({}) is False
    assert logs == []


def test_a_lineage_event_names_the_trace_in_its_registry_facet_and_stays_valid() -> None:
    event = {"id": "1b4e28ba-2fa1-11d2-883f-0016d3cca427", "type": "model_version.stage_changed",
             "model": "fraud", "version": 2, "sequence": 5, "actor": "ci", "request_id": "r",
             "at": "2026-01-02T03:04:05.000006Z",
             "data": {"from_stage": "staging", "to_stage": "production", "trigger": "promote"}}
    traced = LineageBuilder("registry").build(event, f"00-{TRACE}-{PARENT}-01")
    assert traced is not None
    assert traced["run"]["facets"]["modelRegistry"]["traceparent"] == f"00-{TRACE}-{PARENT}-01"
    validate_run_event(traced)
    untraced = LineageBuilder("registry").build(event)
    assert untraced is not None and "traceparent" not in untraced["run"]["facets"]["modelRegistry"]
    validate_run_event(untraced)
