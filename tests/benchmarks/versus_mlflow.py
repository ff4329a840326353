"""Benchmark: this registry against MLflow's model registry on one PostgreSQL, and pgbench running
the bare promotion transaction.

    .venv/bin/python -m tests.benchmarks.versus_mlflow --seconds 10

Needs REGISTRY_TEST_DATABASE_URL (a postgresql+asyncpg URL of a role with CREATEDB), `wrk` and
`pgbench` (Debian packages). Makes three databases beside it (registry, MLflow, pgbench) and drops
them at the end. MLflow lives in a virtual environment of its own, made once and kept
(~/.cache/registry-bench/mlflow-venv, or --mlflow-venv); it is never a project dependency.

Method. Each side runs alone on the machine, one after the other: pgbench, then this registry
(`python -m registry serve` exactly as a user starts it: auth, audit, outbox, in-process workers),
then `mlflow server` (its default job runner included), each once its processes are idle. The
load is wrk (C) with versus.lua, the same request lists for both servers, each server speaking its
own API, on 50 models (--models):

- register: POST a new version, models in turn, cycling (never runs out).
- promote: staging -> production, the incumbent archived (MLflow: transition-stage with
  archive_existing_versions). Every model gets a production version before the timed runs, so each
  promotion archives one. Each timed run gets the versions then in staging (read from the
  server's database), in version-major order (models in turn), each promoted once, never repeated.
  Before it, untimed, enough versions are put in staging for 1.5 x the best transition rate seen
  so far on that server (the register scenario's versions first, then new ones); what a run leaves
  is promoted by the next. If a list runs out all the same, wrk is stopped at once (the table marks
  the rate with "*"): the rate stays right, over a shorter window.
- read: the production version, cycling: ours GET .../stages/production; MLflow GET
  registered-models/get-latest-versions?stages=Production (its stage API, the closest to ours).
- mix: of every five requests, four reads as above and one registration, cycling.

Rates are 2xx responses / the window from the first request to the last response (versus.lua),
for both servers alike; wrk's own "Requests/sec" divides by its -d even after a list ran out.
Latencies are wrk's (all responses). Promotions are also counted in the database (versions that
left staging), which also counts those still in flight when wrk stopped. Our server time per
request comes from its JSON access log (duration_ms); MLflow writes no access log by default.

pgbench runs versus_pgbench_promote.sql (lock the model, archive the incumbent, promote the other
of the model's two versions, an audit row, an outbox row; prepared statements) on tables shaped
like ours (versus_pgbench_schema.sql), at 1 and 8 clients.

Afterwards: exactly one production version per model and dense version numbers in our database,
the same counts for MLflow (informational), and a race: 32 concurrent promotions of one model.
Servers, PostgreSQL and wrk share the machine's cores, so every number is a floor; trust ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx
from sqlalchemy import text
from sqlalchemy.engine import make_url

from registry.adapters.db.engine import create_engine
from tests.support import (
    PG_ENV,
    REPO,
    create_pg_database,
    drop_pg_database,
    end_group,
    free_port,
    run_server,
    sqlite_url,
)

HERE = Path(__file__).parent
LUA = HERE / "versus.lua"
SCENARIOS = ("promote", "read", "register", "mix")
SOURCE = "s3://bench/model"
MLFLOW_VERSION = "3.17.2"
DEFAULT_VENV = Path.home() / ".cache" / "registry-bench" / "mlflow-venv"
RACE = 32  # concurrent promotions of one model in the race check


# -- the two APIs ------------------------------------------------------------------------------------

class OursApi:
    """Request lines ("METHOD PATH [BODY]") for this registry, and its versions' rows in SQL."""

    label = "ours"
    idle = "/healthz"
    rows_sql = ("SELECT m.name, v.version, v.stage FROM model_versions v "
                "JOIN registered_models m ON m.id = v.model_id")

    def create(self, m: str) -> str:
        return f'POST /api/v1/models {{"name":"{m}"}}'

    def register(self, m: str) -> str:
        return f'POST /api/v1/models/{m}/versions {{"source":"{SOURCE}"}}'

    def move(self, m: str, v: int, stage: str) -> str:
        return f'POST /api/v1/models/{m}/versions/{v}/transitions {{"to_stage":"{stage}"}}'

    def read(self, m: str) -> str:
        return f"GET /api/v1/models/{m}/stages/production"


class MlflowApi:
    """The same requests in MLflow's REST API (2.0), and its versions' rows."""

    label = "MLflow"
    idle = "/health"
    rows_sql = "SELECT name, version, lower(current_stage) FROM model_versions"
    base = "/api/2.0/mlflow"

    def create(self, m: str) -> str:
        return f'POST {self.base}/registered-models/create {{"name":"{m}"}}'

    def register(self, m: str) -> str:
        return f'POST {self.base}/model-versions/create {{"name":"{m}","source":"{SOURCE}"}}'

    def move(self, m: str, v: int, stage: str) -> str:
        body = {"name": m, "version": str(v), "stage": stage.capitalize(),
                "archive_existing_versions": stage == "production"}
        return f"POST {self.base}/model-versions/transition-stage {json.dumps(body, separators=(',', ':'))}"

    def read(self, m: str) -> str:
        return f"GET {self.base}/registered-models/get-latest-versions?name={m}&stages=Production"


@dataclass
class Target:
    """One running server: where it listens, how to talk to it, where its rows are."""

    api: OursApi | MlflowApi
    url: str
    token: str
    db_url: str  # SQLAlchemy async URL of its database
    log: Path | None = None  # our JSON access log
    results: dict[str, dict[int, dict]] = field(default_factory=dict)


# -- wrk -----------------------------------------------------------------------------------------------

def wrk(target: Target, lines: list[str], connections: int, seconds: float, cycle: bool,
        drain: bool = False) -> dict:
    """Send ``lines`` with wrk and versus.lua; returns rate (2xx per second of the window),
    statuses, latencies and socket errors. ``drain``: one thread per connection, every line
    answered before wrk ends (for preparation)."""
    threads = min(connections, len(lines)) if drain else min(2, connections, len(lines))
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
        f.write("\n".join(lines) + "\n")
    env = {**os.environ, "BENCH_PATHS": f.name, "BENCH_TOKEN": target.token,
           "BENCH_THREADS": str(threads), "BENCH_CYCLE": "1" if cycle else "0",
           "BENCH_DRAIN": "1" if drain else "0", "BENCH_IDLE": target.api.idle}
    cmd = ["wrk", "-t", str(threads), "-c", str(threads if drain else connections),
           "-d", f"{max(1, round(seconds))}s", "--timeout", "10s", "-s", str(LUA), target.url]
    try:
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    finally:
        for path in [f.name, *(f"{f.name}.done.{k}" for k in range(1, threads + 1))]:
            Path(path).unlink(missing_ok=True)
    return _parse_wrk(out)


def _parse_wrk(out: str) -> dict:
    statuses = {int(k): int(v) for k, v in re.findall(r"(\d+)=(\d+)", _line(out, "statuses:"))}
    window = dict(re.findall(r"(\w+)=([\d.]+)", _line(out, "window:")))
    latency = dict(re.findall(r"(p\d+)=([\d.]+)", _line(out, "latency_ms:")))
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    ok, span = int(window["ok"]), float(window["seconds"])
    return {"rate": ok / span if span else 0.0, "ok": ok, "seconds": span,
            "ran_out": window["ran_out"] == "1", "statuses": statuses,
            "non_2xx": sum(n for s, n in statuses.items() if not 200 <= s < 300),
            "socket_errors": sum(map(int, errors.groups())) if errors else 0,
            "p50_ms": float(latency["p50"]), "p99_ms": float(latency["p99"])}


def _line(out: str, prefix: str) -> str:
    return next((ln[len(prefix):] for ln in out.splitlines() if ln.startswith(prefix)), "")


def must(target: Target, lines: list[str], connections: int = 8) -> dict:
    """Untimed preparation: every request must succeed."""
    if not lines:
        return {"rate": 0.0}
    out = wrk(target, lines, connections, 600, cycle=False, drain=True)
    if out["ok"] != len(lines):
        raise RuntimeError(f"{target.api.label}: preparation got {out['ok']}/{len(lines)} 2xx, "
                           f"statuses {out['statuses']}, socket errors {out['socket_errors']}")
    return out


# -- the servers' databases ----------------------------------------------------------------------------

async def _rows(db_url: str, sql: str) -> list[tuple]:
    engine = create_engine(db_url, null_pool=True)
    try:
        async with engine.connect() as conn:
            return [tuple(r) for r in (await conn.execute(text(sql))).all()]
    finally:
        await engine.dispose()


def versions(target: Target) -> dict[str, dict[int, str]]:
    """model -> version -> stage (lower case), from the server's database."""
    found: dict[str, dict[int, str]] = {}
    for name, version, stage in asyncio.run(_rows(target.db_url, target.api.rows_sql)):
        found.setdefault(name, {})[int(version)] = stage
    return found


def in_stage(target: Target, stage: str, names: list[str]) -> dict[str, list[int]]:
    rows = versions(target)
    return {n: sorted(v for v, s in rows.get(n, {}).items() if s == stage) for n in names}


def settle(target: Target, names: list[str]) -> int:
    """Wait until no staging version changes any more (requests that wrk left in flight finish);
    returns the count of staging versions."""
    last = -1
    for _ in range(40):
        now = sum(map(len, in_stage(target, "staging", names).values()))
        if now == last:
            return now
        last = now
        time.sleep(0.3)
    return last


def model_order(by_model: dict[str, list[int]], make: Callable[[str, int], str]) -> list[str]:
    """Lines for every (model, version), version-major: models in turn, each version once."""
    lines, depth = [], max(map(len, by_model.values()), default=0)
    for k in range(depth):
        lines += [make(m, vs[k]) for m, vs in by_model.items() if k < len(vs)]
    return lines


# -- our access log --------------------------------------------------------------------------------------

ACCESS = {"promote": ("POST", "/transitions"), "read": ("GET", "/stages/production"),
          "register": ("POST", "/versions")}


def server_ms(log: Path | None, offset: int, scenario: str) -> dict | None:
    """Median and p99 of the server's own duration_ms over the access lines written since
    ``offset`` for the scenario's requests (all of them for the mix)."""
    if log is None:
        return None
    with log.open("rb") as f:
        f.seek(offset)
        tail = f.read().decode(errors="replace")
    kinds = [ACCESS[scenario]] if scenario in ACCESS else list(ACCESS.values())
    times = []
    for ln in tail.splitlines():
        try:
            entry = json.loads(ln)
        except ValueError:
            continue
        if entry.get("event") == "request" and any(
                entry.get("method") == m and str(entry.get("path", "")).endswith(p) for m, p in kinds):
            times.append(float(entry["duration_ms"]))
    if not times:
        return None
    times.sort()
    return {"median": statistics.median(times), "p99": times[min(len(times) - 1, int(len(times) * 0.99))],
            "n": len(times)}


# -- a quiet server ----------------------------------------------------------------------------------------

def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds used so far by ``pid`` and all its descendants (from /proc)."""
    stats = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]))  # ppid, ticks
    tree = {pid}
    for _ in range(8):  # a few generations deep
        tree |= {p for p, (ppid, _) in stats.items() if ppid in tree}
    ticks = sum(stats[p][1] for p in tree if p in stats)
    return ticks / os.sysconf("SC_CLK_TCK")


def wait_quiet(label: str, pid: int, limit: float = 90) -> None:
    """Wait (at most ``limit`` s) until the server's processes have started: under 25 % of a core
    over 2 s. MLflow's job runner starts seven huey consumers that import for a while after
    /health answers (idle, they poll at about 3 % of a core in all; our idle relay and
    dispatcher, at 5-8 %)."""
    started, before = time.monotonic(), tree_cpu_seconds(pid)
    while time.monotonic() - started < limit:
        time.sleep(2)
        now = tree_cpu_seconds(pid)
        if now - before < 0.5:
            print(f"  {label} idle after {time.monotonic() - started:.0f} s", flush=True)
            return
        before = now
    print(f"  {label} still busy after {limit:.0f} s; going on", flush=True)


# -- scenarios -------------------------------------------------------------------------------------------

def timed(target: Target, scenario: str, c: int, lines: list[str], args: argparse.Namespace,
          cycle: bool) -> dict:
    offset = target.log.stat().st_size if target.log else 0
    out = wrk(target, lines, c, args.seconds, cycle)
    out["server_ms"] = server_ms(target.log, offset, scenario)
    target.results.setdefault(scenario, {})[c] = out
    return out


def setup_models(target: Target, names: list[str]) -> float:
    """Models with version 1 in production, so that every later promotion archives an incumbent.
    Returns a first estimate of the promotion rate (that of these transitions)."""
    api = target.api
    must(target, [api.create(m) for m in names])
    must(target, [api.register(m) for m in names])
    submit = must(target, [api.move(m, 1, "staging") for m in names])
    promote = must(target, [api.move(m, 1, "production") for m in names])
    return max(submit["rate"], promote["rate"])


def run_register(target: Target, names: list[str], args: argparse.Namespace) -> None:
    lines = [target.api.register(m) for m in names]
    for c in args.concurrency:
        _report(target, "register", c, timed(target, "register", c, lines, args, cycle=True))


def top_up(target: Target, names: list[str], need: int) -> float:
    """At least ``need`` versions in staging: versions in stage none moved there (the register
    scenario's first), then new ones registered and moved. Returns the rate of those moves (a
    transition at 32 connections), 0 when none were needed."""
    have = sum(map(len, in_stage(target, "staging", names).values()))
    if have >= need:
        return 0.0
    spare = sum(map(len, in_stage(target, "none", names).values()))
    if have + spare < need:
        rounds = -(-(need - have - spare) // len(names))
        must(target, [target.api.register(m) for m in names] * rounds, connections=32)
    none = in_stage(target, "none", names)
    lines = model_order(none, lambda m, v: target.api.move(m, v, "staging"))[:need - have]
    return must(target, lines, connections=32)["rate"]


def run_promote(target: Target, names: list[str], args: argparse.Namespace, estimate: float) -> None:
    """At each concurrency, promote the versions in staging, each once, in version-major order.
    Before each run, enough of them for 1.5 x the best rate seen so far, the moves to staging
    included (a second top-up when those were faster); what a run leaves, the next one promotes."""
    for c in args.concurrency:
        for _ in range(2):
            estimate = max(estimate, top_up(target, names, max(c, int(estimate * args.seconds * 1.5))))
        staging = in_stage(target, "staging", names)
        before = sum(map(len, staging.values()))
        lines = model_order(staging, lambda m, v: target.api.move(m, v, "production"))
        out = timed(target, "promote", c, lines, args, cycle=False)
        out["committed"] = before - settle(target, names)
        _report(target, "promote", c, out)
        estimate = max(estimate, out["rate"])


def run_read(target: Target, names: list[str], args: argparse.Namespace) -> None:
    lines = [target.api.read(m) for m in names]
    for c in args.concurrency:
        _report(target, "read", c, timed(target, "read", c, lines, args, cycle=True))


def run_mix(target: Target, names: list[str], args: argparse.Namespace) -> None:
    """Of every five requests four read a production version and one registers a version."""
    api = target.api
    lines = [api.register(m) if k % 5 == 4 else api.read(m)
             for k, m in enumerate(names * 5)]
    for c in args.concurrency:
        _report(target, "mix", c, timed(target, "mix", c, lines, args, cycle=True))


def _report(target: Target, scenario: str, c: int, out: dict) -> None:
    extra = f" committed={out['committed']}" if "committed" in out else ""
    if out.get("server_ms"):
        extra += f" server_median={out['server_ms']['median']:.2f}ms"
    print(f"  {target.api.label:6} {scenario:8} c={c:<3} {out['rate']:8.1f}/s over {out['seconds']:.1f}s"
          f"{' (list ran out)' if out['ran_out'] else ''}  p50={out['p50_ms']:.1f} "
          f"p99={out['p99_ms']:.1f} ms  statuses={out['statuses']}"
          f"{' socket_errors=' + str(out['socket_errors']) if out['socket_errors'] else ''}{extra}",
          flush=True)


def run_scenarios(target: Target, names: list[str], args: argparse.Namespace) -> dict:
    """The selected scenarios (register first: its versions are promoted next), then the checks."""
    started = time.monotonic()
    estimate = setup_models(target, names)
    if "register" in args.scenarios:
        run_register(target, names, args)
    if "promote" in args.scenarios:
        run_promote(target, names, args, estimate)
    if "read" in args.scenarios:
        run_read(target, names, args)
    if "mix" in args.scenarios:
        run_mix(target, names, args)
    checks = check(target, names)
    checks["race_production_versions"] = race(target)
    checks["seconds"] = round(time.monotonic() - started, 1)
    return checks


# -- correctness -----------------------------------------------------------------------------------------

def check(target: Target, names: list[str]) -> dict:
    """Production versions per model (exactly one expected) and dense version numbers (1..n)."""
    rows = versions(target)
    production = {n: sum(1 for s in rows.get(n, {}).values() if s == "production") for n in names}
    holes = [n for n in names if sorted(rows.get(n, {})) != list(range(1, len(rows.get(n, {})) + 1))]
    histogram: dict[int, int] = {}
    for k in production.values():
        histogram[k] = histogram.get(k, 0) + 1
    return {"models": len(names), "versions": sum(len(rows.get(n, {})) for n in names),
            "production_per_model": histogram, "exactly_one_production": set(histogram) == {1},
            "dense_models": len(names) - len(holes), "dense": not holes}


def race(target: Target) -> int:
    """RACE staging versions of one new model, promoted all at once: production versions after."""
    name = f"race-{int(time.time())}"
    asyncio.run(_race(target, name))
    time.sleep(1)
    return sum(1 for s in versions(target).get(name, {}).values() if s == "production")


async def _race(target: Target, name: str) -> None:
    api = target.api
    headers = {"Authorization": f"Bearer {target.token}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=RACE)
    async with httpx.AsyncClient(base_url=target.url, headers=headers, limits=limits, timeout=60) as client:
        async def send(line: str) -> int:
            method, path, body = (line.split(" ", 2) + [""])[:3]
            return (await client.request(method, path, content=body or None)).status_code

        await send(api.create(name))
        for v in range(1, RACE + 1):
            await send(api.register(name))
            await send(api.move(name, v, "staging"))
        await asyncio.gather(*(send(api.move(name, v, "production")) for v in range(1, RACE + 1)))


# -- pgbench ---------------------------------------------------------------------------------------------

async def _pgbench_schema(url: str, models: int) -> None:
    conn = await asyncpg.connect(_libpq(url))
    try:
        await conn.execute((HERE / "versus_pgbench_schema.sql").read_text())
        await conn.execute("INSERT INTO registered_models (name) "
                           "SELECT 'bench-' || g FROM generate_series(1, $1::int) g", models)
        await conn.execute("INSERT INTO model_versions (model_id, version, stage) "
                           "SELECT id, v, CASE v WHEN 1 THEN 'production' ELSE 'staging' END "
                           "FROM registered_models, generate_series(1, 2) v")
    finally:
        await conn.close()


def _libpq(url: str, driver: str = "postgresql") -> str:
    return make_url(url).set(drivername=driver).render_as_string(hide_password=False)


def pgbench(url: str, seconds: float, models: int) -> dict[int, dict]:
    """The bare promotion transaction at 1 and 8 clients: tps and failed transactions."""
    asyncio.run(_pgbench_schema(url, models))
    u = make_url(url)
    env = {**os.environ, "PGPASSWORD": u.password or ""}
    found = {}
    for clients in (1, 8):
        cmd = ["pgbench", "-n", "-M", "prepared", "-f", str(HERE / "versus_pgbench_promote.sql"),
               "-D", f"models={models}", "-D", f"clients={clients}", "-c", str(clients),
               "-j", str(min(2, clients)), "-T", str(max(1, round(seconds))), "-h", u.host or "127.0.0.1",
               "-p", str(u.port or 5432), "-U", u.username or "", u.database or ""]
        if clients == 1:
            print("  $ PGPASSWORD=... " + shlex.join(cmd).replace(str(REPO) + "/", ""))
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
        tps = float(re.search(r"tps = ([\d.]+)", out).group(1))  # type: ignore[union-attr]
        failed = re.search(r"number of failed transactions: (\d+)", out)
        found[clients] = {"tps": tps, "failed": int(failed.group(1)) if failed else 0}
        print(f"  pgbench -c {clients}: {tps:.0f} tps, {found[clients]['failed']} failed", flush=True)
    return found


# -- MLflow ----------------------------------------------------------------------------------------------

def mlflow_venv(venv: Path, wanted: str) -> str:
    """A virtual environment with mlflow and psycopg2 (made once); returns the installed version.
    Falls back to the newest 3.x when ``wanted`` is not to be had."""
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"  making {venv} (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    if _installed(python) != wanted:
        pip = [str(python), "-m", "pip", "install", "-q"]
        if subprocess.run([*pip, f"mlflow=={wanted}", "psycopg2-binary"]).returncode != 0:
            print(f"  mlflow=={wanted} is not to be had; installing the newest 3.x", flush=True)
            subprocess.run([*pip, "mlflow>=3,<4", "psycopg2-binary"], check=True)
    return _installed(python) or "?"


def _installed(python: Path) -> str | None:
    out = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.version('mlflow'))"],
                         capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else None


@contextmanager
def mlflow_server(venv: Path, db_url: str, data_dir: Path, workers: int,
                  kind: str) -> Iterator[tuple[str, int]]:
    """`mlflow server` on loopback in a process group of its own (it starts gunicorn or uvicorn
    workers and a job runner with huey consumers); yields its URL and pid, then ends the group."""
    port = free_port()
    store = _libpq(db_url, "postgresql+psycopg2")  # "postgresql://" would load psycopg 3
    server_opts = ["--gunicorn-opts", ""] if kind == "gunicorn" else []
    cmd = [str(venv / "bin" / "mlflow"), "server", "--backend-store-uri", store,
           "--workers", str(workers), *server_opts, "--host", "127.0.0.1", "--port", str(port),
           "--artifacts-destination", str(data_dir / "mlartifacts")]
    print("  $ " + shlex.join(cmd).replace(make_url(store).password or "\0", "***"), flush=True)
    log = data_dir / "mlflow.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=data_dir, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        _wait(url + "/health", proc, log)
        yield url, proc.pid
    finally:
        end_group(proc, 30)


def _wait(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"mlflow server exited:\n{log.read_text()[-4000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"mlflow server not up after {timeout}s:\n{log.read_text()[-4000:]}")



# -- configuration and the table ---------------------------------------------------------------------------

def configuration(args: argparse.Namespace, mlflow_version: str | None) -> dict:
    git = ["git", "-C", str(REPO)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run([*git, "diff", "--quiet", "HEAD"]).returncode != 0
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor())
    return {"commit": commit + ("-dirty" if dirty else ""), "backend": args.backend,
            "workers": args.workers, "run_workers": args.run_workers, "nproc": os.cpu_count(),
            "cpu": cpu, "postgresql": asyncio.run(_pg_version()) if args.backend == "postgresql" else None,
            "mlflow": mlflow_version, "mlflow_server": None if mlflow_version is None else args.mlflow_server,
            "wrk": subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split(" [")[0].strip(),
            "loadavg": [round(x, 2) for x in os.getloadavg()],
            "seconds": args.seconds, "concurrency": args.concurrency, "models": args.models,
            "scenarios": args.scenarios}


async def _pg_version() -> str:
    conn = await asyncpg.connect(_libpq(os.environ[PG_ENV]))
    try:
        return str(await conn.fetchval("SHOW server_version"))
    finally:
        await conn.close()


def print_configuration(config: dict) -> None:
    server = f" server={config['server']}" if "server" in config else ""
    print(f"commit={config['commit']} backend={config['backend']}{server} workers={config['workers']} "
          f"run_workers={config['run_workers']} (ours)")
    mlflow = (f"mlflow={config['mlflow']} ({config['mlflow_server']}, {config['workers']} workers) "
              if config["mlflow"] else "")
    print(f"machine: nproc={config['nproc']} cpu={config['cpu']!r} postgresql={config['postgresql']} "
          f"{mlflow}load={config['wrk']} loadavg={config['loadavg']}")
    print(f"seconds={config['seconds']} concurrency={config['concurrency']} models={config['models']} "
          f"scenarios={','.join(config['scenarios'])}", flush=True)
    if config["loadavg"][0] > 1.0:
        print("warning: the machine was busy before the run (1-minute load average above 1): "
              "other processes share these cores, so the numbers are noisy", flush=True)


def _cell(out: dict | None) -> str:
    if out is None:
        return f"{'-':>9} {'-':>7}"
    mark = "*" if out["ran_out"] else " "
    return f"{out['rate']:8.0f}{mark} {out['p99_ms']:7.1f}"


def print_table(ours: Target, mlflow: Target | None, bench: dict[int, dict] | None,
                args: argparse.Namespace) -> None:
    print(f"\n{'scenario':9} {'c':>3} | {'MLflow/s':>9} {'p99 ms':>7} | {'ours/s':>9} {'p99 ms':>7} | "
          f"{'ratio':>6} | non-2xx MLflow/ours")
    for scenario in args.scenarios:
        for c in args.concurrency:
            o = ours.results.get(scenario, {}).get(c)
            m = mlflow.results.get(scenario, {}).get(c) if mlflow else None
            ratio = f"{o['rate'] / m['rate']:5.1f}x" if o and m and m["rate"] else f"{'-':>6}"
            bad = "/".join(str(x["non_2xx"] + x["socket_errors"]) if x else "-" for x in (m, o))
            print(f"{scenario:9} {c:>3} | {_cell(m)} | {_cell(o)} | {ratio} | {bad}")
    print("(* the list of staging versions ran out: the rate is over a shorter window)")
    if bench:
        promote = ours.results.get("promote", {})
        parts = [f"-c {k}: {v['tps']:.0f} tps" + (f", ours promote c={k} = {promote[k]['rate'] / v['tps']:.0%}"
                                                   if k in promote else "") for k, v in bench.items()]
        print("pgbench bare promotion: " + "; ".join(parts))


def print_one_at_a_time(ours: Target) -> None:
    """Ours at concurrency 1: server time per request from the access log."""
    parts = []
    for scenario in SCENARIOS:
        out = ours.results.get(scenario, {}).get(1)
        if out and out.get("server_ms"):
            t = out["server_ms"]
            parts.append(f"{scenario} median {t['median']:.2f} ms (p99 {t['p99']:.2f}, n={t['n']})")
    if parts:
        print("ours one request at a time, server time (access log duration_ms): " + "; ".join(parts))


def print_checks(checks: dict[str, dict]) -> None:
    for label, c in checks.items():
        print(f"{label} checks: {c['models']} models, {c['versions']} versions; production versions "
              f"per model {{count: models}} {c['production_per_model']} "
              f"({'exactly one each' if c['exactly_one_production'] else 'NOT exactly one each'}); "
              f"version numbers dense in {c['dense_models']}/{c['models']} models; "
              f"{RACE} concurrent promotions of one model left {c['race_production_versions']} "
              f"production version(s); {c['log_errors']} error lines in its log; {c['seconds']} s")
        if c["first_log_error"]:
            print(f"  first: {c['first_log_error']}")


# -- main ----------------------------------------------------------------------------------------------

def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=" ".join(__doc__.split("\n\n")[0].split()))
    p.add_argument("--seconds", type=float, default=10, help="each timed wrk run and pgbench run")
    p.add_argument("--concurrency", default="1,8,32", help="comma-separated connection counts")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"subset of {','.join(SCENARIOS)}")
    p.add_argument("--skip-mlflow", action="store_true", help="only ours and pgbench")
    p.add_argument("--workers", type=int, default=2, help="server processes of each server")
    p.add_argument("--run-workers", choices=["true", "false"], default="true",
                   help="REGISTRY_RUN_WORKERS: relay and dispatcher inside each server process")
    p.add_argument("--backend", choices=["postgresql", "sqlite"], default="postgresql",
                   help="ours only on sqlite (one worker; no MLflow, no pgbench)")
    p.add_argument("--models", type=int, default=50)
    p.add_argument("--mlflow-venv", type=Path, default=DEFAULT_VENV)
    p.add_argument("--mlflow-version", default=MLFLOW_VERSION)
    p.add_argument("--mlflow-server", choices=["gunicorn", "uvicorn"], default="gunicorn",
                   help='gunicorn: `--gunicorn-opts ""` (Flask app, sync workers; as in the issue); '
                        "uvicorn: MLflow 3's default (FastAPI app)")
    p.add_argument("--json", type=Path, help="also write the raw results here")
    args = p.parse_args()
    args.concurrency = [int(c) for c in args.concurrency.split(",")]
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    if unknown := set(args.scenarios) - set(SCENARIOS):
        p.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    if args.backend == "sqlite":
        args.skip_mlflow, args.workers = True, 1  # the server refuses more than one on SQLite
    return args


@contextmanager
def databases(args: argparse.Namespace, tmp: Path) -> Iterator[dict[str, str]]:
    """Databases for ours, MLflow and pgbench beside REGISTRY_TEST_DATABASE_URL (SQLite: a file
    for ours), dropped at the end."""
    tmp.mkdir(parents=True, exist_ok=True)
    if args.backend == "sqlite":
        yield {"ours": sqlite_url(tmp)}
        return
    wanted = ["ours", "pgbench"] + ([] if args.skip_mlflow else ["mlflow"])
    made: dict[str, str] = {}
    try:
        for name in wanted:
            made[name] = asyncio.run(create_pg_database())
        yield made
    finally:
        for url in made.values():
            asyncio.run(drop_pg_database(url))


def log_errors(log: Path) -> dict:
    """Error lines in a server's log (JSON level error/critical, tracebacks, ERROR), and the first."""
    bad = [ln for ln in log.read_text(errors="replace").splitlines()
           if re.search(r'"level": "(error|critical)"|Traceback|\bERROR\b', ln)]
    return {"log_errors": len(bad), "first_log_error": bad[0][:300] if bad else None}


def run_ours(url: str, tmp: Path, names: list[str], args: argparse.Namespace,
             config: dict) -> tuple[Target, dict]:
    print(f"ours: python -m registry serve --workers {args.workers} "
          f"(REGISTRY_RUN_WORKERS={args.run_workers})", flush=True)
    with run_server(url, tmp, workers=args.workers,
                    extra_env={"REGISTRY_RUN_WORKERS": args.run_workers}) as server:
        config["server"] = httpx.get(server.url + "/readyz").headers.get("server", "?")
        target = Target(OursApi(), server.url, server.token, server.database_url, server.log)
        wait_quiet("ours", server.process.pid)
        checks = run_scenarios(target, names, args)
        return target, {**checks, **log_errors(server.log)}


def run_mlflow(url: str, tmp: Path, names: list[str], args: argparse.Namespace) -> tuple[Target, dict]:
    print(f"MLflow {args.mlflow_server}:", flush=True)
    with mlflow_server(args.mlflow_venv, url, tmp, args.workers, args.mlflow_server) as (server_url, pid):
        target = Target(MlflowApi(), server_url, "unused", url)
        wait_quiet("MLflow", pid)
        checks = run_scenarios(target, names, args)
        return target, {**checks, **log_errors(tmp / "mlflow.log")}


def main() -> None:
    args = parse_args()
    if args.backend == "postgresql" and not os.environ.get(PG_ENV):
        raise SystemExit(f"{PG_ENV} is not set: a postgresql+asyncpg URL of a role with CREATEDB")
    started = time.monotonic()
    mlflow_version = None if args.skip_mlflow else mlflow_venv(args.mlflow_venv, args.mlflow_version)
    if mlflow_version and mlflow_version != args.mlflow_version:
        print(f"note: MLflow {mlflow_version} instead of {args.mlflow_version}", flush=True)
    config = configuration(args, mlflow_version)
    print_configuration(config)
    names = [f"bench-{i:03d}" for i in range(args.models)]
    bench, mlflow, checks = None, None, {}
    with tempfile.TemporaryDirectory() as tmp_dir, databases(args, Path(tmp_dir) / "ours") as dbs:
        tmp = Path(tmp_dir)
        if "pgbench" in dbs:
            print("pgbench:", flush=True)
            bench = pgbench(dbs["pgbench"], args.seconds, args.models)
        ours, checks["ours"] = run_ours(dbs["ours"], tmp / "ours", names, args, config)
        if "mlflow" in dbs:
            mlflow, checks["MLflow"] = run_mlflow(dbs["mlflow"], tmp, names, args)
    config["total_seconds"] = round(time.monotonic() - started)
    print()
    print_configuration(config)
    print_table(ours, mlflow, bench, args)
    print_one_at_a_time(ours)
    print_checks(checks)
    print(f"total {config['total_seconds']} s")
    if args.json:
        args.json.write_text(json.dumps({"config": config, "pgbench": bench, "checks": checks,
                                         "ours": ours.results, "mlflow": mlflow and mlflow.results},
                                        indent=2, default=str))


if __name__ == "__main__":
    main()
