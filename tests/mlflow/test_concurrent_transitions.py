"""32 truly concurrent ``MlflowClient.transition_model_version_stage(..., "Production",
archive_existing_versions=True)`` calls (the 3.x client, one thread per version released by a
barrier) against ``python -m registry serve --workers 2`` on PostgreSQL: the promotions serialise
on the model's row, so exactly one version ends in production, each one promoted before it is
archived by its successor's call, every call is answered without a 5xx, and the audit chain
verifies. The test prints the outcome counts and how many calls the server had in flight."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import unique
from tests.mlflow.helpers import STAGE_CHANGED, Registry, run_script
from tests.support import max_in_flight, request_interval

N = 32
TRANSITION_PATH = "/model-versions/transition-stage"


def server_intervals(log_text: str, path_end: str) -> list[tuple[float, float, int]]:
    """(start, end, status) of each request to a path, from the server's access lines."""
    found = []
    for line in log_text.splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") == "request" and str(entry.get("path", "")).endswith(path_end):
            found.append((*request_interval(entry), int(entry["status"])))
    return found


@pytest.mark.postgresql
def test_32_concurrent_mlflow_promotions_leave_one_production_version(
        mlflow_server: Callable[[str], Registry], mlflow_python: Callable[[str], Path]) -> None:
    registry = mlflow_server("postgresql")  # two HTTP workers
    name = unique("mlflow-conc")
    log_start = registry.log_mark()

    out = run_script(mlflow_python("3"), "concurrent_transitions.py", registry, name, str(N),
                     extra={"MLFLOW_HTTP_POOL_MAXSIZE": str(N)})  # a connection per thread

    outcomes: list[dict[str, Any]] = out["outcomes"]
    results = Counter(o["result"] for o in outcomes)
    # The 32 promotion calls are the last 32 transition-stage requests (the staging moves before
    # them ran one at a time).
    log = registry.server.log.read_bytes()[log_start:].decode(errors="replace")
    calls = server_intervals(log, TRANSITION_PATH)[-N:]
    statuses = Counter(status for *_, status in calls)
    in_server = max_in_flight([(start, end) for start, end, _ in calls])
    in_client = max_in_flight([(o["started"], o["ended"]) for o in outcomes])
    wall = max(o["ended"] for o in outcomes) - min(o["started"] for o in outcomes)
    print(f"\n[postgresql, 2 workers] {N} concurrent MLflow promotions: outcomes {dict(results)}; "
          f"HTTP statuses {dict(statuses)}; max in flight {in_client} (client) / {in_server} (server); "
          f"wall {wall * 1000:.0f} ms; production: version {out['production']}")

    assert len(outcomes) == N and len(calls) == N
    assert "failed" not in results, [o for o in outcomes if o["result"] == "failed"]  # no 5xx, no non-JSON error
    assert all(s < 500 for s in statuses), statuses
    assert in_server >= 8 and in_client >= 8, "the calls did not overlap"
    # Each version is promoted from staging once; a promotion archives only the incumbent
    # (production), so no call finds its version moved: all 32 succeed, one after another.
    assert results == Counter({"ok": N}), [o for o in outcomes if o["result"] != "ok"]
    assert all(o["stage"] == "Production" for o in outcomes)

    stages = registry.stages(name)
    [winner] = [v for v, s in stages.items() if s == "production"]
    assert out["production"] == out["latest_production"] == [winner]
    assert {v: s for v, s in stages.items() if v != winner} == {v: "archived" for v in range(1, N + 1) if v != winner}

    # The round in the audit chain: per call, its promotion and the incumbent it archived, one
    # transaction each, chaining into one succession that ends with the winner.
    round_ = [e for e in registry.audit(name) if e["action"] == STAGE_CHANGED
              and e["after"]["stage"] in ("production", "archived")]
    by_call: dict[str, list[tuple[int, str, str]]] = {}
    for e in round_:
        by_call.setdefault(e["request_id"], []).append((e["version"], e["before"]["stage"], e["after"]["stage"]))
    assert len(by_call) == N
    succession: list[int] = []
    for moves in by_call.values():
        promoted = [v for v, before, after in moves if (before, after) == ("staging", "production")]
        archived = [v for v, before, after in moves if (before, after) == ("production", "archived")]
        assert len(promoted) == 1 and len(moves) == 1 + len(archived), moves
        assert archived == succession[-1:], (moves, succession)  # the previous winner, and only it
        succession.append(promoted[0])
    assert sorted(succession) == list(range(1, N + 1)) and succession[-1] == winner

    verified = registry.verify(name)
    assert verified["ok"] is True and verified["checked"] == 1 + 2 * N + N + (N - 1), verified
    assert registry.verify()["ok"] is True
