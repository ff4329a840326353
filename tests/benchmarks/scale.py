"""Benchmark: list, read and promote latency with 10,000 models and 1,000,000 versions, against an
empty database (issue 12, "scale": within 1.5x of the empty database).

    REGISTRY_TEST_DATABASE_URL=postgresql+asyncpg://... .venv/bin/python -m tests.benchmarks.scale

Method:

- Two PostgreSQL databases at the latest migration (copies of one migrated template). One stays
  empty: the few models the measurement needs are made through the API. The other is bulk-loaded.
- Loading writes what the service would have written for each model's history, one request at a
  time: ``model.created``, then per version ``model_version.created``, a submit to staging (which
  seals an empty manifest), and then a promotion (the incumbent archived, ``superseded_by``) or an
  archive. Each model ends with exactly one production version, a few in staging, the newest few
  in none and the rest archived. Every change is an audit entry, hash-chained per model exactly as
  the unit of work chains them (``registry.services.audit.canonical`` and ``chain_hash`` from the
  genesis hash, chain ``model:<id>``, heads in ``audit_chains``), and an outbox event. Outbox events
  are loaded as already relayed (``relayed_at`` set) so the in-process relay has no backlog to
  work through during the measurement; their timestamps lie within the retention window, so the
  pruner deletes none either. Lineage documents (``lineage_events``) are not loaded: nothing
  measured reads them. Rows go in with asyncpg ``copy_records_to_table`` in one transaction, in
  batches of 200 models whose rows are interleaved in time order (so, as in a registry that grew
  over time, a model's versions and audit rows are spread over many pages), built by two other
  processes while the previous batch is copied; then ``VACUUM (ANALYZE)`` so that autovacuum and
  hint-bit writes do not run during the measurement.
- Both databases are served side by side, each by ``python -m registry serve --workers 2``
  (in-process relay and dispatcher, JSON access log), as a user starts it. Each is prepared
  through the API, and measured once its relay has caught up with the preparation's events.
  Requests go one at a time with httpx, alternating between the two servers (and which goes first),
  so that whatever else runs on the machine weighs on both alike; warm-up requests are not kept.
  Each request carries its own ``X-Request-ID``, which matches it to the access log line that
  gives its server-side ``duration_ms``. The verdict compares the server-side p50 of the loaded
  database with the empty one's.
- Reads on the loaded database go to a different random model each time (cold pages included);
  the empty database holds two pages of models, ten of them in use with 51 versions each.
  Promotions move staging versions registered and submitted through the API beforehand,
  round-robin over ten models (loaded ones on the loaded database), so every promotion also
  archives an incumbent. At the end the audit chain of a loaded model that was promoted (loaded
  rows, then the service's own) and of an untouched one are verified through the API.

PostgreSQL, the server and this client share the machine (two cores on the reference machine,
possibly shared with other runs): absolute numbers are a floor, the ratio is the result.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import json
import math
import multiprocessing
import os
import random
import subprocess
import tempfile
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from operator import itemgetter
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from registry.domain import gates, stages
from registry.domain.artifacts import Manifest
from registry.domain.events import Change, ModelCreated, StageChanged, VersionCreated
from registry.domain.model import ModelVersion, RegisteredModel
from registry.domain.stages import Stage
from registry.services.audit import GENESIS, canonical, chain_hash, model_chain, rfc3339
from tests.support import (
    REPO,
    Server,
    asyncpg_dsn,
    drop_pg_database,
    migrated_pg_database,
    run_server,
)

TARGET = 1.5  # loaded / empty, server-side p50
WARMUP = 30
BATCH = 200  # models generated and copied at a time
ACTIVE = 10  # models the empty database's reads and both databases' promotions go round
WINDOW = timedelta(days=25)  # the loaded history; inside the 30-day outbox retention
EMPTY_MANIFEST = Manifest.of([]).to_dict()
LOADED_TABLES = ("registered_models", "audit_chains", "model_versions", "audit_log", "outbox_events")


# -- one model's history, as the service would have written it (pure; runs in other processes) ------

@dataclass
class Rows:
    """Records for COPY, by table."""

    models: list[tuple[Any, ...]] = field(default_factory=list)
    chains: list[tuple[Any, ...]] = field(default_factory=list)
    versions: list[tuple[Any, ...]] = field(default_factory=list)
    audit: list[tuple[Any, ...]] = field(default_factory=list)
    events: list[tuple[Any, ...]] = field(default_factory=list)

    def extend(self, other: Rows) -> None:
        for name in ("models", "chains", "versions", "audit", "events"):
            getattr(self, name).extend(getattr(other, name))


COLUMNS = {
    "registered_models": ("id", "name", "description", "tags", "last_version", "created_at",
                          "updated_at", "created_by"),
    "audit_chains": ("id", "model_id", "model_name", "audit_seq", "audit_hash", "event_seq",
                     "created_at"),
    "model_versions": ("id", "model_id", "version", "stage", "source", "run_id", "description",
                       "tags", "metrics", "inputs", "revision", "left_production_seq", "created_at",
                       "updated_at", "created_by", "stage_since", "sealed_at", "manifest_digest"),
    "audit_log": ("chain", "seq", "at", "actor", "request_id", "action", "model", "version",
                  "canonical", "prev_hash", "hash"),
    "outbox_events": ("event_id", "chain", "sequence", "type", "model", "version", "actor",
                      "request_id", "at", "data", "relayed_at", "target"),
}


class Chain:
    """One model's audit chain and event sequence, extended one unit of work at a time."""

    def __init__(self, model_id: int, rows: Rows) -> None:
        self.id = model_chain(model_id)
        self.seq = 0
        self.hash = GENESIS
        self.rows = rows

    def commit(self, at: datetime, actor: str, *changes: Change) -> None:
        """What SqlUnitOfWork.commit writes for these changes: one audit entry and one relayed
        outbox event each, under one request id and one timestamp."""
        request_id, at_text = uuid.uuid4().hex, rfc3339(at)
        for change in changes:
            self.seq += 1
            text = canonical({
                "seq": self.seq, "chain": self.id, "at": at_text, "actor": actor,
                "request_id": request_id, "action": change.type, "model": change.model,
                "version": change.version, "before": change.before, "after": change.after,
                "prev_hash": self.hash,
            })
            digest = chain_hash(self.hash, text)
            self.rows.audit.append((self.id, self.seq, at, actor, request_id, change.type, change.model,
                                    change.version, text, self.hash, digest))
            self.rows.events.append((str(uuid.uuid4()), self.id, self.seq, change.type, change.model,
                                     change.version, actor, request_id, at,
                                     json.dumps(change.event_data()), at, None))
            self.hash = digest


def final_stage(number: int, versions: int) -> Stage:
    """Newest few in none, a few before them in staging, one production, the rest archived."""
    newest_none = max(1, versions // 50)
    staging = max(1, versions * 3 // 100)
    if number > versions - newest_none:
        return Stage.NONE
    if number > versions - newest_none - staging:
        return Stage.STAGING
    if number == versions - newest_none - staging:
        return Stage.PRODUCTION
    return Stage.ARCHIVED


def move(chain: Chain, version: ModelVersion, target: Stage, at: datetime, *,
         archived: Sequence[int] = (), superseded_by: int | None = None) -> StageChanged:
    """The version moved along the stage table as transitions._move moves it, and its change:
    an incumbent archived by a promotion says ``superseded_by``, any other move its gates."""
    from_stage = version.stage
    trigger = stages.trigger_for(from_stage, target)
    extra: dict[str, Any] = ({"superseded_by": superseded_by} if superseded_by is not None else
                             {"archived": list(archived),
                              "gates": [gates.stage_table(from_stage, target, trigger).to_dict()]})
    audit: dict[str, Any] = {}
    if from_stage is Stage.NONE:  # the first move out of none seals the (empty) files
        version.sealed_at, version.manifest_digest = at, EMPTY_MANIFEST["digest"]
        audit["artifacts"] = EMPTY_MANIFEST
    if from_stage is Stage.PRODUCTION:
        version.left_production_seq = chain.seq + 1  # this change's own event sequence
    version.stage = target
    version.updated_at = version.stage_since = at
    version.revision += 1
    return StageChanged(
        model=version.model, version=version.version, before={"stage": from_stage.value},
        after={"stage": target.value, "trigger": trigger.value, "comment": None, **audit},
        extra={"from_stage": from_stage.value, "to_stage": target.value, "trigger": trigger.value,
               "comment": None, **extra, **audit})


def model_history(model_id: int, name: str, versions: int, clock: Iterator[datetime]) -> Rows:
    """Rows of one model registered, with ``versions`` versions taken through their lifecycle."""
    rows = Rows()
    chain = Chain(model_id, rows)
    created = next(clock)
    model = RegisteredModel(model_id, name, "", {"team": f"team-{model_id % 40:02d}"}, created, created,
                            "ci-bot", versions)
    chain.commit(created, "ci-bot", ModelCreated(model=name, after=model.snapshot()))
    made: list[ModelVersion] = []
    production: ModelVersion | None = None
    for number in range(1, versions + 1):
        at = next(clock)
        version = ModelVersion(model_id, name, number, Stage.NONE, f"s3://models/{name}/{number}",
                               uuid.uuid4().hex, "", {"git": uuid.uuid4().hex[:12]},
                               {"auc": round(0.7 + 0.29 * (number / versions), 4)}, [], at, at,
                               "ci-bot", stage_since=at)
        made.append(version)
        chain.commit(at, "ci-bot", VersionCreated(model=name, version=number, after=version.snapshot()))
        goal = final_stage(number, versions)
        if goal is Stage.NONE:
            continue
        at = next(clock)
        if goal is Stage.ARCHIVED and number % 10 == 0:  # never submitted
            chain.commit(at, "ci-bot", move(chain, version, Stage.ARCHIVED, at))
            continue
        chain.commit(at, "ci-bot", move(chain, version, Stage.STAGING, at))
        if goal is Stage.STAGING:
            continue
        at = next(clock)
        if goal is Stage.ARCHIVED and number % 2 == 0:  # rejected in staging
            chain.commit(at, "release-bot", move(chain, version, Stage.ARCHIVED, at))
            continue
        changes = []
        if production is not None:  # the incumbent is archived first, in the same unit of work
            changes.append(move(chain, production, Stage.ARCHIVED, at, superseded_by=number))
        changes.append(move(chain, version, Stage.PRODUCTION, at,
                            archived=[production.version] if production else []))
        chain.commit(at, "release-bot", *changes)
        production = version
    rows.models.append((model_id, name, "", json.dumps(model.tags), versions, created, created, "ci-bot"))
    rows.chains.append((chain.id, model_id, name, chain.seq, chain.hash, chain.seq, created))
    rows.versions.extend(
        (v.id, model_id, v.version, v.stage.value, v.source, v.run_id, v.description, json.dumps(v.tags),
         json.dumps(v.metrics), "[]", v.revision, v.left_production_seq, v.created_at, v.updated_at,
         v.created_by, v.stage_since, v.sealed_at, v.manifest_digest) for v in made)
    return rows


def model_name(model_id: int) -> str:
    kinds = ("fraud", "churn", "ranker", "forecast", "vision", "nlp", "pricing", "recsys")
    return f"{kinds[model_id % len(kinds)]}-{model_id:06d}"


def history_batch(first: int, count: int, versions: int, start: datetime, step: timedelta) -> Rows:
    """Models ``first`` .. ``first + count - 1``, their histories interleaved in time order, as
    the service would have appended them: a model's rows lie on many pages, not on a few of its
    own. (Each model's clock starts a little later than the one before.)"""
    rows = Rows()
    for model_id in range(first, first + count):
        clock = ticks(start + step * ((model_id % 997) / 997), step)
        rows.extend(model_history(model_id, model_name(model_id), versions, clock))
    for records, table, column in ((rows.versions, "model_versions", "created_at"),
                                   (rows.audit, "audit_log", "at"), (rows.events, "outbox_events", "at")):
        records.sort(key=itemgetter(COLUMNS[table].index(column)))  # stable: chain order kept
    first_id = (first - 1) * versions + 1
    rows.versions = [(i, *r[1:]) for i, r in enumerate(rows.versions, first_id)]
    return rows


def ticks(begin: datetime, step: timedelta) -> Iterator[datetime]:
    n = 0
    while True:
        yield begin + step * n
        n += 1


# -- loading --------------------------------------------------------------------------------------

@dataclass
class LoadReport:
    load_seconds: float
    vacuum_seconds: float


async def copy_rows(conn: asyncpg.Connection, rows: Rows) -> None:
    for table, records in zip(LOADED_TABLES, (rows.models, rows.chains, rows.versions, rows.audit,
                                              rows.events), strict=True):
        await conn.copy_records_to_table(table, records=records, columns=COLUMNS[table])


async def load(url: str, models: int, versions: int) -> LoadReport:
    """Bulk-load the histories (one transaction), then VACUUM (ANALYZE) the loaded tables."""
    started = time.perf_counter()
    async with connect(url) as conn:
        async with conn.transaction():
            async for first, rows in histories(models, versions):
                await copy_rows(conn, rows)
                done = min(first + BATCH - 1, models)
                if done % (BATCH * 10) == 0 or done == models:
                    print(f"  loaded {done:,}/{models:,} models ({time.perf_counter() - started:.0f} s)",
                          flush=True)
            for table in ("registered_models", "model_versions"):
                await conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                   f"(SELECT max(id) FROM {table}))")
        loaded = time.perf_counter()
        for table in LOADED_TABLES:
            await conn.execute(f"VACUUM (ANALYZE) {table}")
    return LoadReport(loaded - started, time.perf_counter() - loaded)


async def histories(models: int, versions: int) -> AsyncIterator[tuple[int, Rows]]:
    """Batches of model histories in model order, built by two processes a few batches ahead."""
    step = WINDOW / (versions * 3 + 1)  # at most: created, then submitted and moved on, per version
    start = datetime.now(UTC) - WINDOW - timedelta(hours=1)
    firsts = iter(range(1, models + 1, BATCH))
    pending: deque[tuple[int, concurrent.futures.Future[Rows]]] = deque()
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        while True:
            while len(pending) < 3 and (first := next(firsts, None)) is not None:
                count = min(BATCH, models - first + 1)
                pending.append((first, pool.submit(history_batch, first, count, versions, start, step)))
            if not pending:
                return
            first, future = pending.popleft()
            yield first, await asyncio.wrap_future(future)


async def table_stats(url: str) -> dict[str, tuple[int, int]]:
    """Rows (exact) and total size in bytes (with indexes and TOAST) of the loaded tables."""
    async with connect(url) as conn:
        return {t: (await conn.fetchval(f"SELECT count(*) FROM {t}"),
                    await conn.fetchval("SELECT pg_total_relation_size($1::regclass)", t))
                for t in LOADED_TABLES}


async def fetchval(url: str, sql: str) -> Any:
    async with connect(url) as conn:
        return await conn.fetchval(sql)


@contextlib.asynccontextmanager
async def connect(url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        yield conn
    finally:
        await conn.close()


# -- the workload ---------------------------------------------------------------------------------

@dataclass
class Workload:
    """What each operation asks for, request after request (cycled)."""

    paths: dict[str, list[str]]
    promotions: list[tuple[str, int]]
    verify: list[str]  # models whose audit chain is verified at the end


OPERATIONS = ("list models", "list models, page 2", "list versions", "read production",
              "read version", "promote")


def api(client: httpx.Client, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
    r = client.request(method, path, json=body)
    if r.status_code >= 300:
        raise RuntimeError(f"{method} {path}: {r.status_code} {r.text}")
    return r.json()


def stage_versions(client: httpx.Client, models: Sequence[str], count: int) -> list[tuple[str, int]]:
    """Register ``count`` versions round-robin over ``models`` and submit them to staging."""
    made = []
    for i in range(count):
        name = models[i % len(models)]
        number = api(client, "POST", f"/models/{name}/versions", {"source": "s3://x"})["version"]
        api(client, "POST", f"/models/{name}/versions/{number}/transitions", {"to_stage": "staging"})
        made.append((name, number))
    return made


def list_paths(client: httpx.Client) -> dict[str, list[str]]:
    cursor = api(client, "GET", "/models?limit=50")["next_cursor"]
    assert cursor, "the first page of models should have a next page"
    return {"list models": ["/models?limit=50"],
            "list models, page 2": [f"/models?limit=50&cursor={cursor}"]}


def prepare_empty(client: httpx.Client, requests: int) -> Workload:
    """Through the API: two pages of models; ten of them with 51 versions, v50 in production."""
    active = [f"bench-{i:02d}" for i in range(ACTIVE)]
    for name in active:
        api(client, "POST", "/models", {"name": name})
        for _ in range(51):
            api(client, "POST", f"/models/{name}/versions", {"source": "s3://x"})
        for stage in ("staging", "production"):
            api(client, "POST", f"/models/{name}/versions/50/transitions", {"to_stage": stage})
    for i in range(101 - ACTIVE):
        api(client, "POST", "/models", {"name": f"idle-{i:03d}"})
    rng = random.Random(1)
    paths = {**list_paths(client),
             "list versions": [f"/models/{n}/versions?limit=50" for n in active],
             "read production": [f"/models/{n}/stages/production" for n in active],
             "read version": [f"/models/{rng.choice(active)}/versions/{rng.randint(1, 51)}"
                              for _ in range(requests)]}
    return Workload(paths, stage_versions(client, active, requests + WARMUP), active[:1])


def prepare_loaded(client: httpx.Client, requests: int, models: int, versions: int) -> Workload:
    """Random loaded models for every read; ten loaded models get staging versions to promote."""
    rng = random.Random(2)
    names = [model_name(rng.randint(1, models)) for _ in range(requests + WARMUP)]
    paths = {**list_paths(client),
             "list versions": [f"/models/{n}/versions?limit=50" for n in names],
             "read production": [f"/models/{n}/stages/production" for n in names],
             "read version": [f"/models/{n}/versions/{rng.randint(1, versions)}" for n in names]}
    active = [model_name(i) for i in rng.sample(range(1, models + 1), ACTIVE)]
    untouched = next(n for n in map(model_name, range(1, models + 1)) if n not in active)
    return Workload(paths, stage_versions(client, active, requests + WARMUP), [active[0], untouched])


@dataclass
class Target:
    """One served database: its server, a client, its workload and the client timings."""

    label: str
    server: Server
    client: httpx.Client
    work: Workload | None = None
    client_ms: dict[str, dict[str, float]] = field(default_factory=dict)

    def send(self, op: str, i: int, rid: str) -> float:
        """One request of ``op`` (the i-th); its client latency in ms."""
        assert self.work is not None
        if op == "promote":
            name, number = self.work.promotions[i]
            method, path, body = "POST", f"/models/{name}/versions/{number}/transitions", \
                {"to_stage": "production"}
        else:
            paths = self.work.paths[op]
            method, path, body = "GET", paths[i % len(paths)], None
        started = time.perf_counter()
        r = self.client.request(method, path, json=body, headers={"X-Request-ID": rid})
        elapsed = (time.perf_counter() - started) * 1000
        if r.status_code >= 300:
            raise RuntimeError(f"{self.label}: {method} {path}: {r.status_code} {r.text}")
        return elapsed


def measure(targets: Sequence[Target], requests: int) -> None:
    """Every operation in turn, one request at a time, alternating between the servers (which
    goes first alternates too), so load from elsewhere on the machine falls on both alike.
    Warm-up requests come first and are not kept."""
    for n, op in enumerate(OPERATIONS):
        for i in range(WARMUP + requests):
            for target in (targets if i % 2 == 0 else targets[::-1]):
                rid = f"{target.label}-{n}-{i}"
                ms = target.send(op, i, rid)
                if i >= WARMUP:
                    target.client_ms.setdefault(op, {})[rid] = ms


def settle(url: str, timeout: float = 300) -> None:
    """Wait until the in-process relay has relayed the events the preparation wrote."""
    deadline = time.monotonic() + timeout
    while asyncio.run(fetchval(url, "SELECT count(*) FROM outbox_events WHERE relayed_at IS NULL")):
        if time.monotonic() > deadline:
            raise RuntimeError("the relay did not catch up with the preparation's events")
        time.sleep(0.5)


def server_durations(log: Path) -> dict[str, float]:
    """duration_ms of every access log line, by request id."""
    found = {}
    for line in log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if isinstance(entry, dict) and entry.get("event") == "request" and "request_id" in entry:
            found[entry["request_id"]] = float(entry["duration_ms"])
    return found


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p * len(ordered)) - 1)]


@dataclass
class Result:
    client: list[float]
    server: list[float]

    def cells(self) -> str:
        return (f"{percentile(self.client, .5):6.2f} {percentile(self.client, .99):7.2f} "
                f"{percentile(self.server, .5):6.2f} {percentile(self.server, .99):7.2f}")


def run(empty_url: str, loaded_url: str, args: argparse.Namespace) -> dict[str, dict[str, Result]]:
    """Serve both databases side by side, prepare each through the API, measure them interleaved,
    verify audit chains; the access logs are read once the servers have stopped."""
    with contextlib.ExitStack() as dirs:
        targets = []
        with contextlib.ExitStack() as running:
            for label, url in (("empty", empty_url), ("loaded", loaded_url)):
                tmp = Path(dirs.enter_context(tempfile.TemporaryDirectory()))
                server = running.enter_context(run_server(url, tmp, workers=2, migrated=True))
                client = running.enter_context(
                    httpx.Client(base_url=server.api, headers=server.headers, timeout=120))
                targets.append(Target(label, server, client))
            empty, loaded = targets
            prepare(empty, lambda: prepare_empty(empty.client, args.requests))
            prepare(loaded, lambda: prepare_loaded(loaded.client, args.requests, args.models,
                                                   args.versions_per_model))
            for target in targets:
                settle(target.server.database_url)
            measure(targets, args.requests)
            for target in targets:
                assert target.work is not None
                for name in target.work.verify:
                    print(f"  {target.label}: GET /audit/verify?model={name} -> "
                          f"{verify(target.client, name)}")
        return {t.label: collect(t.server, t.client_ms) for t in targets}


def prepare(target: Target, make: Callable[[], Workload]) -> None:
    started = time.perf_counter()
    target.work = make()
    print(f"  {target.label}: prepared through the API in {time.perf_counter() - started:.0f} s "
          f"({len(target.work.promotions)} staging versions to promote)", flush=True)


def verify(client: httpx.Client, name: str) -> str:
    result = api(client, "GET", f"/audit/verify?model={name}")
    return f"ok={result['ok']} checked={result['checked']} first_bad_seq={result['first_bad_seq']}"


def collect(server: Server, client_ms: dict[str, dict[str, float]]) -> dict[str, Result]:
    durations = server_durations(server.log)
    results = {}
    for op, by_id in client_ms.items():
        missing = [rid for rid in by_id if rid not in durations]
        if missing:
            raise RuntimeError(f"{len(missing)} {op} requests have no access log line")
        results[op] = Result(list(by_id.values()), [durations[rid] for rid in by_id])
    return results


# -- the report -----------------------------------------------------------------------------------

def commit_label() -> str:
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout.strip()

    return git("rev-parse", "--short", "HEAD") + ("-dirty" if git("status", "--porcelain") else "")


def print_tables(stats: dict[str, tuple[int, int]], empty: dict[str, tuple[int, int]]) -> None:
    print(f"\n{'table':<20} {'empty rows':>11} {'loaded rows':>12} {'loaded size':>12}")
    for table, (rows, size) in stats.items():
        print(f"{table:<20} {empty[table][0]:>11,} {rows:>12,} {size / 2**20:>9,.0f} MiB")


def print_results(empty: dict[str, Result], loaded: dict[str, Result]) -> None:
    head = "client p50    p99 server p50    p99"
    print(f"\n{'':<21} {'empty database':^36} | {'loaded database':^36} |")
    print(f"{'operation (ms)':<21} {head} | {head} | ratio  within {TARGET}x")
    for op in OPERATIONS:
        ratio = percentile(loaded[op].server, .5) / percentile(empty[op].server, .5)
        print(f"{op:<21} {empty[op].cells():>36} | {loaded[op].cells():>36} | "
              f"{ratio:5.2f}  {'yes' if ratio <= TARGET else 'NO'}")
    print("ratio: server-side p50, loaded / empty (duration_ms of the access log)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", type=int, default=10_000)
    p.add_argument("--versions-per-model", type=int, default=100)
    p.add_argument("--requests", type=int, default=300, help="measured requests per operation")
    p.add_argument("--keep", action="store_true", help="keep the two databases (their URLs are printed)")
    args = p.parse_args()
    assert args.versions_per_model >= 51, "the versions list reads a page of 50 and needs one more"
    began = time.perf_counter()
    empty_url = asyncio.run(migrated_pg_database())
    loaded_url = asyncio.run(migrated_pg_database())
    try:
        postgres = asyncio.run(fetchval(empty_url, "SHOW server_version"))
        print(f"commit={commit_label()} postgresql={postgres} "
              f"cpus={os.cpu_count()} server=registry serve --workers 2 (in-process workers, "
              f"JSON access log) models={args.models:,} versions/model={args.versions_per_model} "
              f"requests/operation={args.requests} after {WARMUP} warm-up, one at a time")
        print(f"loading {args.models * args.versions_per_model:,} versions (asyncpg COPY, one "
              f"transaction; outbox events already relayed):", flush=True)
        report = asyncio.run(load(loaded_url, args.models, args.versions_per_model))
        stats = asyncio.run(table_stats(loaded_url))
        print(f"  loaded in {report.load_seconds:.0f} s (histories built and hash-chained in Python, "
              f"copied meanwhile), VACUUM (ANALYZE) {report.vacuum_seconds:.0f} s")
        results = run(empty_url, loaded_url, args)
        print_tables(stats, asyncio.run(table_stats(empty_url)))
        print_results(results["empty"], results["loaded"])
        print(f"\ntotal {time.perf_counter() - began:.0f} s")
    finally:
        if args.keep:
            print(f"kept: empty {empty_url}\n      loaded {loaded_url}")
        else:
            for url in (empty_url, loaded_url):
                asyncio.run(drop_pg_database(url))


if __name__ == "__main__":
    main()
