"""Every registry operation of ``mlflow.MlflowClient``, run by the real 3.x and 2.x clients
(``scripts/``, in their own venvs) against a real server on SQLite and on PostgreSQL. Each script
asserts what the client sees; each test then reads back, through the native API, what the server
recorded: the audit entries and events of every write (one set per call, in commit order, with
the right actor), and nothing for the calls that were refused."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BACKENDS, unique
from tests.mlflow.helpers import Registry, audit_changes, created, event_changes, model_dirs, moved, run_script

CLIENTS = ["3", "2"]
# Each test runs on each backend with each client ("sqlite-mlflow3", ...).
both = pytest.mark.parametrize(("backend", "client"), [(b, c) for b in BACKENDS for c in CLIENTS],
                               ids=[f"{b}-mlflow{c}" for b in BACKENDS for c in CLIENTS])
ServerOf = Callable[[str], Registry]
PythonOf = Callable[[str], Path]


def assert_recorded(registry: Registry, model: str, expected: list[set[tuple[Any, ...]]],
                    actors: set[str]) -> None:
    """The model's audit chain and its event feed both hold exactly these changes, one set per
    request in this order, made by these principals; and the chain verifies."""
    audit, events = registry.audit(model), registry.events(model)
    assert audit_changes(audit) == expected, [(e["action"], e["version"], e["before"], e["after"]) for e in audit]
    assert event_changes(events) == expected, [(e["type"], e["version"], e["data"]) for e in events]
    assert [e["request_id"] for e in audit] == [e["request_id"] for e in events]
    assert {e["actor"] for e in audit} | {e["actor"] for e in events} == actors
    assert [e["seq"] for e in audit] == list(range(1, len(audit) + 1))
    assert [e["sequence"] for e in events] == list(range(1, len(events) + 1))
    assert registry.verify(model)["ok"] is True


def native(registry: Registry, path: str) -> dict[str, Any] | None:
    """GET on the native API; None for a 404."""
    with registry.http() as c:
        r = c.get(path)
    if r.status_code == 404:
        return None
    assert r.status_code == 200, r.text
    return r.json()


@both
def test_registered_models(backend: str, client: str, mlflow_server: ServerOf, mlflow_python: PythonOf) -> None:
    registry = mlflow_server(backend)
    out = run_script(mlflow_python(client), "registered_models.py", registry, unique(f"rm{client}"))
    assert out["mlflow_version"].startswith(f"{client}.")
    alpha, beta, gamma, gamma2, delta, epsilon = (out[k] for k in ("alpha", "beta", "gamma", "gamma2",
                                                                   "delta", "epsilon"))
    messages = out["messages"]
    assert "alias 'latest' is reserved" in messages["reserved"]["latest"], messages
    assert "alias 'v1' is reserved" in messages["reserved"]["v1"], messages
    assert "production" in messages["production_kept"], messages

    model = native(registry, f"/models/{alpha}")
    assert model is not None
    assert (model["description"], model["tags"], model["aliases"]) == (
        "updated description", {"team": "fraud", "owner": "ml-platform"}, ["champion"])
    assert native(registry, f"/models/{gamma}") is None and native(registry, f"/models/{gamma2}") is not None
    assert native(registry, f"/models/{delta}") is None and native(registry, f"/models/{epsilon}") is None
    assert registry.stages(alpha) == {1: "staging", 2: "production", 3: "none"}

    assert_recorded(registry, alpha, [
        {("model.created", None)},
        {("model.updated", None)},  # description
        {("model.updated", None)},  # tag set
        {("model.updated", None)},  # tag deleted (deleting a tag it never had wrote nothing)
        {("model_version.created", 1)}, {("model_version.created", 2)}, {("model_version.created", 3)},
        {moved(1, "none", "staging")}, {moved(2, "none", "staging")}, {moved(2, "staging", "production")},
        {("model_version.alias_set", 2, "champion")}, {("model_version.alias_set", 1, "challenger")},
        {("model_version.alias_set", 3, "challenger")}, {("model_version.alias_deleted", 3, "challenger")},
        # the reserved aliases, the missing version and deleting a model in production wrote nothing
    ], {"admin"})
    tags = [(e["before"], e["after"]) for e in registry.audit(alpha) if e["action"] == "model.updated"]
    assert tags == [({"description": "first model"}, {"description": "updated description"}),
                    ({"tags": {"team": "fraud", "tier": "gold"}},
                     {"tags": {"team": "fraud", "tier": "gold", "owner": "ml-platform"}}),
                    ({"tags": {"team": "fraud", "tier": "gold", "owner": "ml-platform"}},
                     {"tags": {"team": "fraud", "owner": "ml-platform"}})]
    # The rename is one update of the same chain; the old name's audit is the new name's.
    renames = [(e["before"], e["after"]) for e in registry.audit(gamma2) if e["action"] == "model.updated"]
    assert renames == [({"name": gamma}, {"name": gamma2})]
    assert_recorded(registry, gamma2, [*created(), {("model.updated", None)}], {"admin"})
    assert_recorded(registry, beta, [*created(), {("model.updated", None)}], {"admin"})
    assert_recorded(registry, delta, [*created([1]), {("model.deleted", None)}], {"admin"})
    assert_recorded(registry, epsilon, [*created(), {("model.deleted", None)}], {"admin"})


@both
def test_model_versions(backend: str, client: str, mlflow_server: ServerOf, mlflow_python: PythonOf) -> None:
    registry = mlflow_server(backend)
    out = run_script(mlflow_python(client), "model_versions.py", registry, unique(f"mv{client}"))
    m, other, refusals = out["model"], out["other"], out["refusals"]
    assert "allowed stages: Staging, Archived" in refusals["none_to_production"], refusals
    assert "allowed stages: Archived" in refusals["production_to_staging"], refusals
    assert "gates failed" in refusals["rollback"] and "comment" in refusals["rollback"], refusals
    assert out["stages"] == {"1": "Staging", "2": "Archived", "3": "Archived", "4": "Production", "6": "None"}

    assert registry.stages(m) == {1: "staging", 2: "archived", 3: "archived", 4: "production", 6: "none"}
    assert native(registry, f"/models/{m}/versions/5") is None  # deleted: hidden
    v1 = native(registry, f"/models/{m}/versions/1")
    assert v1 is not None
    assert (v1["description"], v1["tags"], v1["run_id"]) == ("better", {"framework": "sklearn", "validated": "yes"},
                                                             out["run_ids"][0])
    assert_recorded(registry, m, [
        *created(range(1, 6)),
        {("model_version.updated", 1)}, {("model_version.updated", 1)}, {("model_version.updated", 1)},
        {moved(1, "none", "staging")}, {moved(2, "none", "staging")},
        # archive_existing_versions with Staging: the other staging versions, in the same call
        {moved(3, "none", "staging"), moved(1, "staging", "archived"), moved(2, "staging", "archived")},
        {moved(3, "staging", "production")},
        {moved(4, "none", "staging")},
        {moved(4, "staging", "production"), moved(3, "production", "archived")},  # the incumbent
        # every refused move wrote nothing
        {moved(5, "none", "staging")}, {moved(5, "staging", "none")}, {moved(1, "archived", "staging")},
        {("model_version.alias_set", 5, "candidate")},
        {("model_version.alias_deleted", 5, "candidate"), ("model_version.deleted", 5)},
        {("model_version.created", 6)},
    ], {"admin"})
    promoted = [e for e in registry.events(m) if e["version"] == 4 and e["data"].get("to_stage") == "production"]
    assert [e["data"]["archived"] for e in promoted] == [[3]]
    assert_recorded(registry, other, created([1]), {"admin"})


@both
def test_errors_and_auth(backend: str, client: str, mlflow_server: ServerOf, mlflow_python: PythonOf) -> None:
    registry = mlflow_server(backend)
    prefix = unique(f"err{client}")
    out = run_script(mlflow_python(client), "errors_and_auth.py", registry, prefix,
                     extra={"ROLE_TOKENS": json.dumps(registry.tokens)})
    m, taken, messages = out["model"], out["taken"], out["messages"]
    assert "allowed stages: Staging, Archived" in messages["none_to_production"]
    assert m in messages["missing_version"] and f"{prefix}-missing" in messages["missing_model"]
    assert out["stages"] == {"1": "Production", "4": "None", "5": "None"}

    # Refused calls wrote nothing: not the viewer's, not the bad tokens', not the duplicates.
    for never in (f"{prefix}-viewer", f"{prefix}-bad", f"{prefix}-missing"):
        assert native(registry, f"/models/{never}") is None
    assert_recorded(registry, m, [
        *created([1, 2]),
        {("model_version.deleted", 2)}, {("model_version.created", 3)},
        {("model_version.deleted", 3)}, {("model_version.created", 4)},
        {("model_version.created", 5)},  # the editor's
        {moved(1, "none", "staging")},  # the stager's
        {moved(1, "staging", "production")},  # the releaser's, through Basic credentials
    ], {"admin", "mlflow-editor", "mlflow-stager", "mlflow-releaser"})
    by_actor = {(e["action"], e["version"]): e["actor"] for e in registry.audit(m)}
    assert by_actor[("model_version.created", 5)] == "mlflow-editor"
    assert [e["actor"] for e in registry.audit(m) if e["action"] == "model_version.stage_changed"] == [
        "mlflow-stager", "mlflow-releaser"]
    assert_recorded(registry, taken, created(), {"admin"})


@both
def test_register_model_and_models_uris(backend: str, client: str, mlflow_server: ServerOf,
                                        mlflow_python: PythonOf, tmp_path: Path) -> None:
    """``register_model`` returns at once (the version is READY when created) and ``models:/``
    URIs resolve through the registry alone, by version, alias, stage and ``latest``. The
    script authenticates with Basic credentials, the releaser's token as password."""
    registry = mlflow_server(backend)
    dirs = model_dirs(tmp_path, 2)
    out = run_script(mlflow_python(client), "register_and_resolve.py", registry, unique(f"rr{client}"), *dirs,
                     basic=registry.tokens["releaser"])
    local, remote = out["local"], out["remote"]
    first, second = ((Path(d) / "weights.txt").read_text() for d in dirs)
    assert out["downloads"][f"models:/{local}@champion"] == first
    assert out["downloads"][f"models:/{local}/Production"] == first
    assert out["downloads"][f"models:/{local}/latest"] == second
    assert max(out["timings"].values()) < 5, out["timings"]

    v1 = native(registry, f"/models/{local}/versions/1")
    assert v1 is not None and v1["source"] == dirs[0]
    assert_recorded(registry, remote, created([1, 2]), {"mlflow-releaser"})
    assert_recorded(registry, local, [
        *created([1, 2]),
        {moved(1, "none", "staging")}, {moved(1, "staging", "production")},
        {("model_version.alias_set", 1, "champion")}, {moved(2, "none", "staging")},
    ], {"mlflow-releaser"})
