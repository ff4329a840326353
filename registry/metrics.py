"""Prometheus metrics: what each process counts, and the text a scrape gets.

Counters and histograms are counted where things happen: requests at the ASGI edge
(``registry.api.middleware``), committed stage changes and approval decisions in the unit of work
(after the commit, so a rolled-back move never counts), gate refusals where the unit of work sees
the refusal leave the use case, deliveries where the worker records an attempt; the database
pools' connections in use and waiters are published once a second and at each scrape. The
outbox backlog is read from the database at scrape time, so every process, and every replica,
reports the same truth.

With ``serve --workers N`` each server process writes its values to files in
``PROMETHEUS_MULTIPROC_DIR`` (set by ``serve`` before the processes start) and a scrape, whichever
process answers it, adds them up; ``prometheus_client`` reads that variable when it is first
imported, which is why nothing here may be imported by the parent before it is set.
"""

from __future__ import annotations

import asyncio
import hmac
import os
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    multiprocess,
)
from prometheus_client.core import GaugeMetricFamily

if TYPE_CHECKING:
    from registry.domain.events import Change

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
disable_created_metrics()  # a `_created` series per labelled counter doubles the scrape for nothing
# The text format every Prometheus reads (what generate_latest writes); Litestar adds the charset.
MEDIA_TYPE = "text/plain; version=0.0.4"
CONTENT_TYPE = MEDIA_TYPE + "; charset=utf-8"
# Seconds: a cached read answers in about a millisecond, a promotion in a few, a webhook in up
# to the delivery timeout (15 s by default).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

REQUESTS = Counter("registry_http_requests", "HTTP requests answered, by route template and status",
                   ["method", "route", "status"])
REQUEST_SECONDS = Histogram("registry_http_request_duration_seconds",
                            "Time from a request's arrival to the end of its answer",
                            ["method", "route"], buckets=LATENCY_BUCKETS)
TRANSITIONS = Counter("registry_transitions", "Committed stage changes, by from and to stage and trigger",
                      ["from_stage", "to_stage", "trigger"])
GATE_REFUSALS = Counter("registry_gate_refusals", "Moves refused by gates, once per failing gate",
                        ["gate"])
APPROVALS = Counter("registry_approval_decisions",
                    "Committed decisions on transition requests (approved, rejected, cancelled)",
                    ["decision"])
DELIVERIES = Counter("registry_deliveries",
                     "Delivery attempts recorded, by sink (webhook, lineage) and outcome "
                     "(delivered, retrying, failed)", ["sink", "outcome"])
DELIVERY_SECONDS = Histogram("registry_delivery_duration_seconds",
                             "One delivery attempt, connect to last byte", ["sink"],
                             buckets=LATENCY_BUCKETS)
POOL_IN_USE = Gauge("registry_db_pool_connections_in_use", "Database connections checked out of the pools",
                    multiprocess_mode="livesum")
POOL_WAITING = Gauge("registry_db_pool_waiting", "Units of work waiting for a database connection",
                     multiprocess_mode="livesum")
POOL_SIZE = Gauge("registry_db_pool_size", "Database connections the pools may hold (PostgreSQL)",
                  multiprocess_mode="livesum")

class PoolWatch:
    """The pools of this process and the units of work waiting on them, counted in plain Python
    (two integer updates per unit of work) and written to the gauges by ``publish`` once a second
    and at each scrape: a gauge write under ``--workers N`` is a locked write to a shared file,
    which on every checkout cost more than the checkout itself."""

    def __init__(self) -> None:
        self.waiting = 0
        self._pools: weakref.WeakSet[Any] = weakref.WeakSet()

    def watch(self, pool: Any) -> None:
        if hasattr(pool, "checkedout"):  # NullPool keeps nothing
            self._pools.add(pool)

    def publish(self) -> None:
        POOL_IN_USE.set(sum(pool.checkedout() for pool in list(self._pools)))
        POOL_WAITING.set(self.waiting)


POOL = PoolWatch()
watch_pool = POOL.watch
PUBLISH_EVERY = 1.0


async def publish_forever() -> None:
    """Under ``--workers N`` another process may answer the scrape: keep this one's gauges fresh."""
    while True:
        POOL.publish()
        await asyncio.sleep(PUBLISH_EVERY)


_DECISIONS = {"transition_request.approved": "approved", "transition_request.rejected": "rejected",
              "transition_request.cancelled": "cancelled"}


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def request_answered(method: str, route: str | None, status: int, seconds: float) -> None:
    """One HTTP request, by Litestar's route template (``/api/v1/models/{name}``): never by
    path, so the number of series is bounded by the code, not by the callers; a path no route
    serves is ``unmatched``, a method no route knows ``other``."""
    method = method if method in _METHODS else "other"
    REQUESTS.labels(method, route or "unmatched", str(status)).inc()
    REQUEST_SECONDS.labels(method, route or "unmatched").observe(seconds)


def changes_committed(changes: Iterable[Change]) -> None:
    """Count what a committed unit of work changed."""
    for change in changes:
        if change.type == "model_version.stage_changed":
            TRANSITIONS.labels(getattr(change, "from_stage", ""), getattr(change, "to_stage", ""),
                               getattr(change, "trigger", "")).inc()
        elif change.type in _DECISIONS:
            APPROVALS.labels(_DECISIONS[change.type]).inc()


def gates_refused(gates: Sequence[str]) -> None:
    for gate in gates:
        GATE_REFUSALS.labels(gate).inc()


def sink_of(target: str) -> str:
    """``webhook:<id>`` is a webhook; ``lineage:http|file`` is lineage. Never one label per
    subscription: their number is the operator's, not bounded by the code."""
    return "webhook" if target.startswith("webhook:") else "lineage"


def delivery_recorded(target: str, state: str, latency_ms: float) -> None:
    """One attempt, as recorded: ``delivered``, ``pending`` (to be retried) or ``failed``."""
    sink = sink_of(target)
    DELIVERIES.labels(sink, "retrying" if state == "pending" else state).inc()
    DELIVERY_SECONDS.labels(sink).observe(latency_ms / 1000)


def backlog_families(backlog: dict[str, Any] | None) -> list[GaugeMetricFamily]:
    """The outbox backlog as read at scrape time; ``registry_outbox_up`` 0 when it could not be."""
    up = GaugeMetricFamily("registry_outbox_up", "Whether this scrape could read the outbox backlog")
    up.add_metric([], 0 if backlog is None else 1)
    if backlog is None:
        return [up]
    pending = GaugeMetricFamily(
        "registry_outbox_backlog", "Events not yet relayed, deliveries not yet delivered, and "
        "deliveries held by a paused or disabled subscription", labels=["kind"])
    pending.add_metric(["events"], backlog["events"])
    pending.add_metric(["deliveries"], backlog["deliveries"])
    pending.add_metric(["held"], backlog["held"])
    oldest = GaugeMetricFamily("registry_outbox_oldest_undelivered_age_seconds",
                               "Age of the oldest event not yet relayed or delivered, held "
                               "deliveries left out (0 when none)")
    oldest.add_metric([], backlog["oldest_age"])
    failed = GaugeMetricFamily("registry_outbox_failed_deliveries",
                               "Deliveries that exhausted their retries (recover or redeliver them)")
    failed.add_metric([], backlog["failed"])
    return [up, pending, oldest, failed]


class _Families:
    def __init__(self, families: list[GaugeMetricFamily]) -> None:
        self.families = families

    def collect(self) -> list[GaugeMetricFamily]:
        return self.families


def render(backlog: dict[str, Any] | None) -> bytes:
    """The exposition text: this process's (or, under ``--workers N``, every server process's)
    counters, then the backlog read for this scrape."""
    POOL.publish()
    if folder := os.environ.get(MULTIPROC_ENV):
        _ensure_folder(folder)
        forget_dead_processes(folder)
        counted = CollectorRegistry()
        multiprocess.MultiProcessCollector(counted)
    else:
        counted = REGISTRY
    scrape = CollectorRegistry()
    scrape.register(_Families(backlog_families(backlog)))  # type: ignore[arg-type]
    return generate_latest(counted) + generate_latest(scrape)


def _ensure_folder(folder: str) -> None:
    """The multiprocess folder is gone (a /tmp cleaner, an operator): made again, so the scrape
    still answers (the backlog, and every series counted from now on). What the server processes
    counted before is lost with the files until they restart: said once per loss, as an error."""
    if os.path.isdir(folder):
        return
    os.makedirs(folder, exist_ok=True)
    import structlog

    structlog.get_logger("registry.metrics").error(
        "metrics_folder_lost", folder=folder,
        detail="the counts made before are lost until the server restarts; keep "
               "PROMETHEUS_MULTIPROC_DIR out of reach of temporary-file cleaners")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's: alive
        pass
    return True


def forget_dead_processes(folder: str) -> list[int]:
    """Drop the live gauges (pool in use, waiting, size) of server processes that are gone. A
    process killed, or hung and killed by uvicorn's supervisor (which starts another in its
    place), never says it exited, and its last values would stay in the sums for good. Its
    counters stay: what it counted happened. Returns the processes forgotten."""
    gone = set()
    for path in Path(folder).glob("gauge_live*_*.db"):
        pid = path.stem.rpartition("_")[2]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            gone.add(int(pid))
    for pid in gone:
        multiprocess.mark_process_dead(pid, folder)
    return sorted(gone)


def authorized(expected: str | None, authorization: str | None) -> bool:
    """With ``REGISTRY_METRICS_TOKEN`` set, a scrape must send it as a bearer token."""
    if expected is None:
        return True
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode())


def process_exited() -> None:
    """Under ``--workers N``: drop this process's live gauges (pool in use) from the sums."""
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(os.getpid())
