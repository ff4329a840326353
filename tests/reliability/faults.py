"""Injects the profile's faults on schedule while the clients run, and logs each with its
times (wall clock), so the checks can tell an expected failure from a violation."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from tests.e2e.receivers import Endpoint, Receiver, Reply
from tests.freeze_proxy import FreezeProxy
from tests.reliability.cluster import Cluster, Proc
from tests.reliability.fault_receiver import FaultReceiver
from tests.reliability.profile import Fault, Profile


@dataclass
class Injected:
    kind: str
    start: float
    end: float
    target: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Faults:
    def __init__(self, profile: Profile, cluster: Cluster, proxy: FreezeProxy, good: Receiver,
                 faulty: FaultReceiver, flaky: Endpoint, gone: Endpoint, seed: int) -> None:
        self.profile, self.cluster, self.proxy = profile, cluster, proxy
        self.good, self.faulty, self.flaky, self.gone = good, faulty, flaky, gone
        self.rng = random.Random(seed)
        self.log: list[Injected] = []
        self._restarts: list[asyncio.Task[Proc]] = []

    async def run(self, t0: float) -> None:
        """Every fault at its time; returns when the last has ended and killed processes are back."""
        pending = [asyncio.create_task(self._at(t0, f)) for f in self.profile.faults]
        try:
            await asyncio.gather(*pending)
            await asyncio.gather(*self._restarts)
        finally:
            self.heal()

    def heal(self) -> None:
        """Everything back to normal (after the run, or when it failed half-way)."""
        self.proxy.release()
        self.faulty.up()
        self.faulty.set_mode(self.flaky, "ok")

    async def _at(self, t0: float, fault: Fault) -> None:
        await asyncio.sleep(max(0.0, t0 + fault.at - time.time()))
        if fault.kind == "stall":
            await self._stall(fault.duration)
        elif fault.kind == "kill_serve":
            await self._kill(self.rng.choice(self.cluster.live("serve")), {})
        elif fault.kind == "kill_worker":
            await self._kill_worker()
        elif fault.mode == "gone410":
            self.gone.answer(then=Reply(410))
            self.log.append(Injected("receiver:gone410", time.time(), time.time(), self.gone.name))
        else:
            await self._receiver(fault)

    async def _stall(self, seconds: float) -> None:
        self.proxy.freeze()
        start = time.time()
        try:
            await asyncio.sleep(seconds)
        finally:
            self.proxy.release()
        self.log.append(Injected("stall", start, time.time(), "database", {"seconds": seconds}))

    async def _kill_worker(self) -> None:
        """Kill a worker while a delivery is in flight (waiting up to 3 s for one)."""
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and not (self.good.in_flight or self.faulty.in_flight):
            await asyncio.sleep(0.02)
        in_flight = len(self.good.in_flight) + len(self.faulty.in_flight)
        await self._kill(self.rng.choice(self.cluster.live("worker")), {"deliveries_in_flight": in_flight})

    async def _kill(self, proc: Proc, detail: dict[str, Any]) -> None:
        at = await asyncio.to_thread(self.cluster.kill, proc)
        self.log.append(Injected(f"kill_{proc.label.split('-')[0]}", at, at, proc.url or proc.label,
                                 {**detail, "label": proc.label}))
        self._restarts.append(asyncio.create_task(self._restart(proc)))

    async def _restart(self, proc: Proc) -> Proc:
        await asyncio.sleep(0.5)
        started = time.time()
        new = await asyncio.to_thread(self.cluster.restart, proc)
        self.log.append(Injected(f"restart_{proc.label.split('-')[0]}", started, time.time(),
                                 new.url or new.label, {"label": new.label}))
        return new

    async def _receiver(self, fault: Fault) -> None:
        start = time.time()
        if fault.mode == "down":
            await asyncio.to_thread(self.faulty.down)
        else:
            self.faulty.set_mode(self.flaky, fault.mode)
        try:
            await asyncio.sleep(fault.duration)
        finally:
            if fault.mode == "down":
                await asyncio.to_thread(self.faulty.up)
            else:
                self.faulty.set_mode(self.flaky, "ok")
        self.log.append(Injected(f"receiver:{fault.mode}", start, time.time(), self.flaky.name))
