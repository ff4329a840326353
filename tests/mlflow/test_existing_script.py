"""A release script a team already runs against MLflow's registry (``scripts/existing_registry_script.py``)
runs unchanged, with the 3.x and the 2.x client, and each of its calls lands in the native feeds:
the audit chain and the event feed say who created, promoted, archived and aliased what."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import BACKENDS, unique
from tests.mlflow.helpers import (
    STAGE_CHANGED,
    Registry,
    audit_changes,
    created,
    event_changes,
    model_dirs,
    moved,
)
from tests.mlflow.helpers import run_script as run_client_script

# The same file for both clients, given only its command-line arguments and the MLFLOW_* variables.
SCRIPT = "existing_registry_script.py"


@pytest.mark.parametrize(("backend", "client"), [(b, c) for b in BACKENDS for c in ("3", "2")],
                         ids=[f"{b}-mlflow{c}" for b in BACKENDS for c in ("3", "2")])
def test_existing_registry_script_runs_unchanged(backend: str, client: str, tmp_path: Path,
                                                 mlflow_server: Callable[[str], Registry],
                                                 mlflow_python: Callable[[str], Path]) -> None:
    registry = mlflow_server(backend)
    name, run_prefix = unique("fraud-detector"), unique("train")
    dirs = model_dirs(tmp_path, 2)

    out = run_client_script(mlflow_python(client), SCRIPT, registry, "--model", name, "--artifacts", *dirs,
                            "--run-prefix", run_prefix, token=registry.tokens["releaser"])

    # What the script read back: version 2 released, by stage, by alias and through models:/.
    assert (out["production"], out["champion"]) == ("2", "2")
    assert out["served_weights"] == (Path(dirs[1]) / "weights.txt").read_text()
    assert out["by_run"] == {f"{run_prefix}-1": [[name, "1", "Archived"]],
                             f"{run_prefix}-2": [[name, "2", "Production"]]}
    assert out["champion_tags"] == {"framework": "xgboost", "validation_status": "passed", "metric.auc": "0.92"}
    assert registry.stages(name) == {1: "archived", 2: "production"}

    # What the server recorded: every write, one set per call, by the releaser.
    expected = [
        *created([1, 2]),
        {moved(1, "none", "staging")}, {moved(1, "staging", "production")},
        {("model_version.alias_set", 1, "champion")},
        {moved(2, "none", "staging")},
        {moved(2, "staging", "production"), moved(1, "production", "archived")},  # the incumbent, same call
        {("model_version.alias_set", 2, "champion")},
    ]
    audit, events = registry.audit(name), registry.events(name)
    assert audit_changes(audit) == expected, [(e["action"], e["version"], e["before"], e["after"]) for e in audit]
    assert event_changes(events) == expected, [(e["type"], e["version"], e["data"]) for e in events]
    assert {e["actor"] for e in audit} == {e["actor"] for e in events} == {"mlflow-releaser"}
    assert [e["type"] for e in events] == [e["action"] for e in audit]

    first = audit[0]["after"]
    assert (first["name"], first["tags"]) == (name, {"team": "risk", "use-case": "fraud"})
    v1 = next(e["after"] for e in audit if e["action"] == "model_version.created" and e["version"] == 1)
    assert (v1["source"], v1["run_id"]) == (dirs[0], f"{run_prefix}-1")
    assert v1["tags"] == {"framework": "xgboost", "validation_status": "passed", "metric.auc": "0.91"}
    promotion = next(e["data"] for e in events if e["type"] == STAGE_CHANGED and e["version"] == 2
                     and e["data"]["to_stage"] == "production")
    assert (promotion["trigger"], promotion["archived"]) == ("promote", [1])
    incumbent = next(e["data"] for e in events if e["type"] == STAGE_CHANGED and e["version"] == 1
                     and e["data"]["to_stage"] == "archived")
    assert (incumbent["from_stage"], incumbent["trigger"], incumbent["superseded_by"]) == ("production", "archive", 2)
    alias_moved = events[-1]["data"]
    assert (alias_moved["alias"], alias_moved["previous_version"]) == ("champion", 1)
    assert registry.verify(name)["ok"] is True
