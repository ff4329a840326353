"""``python -m registry import mlflow`` against a real ``mlflow server`` (3.17.2, its SQLite store and
proxied artifacts in a temporary folder), filled once through MLflow's own client: models with
gaps from deleted versions (the last one included), two Production versions of one model,
Staging and Archived ones, aliases, tags, a name with a quote, a prompt, and real files under a
run and under a logged model. Each import runs as its own process on a fresh registry database
(SQLite and PostgreSQL), and the registry is read back version by version."""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from registry.bootstrap import Container
from registry.domain.errors import ValidationError
from registry.domain.stages import Stage
from registry.mlflow_import import Importer, MlflowError, MlflowReader, MlflowUnreachable, import_mlflow
from registry.services.aliases import set_alias
from registry.services.artifacts import list_artifacts
from registry.services.audit import verify_audit
from registry.services.commands import CreateModel, RegisterModelVersion, SetAlias
from registry.services.imports import ImportModel, ImportModelVersion, Origin, import_model, import_model_version
from registry.services.models import create_model
from registry.services.ports import Actor, AuditQuery
from registry.services.versions import register_model_version
from tests.mlflow.env import SERVER, python_of
from tests.support import REPO, end_group, free_port

ADMIN = Actor("test", "test-request")
MODELS = ["churn", "fraud", "o'brien", "with-files"]
# What the fill made: the live versions of each model and the stage each has here.
STAGES = {
    "fraud": {1: "archived", 3: "production", 4: "archived", 5: "staging"},  # 4 lost production to 3
    "churn": {1: "staging", 2: "staging", 3: "none"},
    "o'brien": {1: "production"},
    "with-files": {1: "production", 2: "none"},
}
ALIASES = {"fraud": {"champion": 3, "challenger": 5}, "churn": {"stable": 2}, "o'brien": {},
           "with-files": {"serving": 1}}
TOTAL = sum(len(v) for v in STAGES.values())

FILL = r'''
"""Fill an MLflow server through its own client; print what was made (JSON, last line)."""
import json, sys, time, warnings
warnings.filterwarnings("ignore")
import mlflow, requests
from mlflow import MlflowClient

url, files = sys.argv[1], sys.argv[2]
mlflow.set_tracking_uri(url)
client = MlflowClient(url)


def versions(name, count, run_id):
    for n in range(1, count + 1):
        client.create_model_version(name, f"s3://bucket/{name}/{n}", run_id=run_id,
                                    tags={"n": str(n), "kind": "test"}, description=f"{name} v{n}")


def move(name, number, stage):
    client.transition_model_version_stage(name, str(number), stage, archive_existing_versions=False)
    time.sleep(0.05)  # distinct last_updated_timestamps


with mlflow.start_run() as run:
    mlflow.log_artifacts(f"{files}/run", "model")
run_id = run.info.run_id

client.create_registered_model("fraud", tags={"team": "risk"}, description="fraud detector")
versions("fraud", 6, run_id)
client.delete_model_version("fraud", "2")
client.delete_model_version("fraud", "6")  # the last one: MLflow's REST API never shows it again
move("fraud", 1, "Archived")
move("fraud", 4, "Production")
move("fraud", 3, "Production")  # updated after 4: it keeps production here
move("fraud", 5, "Staging")
client.set_model_version_tag("fraud", "3", "validated", "yes")
client.set_registered_model_alias("fraud", "champion", "3")
client.set_registered_model_alias("fraud", "challenger", "5")

client.create_registered_model("churn", tags={"team": "growth"})
versions("churn", 3, None)
move("churn", 1, "Staging")
move("churn", 2, "Staging")
client.set_registered_model_alias("churn", "stable", "2")

client.create_registered_model("o'brien")  # a quote: MLflow's filters cannot escape it
versions("o'brien", 1, None)
move("o'brien", 1, "Production")

client.create_registered_model("with-files", description="real files")
client.create_model_version("with-files", f"{run.info.artifact_uri}/model", run_id=run_id)
logged = mlflow.initialize_logged_model(name="logged")
client.log_model_artifacts(logged.model_id, f"{files}/logged")
mlflow.finalize_logged_model(logged.model_id, "READY")
client.create_model_version("with-files", f"models:/{logged.model_id}", run_id=run_id,
                            model_id=logged.model_id)
move("with-files", 1, "Production")
client.set_registered_model_alias("with-files", "serving", "1")

# A prompt is a registered model tagged so: never imported.
made = requests.post(url + "/api/2.0/mlflow/registered-models/create", json={
    "name": "a-prompt", "tags": [{"key": "mlflow.prompt.is_prompt", "value": "true"}]})
made.raise_for_status()
print(json.dumps({"run_id": run_id, "logged_model": logged.model_id}))
'''


@dataclass
class Source:
    """The filled MLflow server, and the files it holds (version of with-files -> path -> sha256)."""

    url: str
    run_id: str
    logged_model: str
    files: dict[int, dict[str, str]]
    total_bytes: int

    def get(self, path: str, **params: Any) -> dict[str, Any]:
        r = httpx.get(f"{self.url}/api/2.0/mlflow/{path}", params=params, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()

    def versions(self, name: str) -> list[dict[str, Any]]:
        like = name.replace("'", "_")
        found = self.get("model-versions/search", filter=f"name LIKE '{like}'")["model_versions"]
        return [v for v in found if v["name"] == name]

    def model(self, name: str) -> dict[str, Any]:
        return self.get("registered-models/get", name=name)["registered_model"]


def _write_files(root: Path) -> tuple[dict[int, dict[str, str]], int]:
    """Version 1 of with-files: a run's artifacts (nested); version 2: a logged model's."""
    made = {1: {"MLmodel": b"flavors: {}\n", "data/weights.bin": os.urandom(300_000),
                "data/nested/config.json": b'{"layers": 3}'},
            2: {"MLmodel": b"flavors: {python_function: {}}\n", "model.pkl": os.urandom(4096)}}
    for version, files in made.items():
        for path, data in files.items():
            target = root / ("run" if version == 1 else "logged") / path
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
    return ({v: {p: hashlib.sha256(d).hexdigest() for p, d in files.items()} for v, files in made.items()},
            sum(len(d) for files in made.values() for d in files.values()))


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Source]:
    """One `mlflow server` for the module, filled once."""
    python = python_of(SERVER)
    data = tmp_path_factory.mktemp("mlflow-source")
    files, total_bytes = _write_files(data / "files")
    url = f"http://127.0.0.1:{free_port()}"
    log = data / "mlflow.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(python.parent / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{data}/mlflow.db",
             "--artifacts-destination", str(data / "artifacts"), "--host", "127.0.0.1",
             "--port", url.rsplit(":", 1)[1], "--workers", "1"],
            cwd=data, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_healthy(url, proc, log)
        (data / "fill.py").write_text(FILL)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "REGISTRY_"))}
        fill = subprocess.run([str(python), str(data / "fill.py"), url, str(data / "files")], cwd=data,
                              env={**env, "PYTHONWARNINGS": "ignore"}, capture_output=True, text=True,
                              timeout=300)
        assert fill.returncode == 0, fill.stdout[-3000:] + fill.stderr[-5000:]
        made = json.loads(fill.stdout.strip().splitlines()[-1])
        yield Source(url, made["run_id"], made["logged_model"], files, total_bytes)
    finally:
        end_group(proc)


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"mlflow server exited:\n{log.read_text()[-4000:]}"
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"mlflow server not up after {timeout}s:\n{log.read_text()[-4000:]}")



def run_import(database_url: str, data_dir: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "REGISTRY_"))}
    env.update(REGISTRY_DATABASE_URL=database_url, REGISTRY_DATA_DIR=str(data_dir),
               REGISTRY_LOG_FORMAT="json")
    return subprocess.run([sys.executable, "-m", "registry", "import", "mlflow", "--from", url, *args],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def report_of(proc: subprocess.CompletedProcess[str], code: int = 0) -> dict[str, Any]:
    assert proc.returncode == code, f"exit {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout)


def ms(at: int) -> datetime:
    return datetime.fromtimestamp(at / 1000, UTC)


# -- reading the registry back -------------------------------------------------------------------

async def here(container: Container, name: str) -> dict[str, Any]:
    """The model, its live versions by number, its aliases, and its chain's audit and events."""
    async with container.uow(ADMIN, write=False) as uow:
        model = await uow.repo.get_model(name)
        assert model is not None, f"{name} is not here"
        chain = await uow.repo.chain_for_model_name(name)
        assert chain is not None
        return {"model": model,
                "versions": {v.version: v for v in await uow.repo.list_versions(model, None, None, [], 0, 1000)},
                "aliases": {a: r.version for a, r in await uow.repo.list_aliases(model, None, None)},
                "audit": await uow.repo.audit_entries(AuditQuery(chain=chain), None, 10_000),
                "events": await uow.repo.events(chain, 0, 10_000)}


async def model_names(container: Container) -> list[str]:
    async with container.uow(ADMIN, write=False) as uow:
        return [m.name for m in await uow.repo.list_models(None, None, 1000)]


async def audit_heads(container: Container) -> list[dict[str, Any]]:
    async with container.uow(ADMIN, write=False) as uow:
        return await uow.repo.audit_heads(AuditQuery(include_system=True))


async def assert_copied(container: Container, source: Source, name: str) -> None:
    """Version by version: what MLflow holds is what is here, with one import entry and event each."""
    theirs, mine = source.model(name), await here(container, name)
    model = mine["model"]
    assert (model.description, model.tags) == (theirs.get("description", ""),
                                                 {t["key"]: t["value"] for t in theirs.get("tags", [])})
    assert model.created_at == ms(theirs["creation_timestamp"])
    versions = {int(v["version"]): v for v in source.versions(name)}
    assert sorted(mine["versions"]) == sorted(versions) == sorted(STAGES[name]), "numbers and gaps"
    assert {n: v.stage.value for n, v in mine["versions"].items()} == STAGES[name]
    for number, v in versions.items():
        got = mine["versions"][number]
        assert (got.source, got.run_id, got.description) == (v["source"], v["run_id"] or None,
                                                             v["description"]), (name, number)
        assert got.tags == {t["key"]: t["value"] for t in v.get("tags", [])}
        assert (got.created_at, got.stage_since) == (ms(v["creation_timestamp"]),
                                                     ms(v["last_updated_timestamp"]))
        assert got.created_by == "import:mlflow", "MLflow's OSS server records no users"
        assert (got.sealed_at is not None) == (got.stage.value != "none"), "files frozen out of none"
    assert mine["aliases"] == ALIASES[name] == {a["alias"]: int(a["version"]) for a in theirs.get("aliases", [])}
    _assert_one_import_each(mine, versions, source.url)


async def print_side_by_side(container: Container, source: Source) -> None:
    """Every version as MLflow holds it and as it is here (for the record; the asserts are above)."""
    print(f"\n{'model':<11} {'v':>2}  {'MLflow stage':<12} {'here':<10} {'source':<44} run id / tags / aliases here")
    for name in MODELS:
        mine = await here(container, name)
        aliases = {n: [a for a, v in mine["aliases"].items() if v == n] for n in mine["versions"]}
        for v in sorted(source.versions(name), key=lambda v: int(v["version"])):
            got = mine["versions"][int(v["version"])]
            print(f"{name:<11} {v['version']:>2}  {v['current_stage']:<12} {got.stage.value:<10} "
                  f"{got.source[:44]:<44} {got.run_id or '-'} {got.tags or ''} {aliases[got.version] or ''}")


def _assert_one_import_each(mine: dict[str, Any], versions: dict[int, dict[str, Any]], url: str) -> None:
    entries = [e for e in mine["audit"] if e["action"] == "model_version.imported"]
    events = [e for e in mine["events"] if e["type"] == "model_version.imported"]
    assert sorted(e["version"] for e in entries) == sorted(e["version"] for e in events) == sorted(versions)
    for entry in entries:
        v, imported = versions[entry["version"]], entry["after"]["imported"]
        assert entry["actor"] == "import:mlflow"
        assert (imported["from"], imported["created_by"]) == (url, None)
        assert datetime.fromisoformat(imported["created_at"]) == ms(v["creation_timestamp"])
        assert datetime.fromisoformat(imported["updated_at"]) == ms(v["last_updated_timestamp"])
    created = [e for e in mine["audit"] if e["action"] in ("model_version.created", "model_version.stage_changed")]
    assert created == [], "an import neither registers nor moves: it imports"


# -- the tests -----------------------------------------------------------------------------------

async def test_an_import_copies_every_version_finishes_a_cut_off_run_and_a_rerun_changes_nothing(
        source: Source, container: Container, database_url: str, tmp_path: Path) -> None:
    empty = await audit_heads(container)
    dry = report_of(run_import(database_url, tmp_path, source.url, "--dry-run", "--json"))
    assert (sorted(dry["models_created"]), dry["versions_imported"]) == (MODELS, TOTAL)
    assert dry["production"] == [{"model": "fraud", "kept": 3, "archived": [4]}]
    assert await model_names(container) == [] and await audit_heads(container) == empty, "a dry run changes nothing"

    await a_run_cut_off_after_two_versions_of_fraud(container, source)
    full = run_import(database_url, tmp_path, source.url, "--json")
    report = report_of(full)
    assert report["models_present"] == ["fraud"], "the cut-off run made it"
    assert sorted(report["models_created"]) == ["churn", "o'brien", "with-files"]
    assert (report["versions_imported"], report["versions_present"]) == (TOTAL - 2, 2)
    assert report["production"] == [{"model": "fraud", "kept": 3, "archived": [4]}]
    assert (report["aliases_set"], report["aliases_present"]) == (3, 1), "champion came with the cut-off run"
    assert (report["conflicts"], report["failures"]) == ([], [])
    assert "] fraud: 4 versions (2 new, 2 already here)" in full.stderr
    assert "] churn: new model, 3 versions (3 new, 0 already here)" in full.stderr
    for name in MODELS:
        await assert_copied(container, source, name)
    await print_side_by_side(container, source)
    fraud = await here(container, "fraud")
    assert fraud["model"].last_version == 5, "6 was deleted last: MLflow's API shows no trace of it"
    (fourth,) = [e for e in fraud["audit"] if e["action"] == "model_version.imported" and e["version"] == 4]
    assert "beside version 3" in fourth["after"]["imported"]["stage_note"]
    assert "a-prompt" not in await model_names(container)

    heads = await audit_heads(container)
    again = report_of(run_import(database_url, tmp_path, source.url, "--json"))
    assert (again["versions_imported"], again["versions_present"], again["models_created"]) == (0, TOTAL, [])
    assert (again["aliases_set"], again["aliases_present"]) == (0, 4)
    assert await audit_heads(container) == heads, "a re-run writes nothing"
    verified = await verify_audit(None, container.uow(ADMIN, write=False))
    assert verified.ok and verified.checked > TOTAL, verified


class CutOff(MlflowReader):
    """MLflow as an import killed after fraud's first two versions had seen it."""

    async def models(self) -> list[dict[str, Any]]:
        return [m for m in await super().models() if m["name"] == "fraud"]

    async def versions(self, name: str) -> list[dict[str, Any]]:
        return (await super().versions(name))[:2]


async def a_run_cut_off_after_two_versions_of_fraud(container: Container, source: Source) -> None:
    """What such a run leaves: the model, its versions 1 and 3."""
    reader = CutOff(source.url, httpx.AsyncClient())
    try:
        report = await Importer(reader, container, progress=io.StringIO()).run()
    finally:
        await reader.aclose()
    assert (report.models_created, report.versions_imported) == (["fraud"], 2)


async def test_numbers_and_aliases_taken_here_by_others_are_conflicts_left_alone(
        source: Source, container: Container, database_url: str, tmp_path: Path) -> None:
    await create_model(CreateModel("churn"), container.uow(ADMIN))
    for n in (1, 2):
        await register_model_version(RegisterModelVersion("churn", f"s3://here/{n}"), container.uow(ADMIN))
    report_of(run_import(database_url, tmp_path, source.url, "--model", "fraud", "--json"))
    await set_alias(SetAlias("fraud", "challenger", 3), container.uow(ADMIN))  # moved here since

    proc = run_import(database_url, tmp_path, source.url, "--model", "churn", "--model", "fraud")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "conflict: churn version 1: the number is taken here by a version registered here" in proc.stdout
    assert "conflict: churn version 2: the number is taken here" in proc.stdout
    assert "conflict: churn version 2: alias 'stable' not set: its version is not here" in proc.stdout
    assert "conflict: fraud version 5: alias 'challenger' points at version 3 here; left there" in proc.stdout
    churn = await here(container, "churn")
    assert {n: v.source for n, v in churn["versions"].items()} == {1: "s3://here/1", 2: "s3://here/2",
                                                                   3: "s3://bucket/churn/3"}
    assert churn["aliases"] == {}
    assert (await here(container, "fraud"))["aliases"] == {"champion": 3, "challenger": 3}


async def test_copy_artifacts_stores_each_file_with_its_sha256_and_seals_versions_out_of_none(
        source: Source, container: Container, database_url: str, tmp_path: Path) -> None:
    dry = report_of(run_import(database_url, tmp_path, source.url, "--model", "with-files",
                               "--copy-artifacts", "--dry-run", "--json"))
    assert (dry["files_copied"], dry["versions_sealed"]) == (5, 1)
    assert await model_names(container) == []

    report = report_of(run_import(database_url, tmp_path, source.url, "--model", "with-files",
                                  "--copy-artifacts", "--json"))
    assert (report["versions_imported"], report["files_copied"], report["versions_sealed"]) == (2, 5, 1)
    assert report["bytes_copied"] == source.total_bytes
    for number, files in source.files.items():
        page = await list_artifacts("with-files", number, None, 1000, container.uow(ADMIN, write=False))
        assert {a.path: a.sha256 for a in page.items} == files, number
        for artifact in page.items:
            digest = hashlib.sha256()
            async for block in container.artifacts.read(artifact.key):
                digest.update(block)
            assert digest.hexdigest() == artifact.sha256, "the stored bytes are the original's"
        assert (page.sealed_at is not None) == (STAGES["with-files"][number] != "none")
    await assert_copied(container, source, "with-files")

    again = report_of(run_import(database_url, tmp_path, source.url, "--model", "with-files",
                                 "--copy-artifacts", "--json"))
    assert (again["files_copied"], again["versions_sealed"], again["failures"]) == (0, 0, [])


async def test_the_reader_pages_skips_prompts_and_resolves_run_and_logged_model_uris(source: Source) -> None:
    reader = MlflowReader.open(source.url, {}, page_size=2)
    try:
        assert [m["name"] for m in await reader.models()] == MODELS, "paged, without the prompt"
        assert [int(v["version"]) for v in await reader.versions("fraud")] == [1, 3, 4, 5]
        assert [v["name"] for v in await reader.versions("o'brien")] == ["o'brien"]
        run_root = await reader.resolve(f"runs:/{source.run_id}/model")
        assert sorted(p for p, _ in await reader.files(run_root)) == sorted(source.files[1])
        logged_root = await reader.resolve(f"models:/{source.logged_model}")
        assert sorted(p for p, _ in await reader.files(logged_root)) == sorted(source.files[2])
    finally:
        await reader.aclose()


async def test_an_import_refuses_numbers_outside_1_to_2_31_and_empty_sources(container: Container) -> None:
    origin = Origin("http://mlflow.test", datetime(2024, 1, 1, tzinfo=UTC), None, datetime(2024, 1, 2, tzinfo=UTC))
    importer = Actor("import:mlflow", "import-test")
    await import_model(ImportModel("bounds", "", {}, origin), container.uow(importer))
    for number, source in ((0, "s3://b/0"), (2**31, "s3://b/big"), (1, "")):
        with pytest.raises(ValidationError):
            await import_model_version(ImportModelVersion("bounds", number, Stage.NONE, source, origin),
                                       container.uow(importer))
    assert (await here(container, "bounds"))["versions"] == {}


# -- MLflow's transport, faked (no server) -------------------------------------------------------

def fake_mlflow(answers: list[Any], seen: list[httpx.Request]) -> httpx.MockTransport:
    """Answers in turn: an exception to raise, or (status, body, headers)."""
    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        answer = answers.pop(0) if len(answers) > 1 else answers[0]
        if isinstance(answer, Exception):
            raise answer
        status, body, headers = answer
        return httpx.Response(status, json=body, headers=headers)
    return httpx.MockTransport(handle)


MODELS_PAGE = (200, {"registered_models": [
    {"name": "m", "creation_timestamp": 1},
    # A server that does not leave prompts out by itself (MLflow's own client asks it to).
    {"name": "p", "creation_timestamp": 1, "tags": [{"key": "mlflow.prompt.is_prompt", "value": "true"}]},
]}, {})


async def test_network_errors_and_busy_answers_are_retried_with_backoff() -> None:
    seen: list[httpx.Request] = []
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    refused = httpx.ConnectError("refused")
    transport = fake_mlflow([refused, (503, {}, {"Retry-After": "3"}), refused, MODELS_PAGE], seen)
    reader = MlflowReader.open("http://mlflow.test", {"MLFLOW_TRACKING_TOKEN": "secret"},
                               transport=transport, sleep=sleep)
    assert [m["name"] for m in await reader.models()] == ["m"], "not the prompt"
    assert slept == [0.5, 3.0, 2.0], "exponential backoff, Retry-After honoured"
    assert {r.headers["Authorization"] for r in seen} == {"Bearer secret"}
    assert all("secret" not in str(r.url) for r in seen), "credentials never in the URL"


async def test_mlflow_unreachable_after_the_retries_or_refusing_is_a_clear_error() -> None:
    async def sleep(seconds: float) -> None:
        pass

    seen: list[httpx.Request] = []
    gone = MlflowReader.open("http://mlflow.test", {}, sleep=sleep, attempts=3,
                             transport=fake_mlflow([httpx.ConnectError("refused")], seen))
    with pytest.raises(MlflowUnreachable, match="no answer from http://mlflow.test after 3 attempts"):
        await gone.models()
    assert len(seen) == 3
    seen.clear()
    unauthenticated = (401, {"error_code": "UNAUTHENTICATED", "message": "who?"}, {})
    refused = MlflowReader.open("http://mlflow.test", {"MLFLOW_TRACKING_USERNAME": "ann",
                                                       "MLFLOW_TRACKING_PASSWORD": "pw"}, sleep=sleep,
                                transport=fake_mlflow([unauthenticated], seen))
    with pytest.raises(MlflowError, match="401: UNAUTHENTICATED: who?"):
        await refused.models()
    assert len(seen) == 1, "a refusal is not retried"
    assert seen[0].headers["Authorization"] == "Basic " + base64.b64encode(b"ann:pw").decode()


async def test_exit_2_for_an_unreachable_mlflow_and_for_bad_urls(tmp_path: Path) -> None:
    async def sleep(seconds: float) -> None:
        pass

    args = argparse.Namespace(source="http://mlflow.test", models=None, dry_run=False,
                              copy_artifacts=False, json=False)
    code = await import_mlflow(args, None, {}, sleep=sleep,
                               transport=fake_mlflow([httpx.ConnectError("refused")], []))
    assert code == 2
    assert await import_mlflow(args, None, {"MLFLOW_TRACKING_USERNAME": "only-a-user"}) == 2
    for url in ("ftp://mlflow.test", "http://ann:pw@mlflow.test", "http://mlflow.test/?token=x"):
        proc = subprocess.run([sys.executable, "-m", "registry", "import", "mlflow", "--from", url],
                              cwd=REPO, capture_output=True, text=True, timeout=60,
                              env={**os.environ, "REGISTRY_DATA_DIR": str(tmp_path)})
        assert proc.returncode == 2, (url, proc.stderr)
