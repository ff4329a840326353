"""The processes under test: ``serve`` replicas (API only) and ``worker`` processes, all on one
PostgreSQL database reached through a :class:`~tests.freeze_proxy.FreezeProxy`, so one freeze
stalls every one of them. A process killed with SIGKILL is started again (a ``serve`` on a new
port); clients pick among the replicas alive at the moment.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.e2e.receivers import poll
from tests.reliability.profile import RETRY_SCHEDULE, WEBHOOK_LEASE, WEBHOOK_TIMEOUT
from tests.support import REPO, free_port, stop

# Small pools: max_connections (100) is shared with everything else on the machine, and 5
# processes x 4 stays far below it even with the checker's own connection.
PROCESS_ENV = {
    "REGISTRY_DB_POOL_SIZE": "4",
    "REGISTRY_RUN_WORKERS": "false",
    "REGISTRY_WEBHOOK_ALLOW_PRIVATE": "true",
    "REGISTRY_WEBHOOK_RETRY_SCHEDULE": RETRY_SCHEDULE,
    "REGISTRY_WEBHOOK_TIMEOUT": str(WEBHOOK_TIMEOUT),
    "REGISTRY_WEBHOOK_LEASE": str(WEBHOOK_LEASE),
    "REGISTRY_WORKER_POLL_INTERVAL": "0.2",
    "REGISTRY_LOG_FORMAT": "json",
}


@dataclass
class Proc:
    """One process: ``serve-N`` (with its URL) or ``worker-N``; restarts keep the label."""

    label: str
    process: subprocess.Popen[bytes]
    log: Path
    url: str | None = None
    started_at: float = field(default_factory=time.time)
    killed_at: float | None = None

    @property
    def alive(self) -> bool:
        return self.killed_at is None and self.process.poll() is None


class Cluster:
    def __init__(self, proxy_url: str, data_dir: Path, serves: int = 3, workers: int = 2) -> None:
        self.token = "mrt_chaos_" + secrets.token_urlsafe(24)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        self.env.update(PROCESS_ENV, REGISTRY_DATABASE_URL=proxy_url, REGISTRY_DATA_DIR=str(data_dir),
                        REGISTRY_BOOTSTRAP_TOKEN=self.token,
                        REGISTRY_SECRET_KEY="chaos-" + secrets.token_hex(24))  # shared by all
        self.data_dir = data_dir
        self.n_serves, self.n_workers = serves, workers
        self.procs: list[Proc] = []  # every process ever seen ready, the killed ones too
        self.spawned: list[Proc] = []  # every process ever started, ready or not: stop() ends them all
        self.lock = threading.Lock()

    # -- starting ---------------------------------------------------------------------------------

    def start(self) -> None:
        """Every process at once (each takes seconds to import and connect), then wait for all."""
        procs = [self._spawn_serve(f"serve-{i}") for i in range(self.n_serves)]
        procs += [self._spawn(f"worker-{i}", ["worker"]) for i in range(self.n_workers)]
        for proc in procs:
            self._wait(proc)

    def start_serve(self, label: str) -> Proc:
        return self._wait(self._spawn_serve(label))

    def start_worker(self, label: str) -> Proc:
        return self._wait(self._spawn(label, ["worker"]))

    def _spawn_serve(self, label: str) -> Proc:
        port = free_port()
        proc = self._spawn(label, ["serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"])
        proc.url = f"http://127.0.0.1:{port}"
        return proc

    def _wait(self, proc: Proc) -> Proc:
        """Until a serve answers /readyz, or a worker has logged that its loops run."""
        def up() -> bool:
            if proc.url:
                return _ready(proc.url)
            return "workers_started" in proc.log.read_text(errors="replace")

        poll(lambda: proc.process.poll() is not None or up(), 90, lambda: proc.log.read_text(errors="replace"))
        assert proc.process.poll() is None, f"{proc.label} exited:\n{proc.log.read_text(errors='replace')}"
        return self._add(proc)

    def _spawn(self, label: str, args: list[str]) -> Proc:
        with self.lock:
            n = sum(p.label == label for p in self.spawned) + 1
            log = self.data_dir / f"{label}.{n}.log"
            with log.open("wb") as out:
                process = subprocess.Popen([sys.executable, "-m", "registry", *args], cwd=REPO, env=self.env,
                                           stdout=out, stderr=subprocess.STDOUT)
            proc = Proc(label, process, log)
            self.spawned.append(proc)
        return proc

    def _add(self, proc: Proc) -> Proc:
        with self.lock:
            self.procs.append(proc)
        return proc

    # -- what clients and faults see --------------------------------------------------------------

    def live(self, kind: str) -> list[Proc]:
        with self.lock:
            return [p for p in self.procs if p.label.startswith(kind) and p.alive]

    def serve_urls(self) -> list[str]:
        return [p.url for p in self.live("serve") if p.url]

    def kill(self, proc: Proc) -> float:
        """SIGKILL: nothing is finished, released or flushed."""
        proc.killed_at = time.time()
        proc.process.send_signal(signal.SIGKILL)
        proc.process.wait(10)
        return proc.killed_at

    def restart(self, proc: Proc) -> Proc:
        return self.start_serve(proc.label) if proc.label.startswith("serve") else self.start_worker(proc.label)

    def stop(self) -> None:
        """Every process ever spawned, also one whose start failed before it was ready."""
        with self.lock:
            spawned = list(self.spawned)
        for p in spawned:
            if p.process.poll() is None:
                stop(p.process)


def _ready(url: str) -> bool:
    try:
        return httpx.get(url + "/readyz", timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False
