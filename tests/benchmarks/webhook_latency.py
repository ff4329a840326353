"""Benchmark: commit-to-receipt latency of webhooks under a steady load of transitions.

    .venv/bin/python -m tests.benchmarks.webhook_latency --backend postgresql --workers 2 --rate 20

A real `python -m registry serve` (workers in-process) and a receiver on loopback that verifies
each signature (standardwebhooks) and notes when the request arrived. A paced client registers a
version and moves it to staging, ``--rate`` times a second for ``--seconds``; the stage changes'
events are timed. Latency is the receipt time minus
the event's ``at``: the unit of work's timestamp, taken just before its commit (same clock, same
machine), so it slightly over-states commit-to-receipt. Prints the configuration with the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import tempfile
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from standardwebhooks.webhooks import Webhook

from tests.support import REPO, Server, create_pg_database, drop_pg_database, run_server, sqlite_url


class Receiver:
    def __init__(self) -> None:
        self.secret: str | None = None
        self.received: dict[str, tuple[float, dict]] = {}
        self.bad = 0
        self.duplicates = 0
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                now = time.time()
                try:
                    Webhook(outer.secret).verify(body, dict(self.headers.items()))
                except Exception:  # noqa: BLE001 - counted, reported
                    with outer.lock:
                        outer.bad += 1
                else:
                    with outer.lock:
                        if self.headers["webhook-id"] in outer.received:
                            outer.duplicates += 1
                        outer.received.setdefault(self.headers["webhook-id"], (now, json.loads(body)))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def _at(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


async def bench(server: Server, receiver: Receiver, args: argparse.Namespace) -> None:
    async with httpx.AsyncClient(base_url=server.api, headers=server.headers, timeout=30) as client:
        r = await client.post("/webhooks", json={"url": receiver.url, "event_types": ["*"]})
        r.raise_for_status()
        receiver.secret = r.json()["secret"]
        names = [f"lat-{int(time.time())}-{i}" for i in range(args.models)]
        for n in names:
            (await client.post("/models", json={"name": n})).raise_for_status()
        started = time.monotonic()
        sent = 0
        total = int(args.rate * args.seconds)
        pending: set[asyncio.Task[None]] = set()

        async def change(i: int) -> None:
            """One transition, of a version registered just before (its event is not timed)."""
            name = names[i % len(names)]
            r = await client.post(f"/models/{name}/versions", json={"source": "s3://bench/m"})
            r.raise_for_status()
            r = await client.post(f"/models/{name}/versions/{r.json()['version']}/transitions",
                                  json={"to_stage": "staging"})
            r.raise_for_status()

        while sent < total:
            due = started + sent / args.rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            task = asyncio.create_task(change(sent))
            pending.add(task)
            task.add_done_callback(pending.discard)
            sent += 1
        await asyncio.gather(*pending)
        elapsed = time.monotonic() - started
        expected = args.models + 2 * total  # model.created, model_version.created, stage_changed
        deadline = time.monotonic() + 60
        while len(receiver.received) < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
    latencies = [(t - _at(body["data"]["at"])) * 1000 for t, body in receiver.received.values()
                 if body["type"] == "model_version.stage_changed"]
    print(f"load: {total} transitions (each after a registration) in {elapsed:.1f}s "
          f"({total / elapsed:.1f} transitions/s offered), "
          f"{len(receiver.received)}/{expected} events received, {receiver.duplicates} duplicates, "
          f"{receiver.bad} bad signatures")
    if latencies:
        print(f"commit-to-receipt ms: p50 {_pct(latencies, 50):.1f}  p90 {_pct(latencies, 90):.1f}  "
              f"p99 {_pct(latencies, 99):.1f}  max {max(latencies):.1f}  "
              f"mean {statistics.fmean(latencies):.1f}  (n={len(latencies)})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", choices=["sqlite", "postgresql"], default="postgresql")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--rate", type=float, default=20.0, help="transitions per second")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--models", type=int, default=5)
    args = p.parse_args()
    if args.backend == "sqlite":
        args.workers = 1
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    print(f"commit={commit} backend={args.backend} server=uvicorn workers={args.workers} "
          f"(each runs relay+dispatcher) rate={args.rate}/s seconds={args.seconds} "
          f"models={args.models} subscribers=1 cpus={os.cpu_count()}")
    receiver = Receiver()
    with tempfile.TemporaryDirectory() as tmp:
        url = sqlite_url(Path(tmp)) if args.backend == "sqlite" else asyncio.run(create_pg_database())
        try:
            with run_server(url, Path(tmp), workers=args.workers,
                            extra_env={"REGISTRY_WEBHOOK_ALLOW_PRIVATE": "true"}) as server:
                asyncio.run(bench(server, receiver, args))
        finally:
            if args.backend == "postgresql":
                asyncio.run(drop_pg_database(url))
    receiver.server.shutdown()


if __name__ == "__main__":
    main()
