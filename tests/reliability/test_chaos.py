"""The chaos suite (issue 13): three ``serve`` replicas and two ``worker`` processes on one
PostgreSQL database behind a freezable proxy, signature-checking webhook receivers on loopback,
and 32 concurrent clients doing random legal and illegal operations across a few models for a
bounded time, while faults are injected: SIGKILL of a replica and of a worker mid-delivery, the
database stalled for seconds, a receiver that hangs, resets, answers 500, is down, or answers 410.

Afterwards the invariants are checked from the recorded requests and the database (see the
``checks_*`` modules); the summary is printed and written to ``chaos-summary.json`` (every
request to ``chaos-requests.jsonl``) under the test's tmp_path. The test fails listing every
violation by kind, with examples.

Short form (CI, under 2 minutes): ``.venv/bin/python -m pytest tests/reliability -s``.
Long form (minutes, more and longer faults): add ``--long`` (or set ``REGISTRY_CHAOS_LONG=1``).
``REGISTRY_CHAOS_SEED`` replays the clients' and faults' choices; ``REGISTRY_CHAOS_KEEP_DB=1`` keeps
the database for a post-mortem (its URL is printed).
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.receivers import Receiver
from tests.e2e.test_pipeline_cli import cli_env
from tests.freeze_proxy import FreezeProxy
from tests.reliability import checks_db, checks_http, checks_webhooks, report, setup
from tests.reliability.clients import Clients
from tests.reliability.cluster import Cluster
from tests.reliability.fault_receiver import FaultReceiver
from tests.reliability.faults import Faults
from tests.reliability.profile import LONG, SHORT, Profile
from tests.reliability.records import Recorder
from tests.support import REPO, drop_pg_database, migrated_pg_database


@pytest.mark.postgresql
async def test_chaos(tmp_path: Path, long_form: bool) -> None:
    profile = LONG if long_form else SHORT
    seed = int(os.environ.get("REGISTRY_CHAOS_SEED") or random.randrange(1 << 30))
    began = time.monotonic()
    database_url = await migrated_pg_database()
    try:
        with FreezeProxy.for_url(database_url) as proxy, Receiver() as good, FaultReceiver() as faulty:
            cluster = Cluster(proxy.url_for(database_url), tmp_path)
            try:
                doc = await _run(profile, seed, database_url, proxy, cluster, good, faulty, began, tmp_path)
            finally:
                await asyncio.to_thread(cluster.stop)
    finally:
        if os.environ.get("REGISTRY_CHAOS_KEEP_DB") == "1":  # for a post-mortem; drop it by hand
            print(f"-- database kept: {database_url}")
        else:
            await drop_pg_database(database_url)
    print(f"-- seed: {seed} (REGISTRY_CHAOS_SEED replays the clients' and the faults' choices)")
    violations = doc["violations"]
    assert not violations, "chaos violations (seed {}):\n{}".format(seed, "\n".join(
        f"  {k}: {v['count']}, e.g. {v['examples'][0]}" for k, v in violations.items()))


async def _run(profile: Profile, seed: int, database_url: str, proxy: FreezeProxy, cluster: Cluster,
               good: Receiver, faulty: FaultReceiver, began: float, tmp: Path) -> dict[str, Any]:
    await asyncio.to_thread(cluster.start)
    serve0 = cluster.serve_urls()[0]
    with setup.admin(serve0, cluster.token) as c:
        tokens = setup.make_tokens(c, cluster.token)
        names = setup.model_names(profile.models)
        subs = setup.subscribe(c, good, faulty, names)
        baseline = await setup.outbox_head(database_url)  # events after it are every subscriber's
        world = setup.make_models(c, names)
    for sub in subs:
        sub.baseline = baseline
    started = time.monotonic()

    recorder = Recorder()
    flaky = faulty.endpoints["flaky"]
    faults = Faults(profile, cluster, proxy, good, faulty, flaky, good.endpoints["gone"], seed)
    clients = Clients(world, recorder, tokens, cluster.serve_urls, seed)
    t0 = time.time()
    try:
        await asyncio.gather(clients.run(profile.clients, t0 + profile.duration), faults.run(t0))
    finally:
        faults.heal()
    loaded = time.monotonic()
    drained, drain_s = await checks_webhooks.drain(database_url, profile.drain_timeout)
    return await _check(profile, database_url, recorder, faults, subs, tokens, cluster, drained, drain_s, t0,
                        {"setup": round(started - began, 1), "load": round(loaded - started, 1),
                         "drain": round(drain_s, 1)}, tmp, began)


async def _check(profile: Profile, database_url: str, recorder: Recorder, faults: Faults,
                 subs: list[checks_webhooks.Sub], tokens: dict[str, str], cluster: Cluster, drained: bool,
                 drain_s: float, t0: float, wall: dict[str, float], tmp: Path, began: float) -> dict[str, Any]:
    v = report.Violations()
    records = recorder.snapshot()
    v.check(f"the outbox drains within {profile.drain_timeout:g} s once the faults stop")
    if not drained:
        v.add("outbox_not_drained", {"waited_s": round(drain_s, 1)})
    checks_http.check_answers(records, faults.log, v)
    figures: dict[str, Any] = {"idempotency": checks_http.check_idempotency(records, v)}
    snap = await checks_db.snapshot(database_url)
    figures.update(checks_db.check_versions(snap, v))
    checks_db.check_numbers_answered(records, v)
    figures["stage_change_transactions"] = checks_db.check_history(snap, v)
    checks_db.check_effects(snap, records, v)
    deliveries, statuses = await checks_webhooks.delivery_rows(database_url)
    figures["webhooks"] = checks_webhooks.check_deliveries(subs, snap, deliveries, statuses, v)
    figures["flaky_answers"] = _answers(subs)
    figures["stall_answers"] = checks_http.stall_answers(records, faults.log)
    figures["events"] = len(snap.outbox)
    figures["audit_entries"] = len(snap.audit)
    checked = time.monotonic()
    await asyncio.to_thread(_verify_chains, cluster, tokens["admin"], v)
    wall["verify_chains"] = round(time.monotonic() - checked, 1)
    figures["requests_per_second"] = round(len(records) / profile.duration, 1)
    wall["total"] = round(time.monotonic() - began, 1)
    doc = report.summary(profile.name, wall, records, [f.to_json() for f in faults.log], figures, v, t0)
    path = report.write(doc, records, [r for sub in subs for r in sub.received], tmp)
    print("\n" + report.render(doc) + f"\n-- summary: {path}")
    return doc


def _answers(subs: list[checks_webhooks.Sub]) -> dict[str, int]:
    """What the faulty subscriber answered: proof that each receiver fault was met."""
    flaky = next(s for s in subs if s.endpoint.name == "flaky")
    return dict(Counter("no answer (hang, reset)" if r.status is None else str(r.status) for r in flaky.received))


def _verify_chains(cluster: Cluster, admin_token: str, v: report.Violations) -> None:
    """The service's own verification, and the CLI's, which recomputes every hash itself. Each
    live replica is asked in turn: one that cannot answer is reported, not taken for a broken chain."""
    v.check("GET /api/v1/audit/verify (admin) is ok, and `python -m registry audit verify` exits 0")
    for url in cluster.serve_urls():
        r = httpx.get(url + "/api/v1/audit/verify", headers={"Authorization": f"Bearer {admin_token}"}, timeout=60)
        if r.status_code == 200:
            break
        v.add("audit_verify_unanswered_by_a_replica", {"server": url, "status": r.status_code, "body": r.text[:300]})
    if r.status_code != 200 or r.json().get("ok") is not True:
        v.add("audit_verify_failed", {"status": r.status_code, "body": r.text[:500]})
    # Not test_pipeline_cli.registry(): it allows 60 s; checking a long run's whole log gets 120.
    done = subprocess.run([sys.executable, "-m", "registry", "audit", "verify"], cwd=REPO,
                          env=cli_env(url, admin_token),
                          capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        v.add("audit_cli_verify_failed", {"server": url, "exit": done.returncode, "stdout": done.stdout[-300:],
                                          "stderr": done.stderr[-300:]})
