"""The workers: relay (outbox → deliveries), dispatcher (deliveries → HTTP or file, under a
lease) and pruner, as tasks of one event loop.

They wake when a commit in this process wrote events, on PostgreSQL also when any process did
(LISTEN/NOTIFY), and otherwise poll. The dispatcher keeps up to ``concurrency`` deliveries in
flight, so one slow receiver never holds up the others; when one finishes it claims again at once,
which is what lets a model's next ordered event follow immediately.

Stopping (SIGTERM): no new claims; deliveries in flight get a grace period to finish and be
recorded; those still sending after it are cancelled and their leases released (the attempt not
counted), so another worker, or this one's successor, sends them at once rather than after the
lease (REGISTRY_WEBHOOK_LEASE) has run out.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import structlog

from registry import metrics, tracing
from registry.bootstrap import LINEAGE_FILE, LINEAGE_HTTP, Container, WorkerLock
from registry.services import webhooks
from registry.services.ports import Actor

if TYPE_CHECKING:
    from registry.adapters.db.outbox import Job
    from registry.adapters.webhooks import Outcome

log = structlog.get_logger("registry.workers")
PRUNE_EVERY = 3600.0
LISTEN_CHECK = 15.0
RELAY_COALESCE = 0.005
RELEASE_TIMEOUT = 10.0  # giving leases back must not hold a stop up longer than this


class Workers:
    def __init__(self, container: Container) -> None:
        self.c = container
        self.settings = container.settings
        self.name = f"worker-{uuid.uuid4().hex[:8]}"
        self._relay_wake = asyncio.Event()
        self._dispatch_wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._dispatcher: asyncio.Task[None] | None = None
        self._inflight: dict[asyncio.Task[None], Job] = {}  # deliveries being sent
        self._stopping = False
        self._lock: WorkerLock | None = None

    def wake(self) -> None:
        self._relay_wake.set()

    async def start(self) -> None:
        """Start the loops. On SQLite only one process may run them: another one holding the
        database's worker lock raises WorkersAlreadyRunning."""
        if self.settings.is_sqlite:
            self._lock = self.c.worker_lock()
        self.c.uow.on_events = self.wake
        self._dispatcher = self._spawn("dispatch", self._dispatch)
        self._tasks = [self._spawn("relay", self._relay), self._dispatcher,
                       self._spawn("prune", self._prune)]
        if not self.settings.is_sqlite:
            self._tasks.append(self._spawn("listen", self._listen))
        log.info("workers_started", worker=self.name, sinks=list(self.c.outbox.sinks))

    def problem(self) -> str | None:
        """Why this process no longer works (a loop that ended; each retries its own errors, so
        that is a bug), or None: what a liveness probe asks."""
        ended = [task.get_name() for task in self._tasks if task.done()]
        if ended and not self._stopping:
            return f"worker loops ended: {', '.join(ended)}"
        return None

    async def stop(self, grace: float = 5.0) -> None:
        """Stop claiming; give deliveries in flight ``grace`` seconds to finish, then cancel the
        rest and release their leases so they are sent again at once (by any worker)."""
        self._stopping = True
        if self.c.uow.on_events == self.wake:
            self.c.uow.on_events = None
        deadline = time.monotonic() + grace
        for task in self._tasks:
            if task is not self._dispatcher:
                task.cancel()
        # A claim under way completes (its jobs join those in flight) rather than being cut
        # between its commit and its answer, which would strand the leases it took.
        self._dispatch_wake.set()
        if self._dispatcher is not None:
            await asyncio.wait([self._dispatcher], timeout=grace)
            self._dispatcher.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        abandoned: list[Job] = []
        if self._inflight:
            _, pending = await asyncio.wait(list(self._inflight),
                                            timeout=max(0.0, deadline - time.monotonic()))
            abandoned = [self._inflight[task] for task in pending]
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        await self._release(abandoned)
        if self._lock is not None:
            self._lock.release()
            self._lock = None
        log.info("workers_stopped", worker=self.name, abandoned=len(abandoned))

    async def _release(self, jobs: list[Job]) -> None:
        """Give back the leases of cancelled deliveries; if the database cannot be reached,
        they are sent again once their lease runs out, as after a crash."""
        if not jobs:
            return
        try:
            released = await asyncio.wait_for(self.c.outbox.release(jobs), RELEASE_TIMEOUT)
        except Exception as exc:
            log.warning("leases_not_released", worker=self.name, deliveries=len(jobs),
                        error=f"{type(exc).__name__}: {exc}")
            return
        log.info("leases_released", worker=self.name, deliveries=released,
                 ids=[job.delivery_id for job in jobs])

    async def run_forever(self) -> None:
        await self.start()
        try:
            await asyncio.gather(*self._tasks)
        finally:
            await self.stop()

    def _spawn(self, name: str, body: Any) -> asyncio.Task[None]:
        """One of the loops, as a task under its name (what ``problem`` reports)."""
        return asyncio.create_task(self._loop(name, body), name=name)

    async def _loop(self, name: str, body: Any) -> None:
        """Run ``body`` for ever; an error is logged and retried with a growing pause."""
        pause = 0.5
        while True:
            started = time.monotonic()
            try:
                await body()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a worker must outlive a database restart
                if self._stopping:
                    return
                if time.monotonic() - started > 60:
                    pause = 0.5  # it had been running fine: start the backoff again
                log.warning("worker_error", loop=name, error=f"{type(exc).__name__}: {exc}",
                            retry_in=pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, 30.0)

    async def _wait(self, event: asyncio.Event, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        event.clear()

    async def _relay(self) -> None:
        while True:
            self._relay_wake.clear()
            relayed, deliveries = await self.c.outbox.relay()
            if deliveries:
                self._dispatch_wake.set()
            if relayed:
                continue
            await self._wait(self._relay_wake, self.settings.poll_interval)
            # Under load, commits arrive every few milliseconds: one relay transaction for a
            # few of them costs the writers far less than one each.
            await asyncio.sleep(RELAY_COALESCE)

    async def _dispatch(self) -> None:
        hooks = self.settings.webhooks
        while not self._stopping:
            self._dispatch_wake.clear()
            free = hooks.concurrency - len(self._inflight)
            jobs = await self.c.outbox.claim(free, hooks.lease, hooks.order_hold) if free > 0 else []
            for job in jobs:
                task = asyncio.create_task(self._deliver(job))
                self._inflight[task] = job
                task.add_done_callback(self._done)
            if jobs and len(jobs) == free:
                continue
            await self._wait(self._dispatch_wake, self.settings.poll_interval)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._inflight.pop(task, None)
        self._dispatch_wake.set()

    async def _prune(self) -> None:
        while True:
            cutoff = datetime.now(UTC) - timedelta(days=self.settings.retention_days)
            deliveries, events = await self.c.outbox.prune(cutoff)
            keys = await self.c.outbox.prune_idempotency_keys(
                datetime.now(UTC) - timedelta(seconds=self.settings.idempotency_ttl))
            if deliveries or events or keys:
                log.info("pruned", deliveries=deliveries, events=events, idempotency_keys=keys)
            await asyncio.sleep(PRUNE_EVERY)

    async def _listen(self) -> None:
        from registry.adapters.db.outbox import listen

        async with listen(self.settings.database_url, self.wake,
                          self.settings.db_timeouts.connect) as conn:
            self.wake()  # events committed while nobody listened
            while True:
                await asyncio.sleep(LISTEN_CHECK)
                # A dead connection raises here; the loop reconnects (with backoff).
                await asyncio.wait_for(conn.execute("SELECT 1"), LISTEN_CHECK)

    async def _deliver(self, job: Job) -> None:
        """One attempt, as a span of the trace of the request that wrote the event: its log
        lines carry that trace's id, and the webhook or lineage POST its ``traceparent``."""
        with tracing.delivery(job.traceparent, job.target, job.event, job.attempt):
            await self._attempt(job)

    async def _attempt(self, job: Job) -> None:
        try:
            outcome = await self._send(job)
        except Exception as exc:  # a sender bug must not lose the delivery
            log.exception("delivery_error", target=job.target, event_id=job.event["id"])
            outcome = self.c.senders.failure(f"internal error: {type(exc).__name__}: {exc}")
        hooks = self.settings.webhooks
        try:
            finished = await self.c.outbox.finish(
                job, ok=outcome.ok, status=outcome.status, latency_ms=outcome.latency_ms,
                error=outcome.error, retry_after=outcome.retry_after, schedule=hooks.retry_schedule,
                disable_after=hooks.disable_after if job.subscription_id is not None else None)
        except Exception as exc:  # the lease runs out and the delivery is sent again
            log.warning("delivery_not_recorded", target=job.target, event_id=job.event["id"],
                        status=outcome.status, error=f"{type(exc).__name__}: {exc}")
            return
        metrics.delivery_recorded(job.target, finished.state, outcome.latency_ms)
        log.info("delivery_attempt", target=job.target, event_id=job.event["id"],
                 event_type=job.event["type"], attempt=job.attempt, status=outcome.status,
                 latency_ms=outcome.latency_ms, error=outcome.error, state=finished.state,
                 lease_kept=finished.applied)
        if finished.disable and job.subscription_id is not None:
            await self._disable(job, finished.disable)

    async def _disable(self, job: Job, reason: str) -> None:
        assert job.subscription_id is not None
        actor = Actor(name="worker", request_id=f"{self.name}-{job.delivery_id}-{job.attempt}")
        try:
            disabled = await webhooks.disable_webhook(job.subscription_id, reason, self.c.uow(actor))
        except Exception as exc:  # the next failure will try again
            log.warning("webhook_disable_failed", webhook=job.subscription_id,
                        error=f"{type(exc).__name__}: {exc}")
            return
        if disabled:
            log.warning("webhook_disabled", webhook=job.subscription_id, reason=reason)
            self._relay_wake.set()

    async def _send(self, job: Job) -> Outcome:
        if job.target == LINEAGE_FILE:
            assert self.c.senders.file is not None and job.lineage is not None
            return await self.c.senders.file.append(job.lineage)
        if job.target == LINEAGE_HTTP:
            assert self.c.lineage_url is not None and job.lineage is not None
            body = json.dumps(job.lineage, separators=(",", ":")).encode()
            return await self.c.senders.lineage().post(
                self.c.lineage_url, {"content-type": "application/json"}, body)
        assert job.url is not None and job.secret is not None
        signing = [self.c.cipher.decrypt(job.secret)]
        if job.previous_secret is not None:
            signing.append(self.c.cipher.decrypt(job.previous_secret))
        return await self.c.senders.webhook(job.url, job.event["id"], signing, webhook_body(job.event))


def webhook_body(event: dict[str, Any]) -> bytes:
    """Standard Webhooks' envelope; ``data`` is the event as the pull feed gives it. The same
    bytes on every attempt (the signature's timestamp is the attempt's)."""
    return json.dumps({"type": event["type"], "timestamp": event["at"], "data": event},
                      separators=(",", ":"), ensure_ascii=False).encode()
