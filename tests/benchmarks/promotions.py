"""Benchmark: promotions/s and production reads/s against a real `python -m registry serve`.

    .venv/bin/python -m tests.benchmarks.promotions --backend postgresql --workers 2

Prints its configuration with the numbers. The load generator shares the machine with the server,
so the numbers are a floor for the server alone. PostgreSQL needs REGISTRY_TEST_DATABASE_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import tempfile
import time
from pathlib import Path

import httpx

from tests.support import REPO, create_pg_database, drop_pg_database, run_server, sqlite_url


async def _prepare(client: httpx.AsyncClient, models: int, per_model: int, run: str) -> list[str]:
    names = [f"bench-{run}-{i}" for i in range(models)]

    async def one(name: str) -> None:
        (await client.post("/models", json={"name": name})).raise_for_status()
        for _ in range(per_model):
            r = await client.post(f"/models/{name}/versions", json={"source": "s3://bench/m"})
            r.raise_for_status()
            v = r.json()["version"]
            (await client.post(f"/models/{name}/versions/{v}/transitions",
                               json={"to_stage": "staging"})).raise_for_status()

    await asyncio.gather(*(one(n) for n in names))
    return names


async def _drive(client: httpx.AsyncClient, jobs: list[tuple[str, str, dict | None]],
                 concurrency: int) -> tuple[float, dict[int, int]]:
    queue: asyncio.Queue[tuple[str, str, dict | None]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)
    statuses: dict[int, int] = {}

    async def worker() -> None:
        while not queue.empty():
            method, url, body = queue.get_nowait()
            r = await client.request(method, url, json=body)
            statuses[r.status_code] = statuses.get(r.status_code, 0) + 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started, statuses


async def bench(api: str, headers: dict[str, str], args: argparse.Namespace) -> None:
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=api, headers=headers, limits=limits, timeout=60) as client:
        names = await _prepare(client, args.models, args.versions, str(int(time.time())))
        # Each model's versions are promoted in turn: each promotion archives the previous one.
        jobs = [("POST", f"/models/{n}/versions/{v}/transitions", {"to_stage": "production"})
                for v in range(1, args.versions + 1) for n in names]
        seconds, statuses = await _drive(client, jobs, args.concurrency)
        print(f"promotions: {len(jobs)} in {seconds:.2f}s = {len(jobs) / seconds:.0f}/s  statuses={statuses}")
        reads = [("GET", f"/models/{names[i % len(names)]}/stages/production", None)
                 for i in range(args.reads)]
        seconds, statuses = await _drive(client, reads, args.concurrency)
        print(f"production reads: {len(reads)} in {seconds:.2f}s = {len(reads) / seconds:.0f}/s  statuses={statuses}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", choices=["sqlite", "postgresql"], default="postgresql")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--models", type=int, default=50)
    p.add_argument("--versions", type=int, default=40, help="staging versions per model to promote")
    p.add_argument("--reads", type=int, default=20000)
    args = p.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    print(f"commit={commit} backend={args.backend} server=uvicorn workers={args.workers} "
          f"client=httpx concurrency={args.concurrency} models={args.models} "
          f"versions/model={args.versions} cpus={os.cpu_count()}")
    with tempfile.TemporaryDirectory() as tmp:
        url = sqlite_url(Path(tmp)) if args.backend == "sqlite" else asyncio.run(create_pg_database())
        try:
            with run_server(url, Path(tmp), workers=args.workers) as server:
                asyncio.run(bench(server.api, server.headers, args))
        finally:
            if args.backend == "postgresql":
                asyncio.run(drop_pg_database(url))


if __name__ == "__main__":
    main()
