"""Benchmark: promotions/s and production reads/s against a real `python -m registry serve`.

    .venv/bin/python -m tests.benchmarks.promotions --backend postgresql --workers 2

Prints its configuration with the numbers. Needs `wrk` (Debian package) for the load; the load
generator and PostgreSQL share the machine's two cores with the server, so the numbers are a floor
for the server alone. PostgreSQL needs REGISTRY_TEST_DATABASE_URL.
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
from sqlalchemy import func, select

from registry.adapters.db.engine import create_engine
from registry.adapters.db.tables import audit_t
from tests.support import REPO, Server, create_pg_database, drop_pg_database, run_server, sqlite_url


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


def _wrk(base_url: str, token: str, lines: list[str], connections: int, seconds: int,
         cycle: bool) -> dict[str, str]:
    """Send the lines with wrk (a C load generator: a Python client on these two cores saturates
    long before the server does); returns wrk's requests/s, the statuses and the latencies."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(lines) + "\n")
    threads = min(2, connections)
    env = {**os.environ, "BENCH_PATHS": f.name, "BENCH_TOKEN": token, "BENCH_THREADS": str(threads),
           "BENCH_CYCLE": "1" if cycle else "0"}
    out = subprocess.run(["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s",
                          "-s", str(Path(__file__).with_name("paths.lua")), base_url],
                         env=env, capture_output=True, text=True, check=True).stdout
    os.unlink(f.name)
    return {"rate": out.split("Requests/sec:")[1].split()[0],
            "statuses": out.split("statuses:")[1].splitlines()[0].strip(),
            "latency": out.split("latency_ms:")[1].splitlines()[0].strip()}


async def _promotion_rate(database_url: str, names: list[str]) -> tuple[int, float]:
    """Promotions committed and their rate, from the audit timestamps (wrk's own clock runs on
    to its full duration after the list is done)."""
    engine = create_engine(database_url, null_pool=True)
    try:
        async with engine.connect() as conn:
            row = (await conn.execute(
                select(func.count(), func.min(audit_t.c.at), func.max(audit_t.c.at))
                .where(audit_t.c.model.in_(names), audit_t.c.action == "model_version.stage_changed",
                       audit_t.c.canonical.like('%"trigger":"promote"%'))
            )).one()
    finally:
        await engine.dispose()
    count, first, last = row
    return count, count / max((last - first).total_seconds(), 1e-9)


async def bench(server: Server, args: argparse.Namespace) -> None:
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    async with httpx.AsyncClient(base_url=server.api, headers=server.headers, limits=limits,
                                 timeout=60) as client:
        names = await _prepare(client, args.models, args.versions, str(int(time.time())))
    # Each model's staging versions are promoted in turn; each promotion archives the one before.
    promotions = [f'POST /api/v1/models/{n}/versions/{v}/transitions {{"to_stage":"production"}}'
                  for v in range(1, args.versions + 1) for n in names]
    out = _wrk(server.url, server.token, promotions, args.concurrency, args.seconds, cycle=False)
    count, rate = await _promotion_rate(server.database_url, names)
    print(f"promotions: {count} committed at {rate:.0f}/s (audit timestamps)  "
          f"statuses {out['statuses']}  latency {out['latency']}")
    reads = [f"GET /api/v1/models/{n}/stages/production" for n in names]
    out = _wrk(server.url, server.token, reads, args.concurrency, args.seconds, cycle=True)
    print(f"production reads: {out['rate']}/s over {args.seconds}s  statuses {out['statuses']}  "
          f"latency {out['latency']}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--backend", choices=["sqlite", "postgresql"], default="postgresql")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--models", type=int, default=50)
    p.add_argument("--versions", type=int, default=40, help="staging versions per model to promote")
    p.add_argument("--seconds", type=int, default=15, help="wrk duration of each phase")
    p.add_argument("--run-workers", choices=["true", "false"], default="true",
                   help="REGISTRY_RUN_WORKERS: relay and dispatcher inside each server process")
    args = p.parse_args()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    print(f"commit={commit} backend={args.backend} server=uvicorn workers={args.workers} "
          f"load=wrk connections={args.concurrency} models={args.models} "
          f"versions/model={args.versions} run_workers={args.run_workers} cpus={os.cpu_count()}")
    with tempfile.TemporaryDirectory() as tmp:
        url = sqlite_url(Path(tmp)) if args.backend == "sqlite" else asyncio.run(create_pg_database())
        try:
            with run_server(url, Path(tmp), workers=args.workers,
                            extra_env={"REGISTRY_RUN_WORKERS": args.run_workers}) as server:
                asyncio.run(bench(server, args))
        finally:
            if args.backend == "postgresql":
                asyncio.run(drop_pg_database(url))


if __name__ == "__main__":
    main()
