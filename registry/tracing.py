"""W3C Trace Context through requests, events and deliveries; OpenTelemetry export when asked.

A request's ``traceparent`` header (``00-<trace id>-<parent id>-<flags>``) makes the request a
span of the caller's trace; a missing or malformed one starts a new trace. The current span is a
context variable: its ids are bound into every log line (``trace_id``, ``span_id``), the unit of
work stores its ``traceparent`` with each outbox event, and the worker that later delivers the
event (perhaps in another process) opens a child span of it, whose ``traceparent`` goes out with
the webhook and is named in the lineage event.

OpenTelemetry is optional (the ``otel`` extra). With the standard ``OTEL_EXPORTER_OTLP_ENDPOINT``
set and the packages installed, each request and each delivery is also exported as a span (OTLP
over HTTP, batched); with the variable set and the packages missing, one warning; without it,
nothing is imported.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import structlog

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$")
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16
log = structlog.get_logger("registry.tracing")


@dataclass(frozen=True, slots=True)
class TraceContext:
    trace_id: str  # 32 lower-case hex digits, not all zero
    span_id: str  # 16 lower-case hex digits, not all zero
    sampled: bool = False

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"

    def child(self) -> TraceContext:
        """A new span of the same trace."""
        return TraceContext(self.trace_id, _random_span_id(), self.sampled)


def parse_traceparent(value: str | None) -> TraceContext | None:
    """The context a ``traceparent`` header carries, or None when it is absent or invalid (so a
    new trace starts). Versions after 00 may append fields (W3C: parse what 00 defines); version
    ff, upper-case hex and all-zero ids are invalid."""
    if not value or len(value) > 512:
        return None
    match = _TRACEPARENT.match(value.strip())
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return TraceContext(trace_id, span_id, bool(int(flags, 16) & 1))


def new_trace(sampled: bool = False) -> TraceContext:
    trace_id = _ZERO_TRACE
    while trace_id == _ZERO_TRACE:
        trace_id = secrets.token_hex(16)
    return TraceContext(trace_id, _random_span_id(), sampled)


def _random_span_id() -> str:
    span_id = _ZERO_SPAN
    while span_id == _ZERO_SPAN:
        span_id = secrets.token_hex(8)
    return span_id


_current: ContextVar[TraceContext | None] = ContextVar("registry_trace", default=None)


def current() -> TraceContext | None:
    return _current.get()


def enter(ctx: TraceContext) -> Any:
    """Make ``ctx`` the current span (for ``leave``); ``span`` does this and more."""
    return _current.set(ctx)


def leave(token: Any) -> None:
    _current.reset(token)


def exporting() -> bool:
    """Whether spans are exported (OpenTelemetry configured): else only the ids travel."""
    return _tracer is not None


def current_traceparent() -> str | None:
    """What the unit of work stores with the events it writes (None outside any span)."""
    ctx = _current.get()
    return None if ctx is None else ctx.traceparent


def inject(headers: Mapping[str, str]) -> dict[str, str]:
    """``headers`` plus the current span's ``traceparent`` (for a request sent inside it)."""
    ctx = _current.get()
    return dict(headers) if ctx is None else {**headers, "traceparent": ctx.traceparent}


def note(attributes: Mapping[str, Any], error: str | None = None) -> None:
    """Add to the current exported span (nothing when not exporting): what an adapter learnt
    inside a span that its caller opened."""
    if _tracer is None:
        return
    from opentelemetry import trace

    current_span = trace.get_current_span()
    current_span.set_attributes(_attributes(attributes))
    if error is not None:
        current_span.set_status(trace.Status(trace.StatusCode.ERROR, error))


# -- spans ------------------------------------------------------------------------------------------

class Span:
    """The span a block runs in: our context always, an OpenTelemetry span when exporting."""

    def __init__(self, context: TraceContext, otel: Any = None) -> None:
        self.context = context
        self._otel = otel

    def set(self, attributes: Mapping[str, Any]) -> None:
        if self._otel is not None:
            self._otel.set_attributes(_attributes(attributes))

    def rename(self, name: str) -> None:
        if self._otel is not None:
            self._otel.update_name(name)

    def fail(self, description: str) -> None:
        if self._otel is not None:
            from opentelemetry import trace

            self._otel.set_status(trace.Status(trace.StatusCode.ERROR, description))


@contextmanager
def span(name: str, parent: TraceContext | None, *, kind: str = "internal",
         attributes: Mapping[str, Any] | None = None) -> Iterator[Span]:
    """Run a block as a span, child of ``parent`` (or of a new trace), with its ids bound into
    the log lines written inside it. ``kind``: "server", "client" or "internal"."""
    tracer = _tracer
    if tracer is None:
        ctx = parent.child() if parent is not None else new_trace()
        with _bound(ctx):
            yield Span(ctx)
        return
    from opentelemetry import trace
    from opentelemetry.context import Context

    otel_parent = Context() if parent is None else trace.set_span_in_context(trace.NonRecordingSpan(
        trace.SpanContext(int(parent.trace_id, 16), int(parent.span_id, 16), is_remote=True,
                          trace_flags=trace.TraceFlags(1 if parent.sampled else 0))))
    with tracer.start_as_current_span(name, context=otel_parent, kind=getattr(trace.SpanKind, kind.upper()),
                                      attributes=_attributes(attributes or {})) as otel_span:
        sc = otel_span.get_span_context()
        ctx = TraceContext(f"{sc.trace_id:032x}", f"{sc.span_id:016x}", sc.trace_flags.sampled)
        with _bound(ctx):
            yield Span(ctx, otel_span)


def _attributes(attributes: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in attributes.items() if v is not None}  # OpenTelemetry refuses None


@contextmanager
def _bound(ctx: TraceContext) -> Iterator[None]:
    token = _current.set(ctx)
    with structlog.contextvars.bound_contextvars(trace_id=ctx.trace_id, span_id=ctx.span_id):
        try:
            yield
        finally:
            _current.reset(token)


@contextmanager
def delivery(traceparent: str | None, target: str, event: Mapping[str, Any], attempt: int) -> Iterator[Span]:
    """One attempt to deliver an outbox event: a client span, child of the span of the request
    that wrote the event (its stored ``traceparent``), so the webhook joins the caller's trace."""
    with span(f"deliver {event.get('type')}", parse_traceparent(traceparent), kind="client",
              attributes={"registry.delivery.target": target, "registry.event.id": event.get("id"),
                          "registry.event.type": event.get("type"),
                          "registry.delivery.attempt": attempt}) as s:
        yield s


# -- OpenTelemetry export ---------------------------------------------------------------------------

_tracer: Any = None
_provider: Any = None
_configured = False


def configure(environ: Mapping[str, str] | None = None) -> bool:
    """Export spans over OTLP/HTTP when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or its traces-only
    variant) is set; the exporter reads the other standard ``OTEL_*`` variables itself. Once per
    process; returns whether spans are exported."""
    global _tracer, _provider, _configured
    if _configured:
        return _tracer is not None
    _configured = True
    env = os.environ if environ is None else environ
    if not (env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")):
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        log.warning("tracing_unavailable", reason=f"{exc}",
                    detail="OTEL_EXPORTER_OTLP_ENDPOINT is set but the OpenTelemetry packages are "
                           "not installed (pip install 'model-registry[otel]'); no spans are exported")
        return False
    import registry

    resource = Resource.create({"service.version": registry.__version__})
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        # neither OTEL_SERVICE_NAME nor OTEL_RESOURCE_ATTRIBUTES named it
        resource = resource.merge(Resource({"service.name": "model-registry"}))
    _provider = TracerProvider(resource=resource)
    _provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    _tracer = _provider.get_tracer("registry")
    return True


def shutdown() -> None:
    """Send the spans still batched (the provider also does at interpreter exit, but uvicorn's
    worker processes end without running exit handlers)."""
    if _provider is not None:
        _provider.force_flush(timeout_millis=5000)
