"""The pipeline commands (``register``, ``checks``, ``gate check``, ``promote``, ``rollback``,
``requests``) run as real processes against a real ``python -m registry serve`` on both backends,
scripting what a CI/CD pipeline and its release engineers do.

Exit codes: 0 ok or allowed, 1 refused, 2 usage error or unreachable server, 3 a rollback with nothing
to do (the version named by ``--from`` is no longer in production).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from registry.__main__ import main, parser
from registry.client import RegistryClient
from tests.conftest import unique
from tests.support import REPO, Server, free_port

# Staging takes anything; production needs good metrics, a passing check and no regression.
PRODUCTION = {"metrics": {"accuracy": {"min": 0.9, "min_delta_vs_production": 0.0}, "latency_ms": {"max": 50}},
              "required_checks": ["unit-tests"]}
TOKENS = {"ci": ("releaser", "ci"), "ci-again": ("releaser", "ci"), "alice": ("releaser", "alice"),
          "bob": ("releaser", "bob")}


def registry(*args: str, url: str, token: str | None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "registry", *args], cwd=REPO, env=cli_env(url, token),
                          capture_output=True, text=True, timeout=60)


def cli_env(url: str, token: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env["REGISTRY_URL"] = url
    if token is not None:
        env["REGISTRY_TOKEN"] = token
    return env


class Pipeline:
    """The CLI as each principal runs it, and the admin's client for policies and checks."""

    def __init__(self, server: Server, tokens: dict[str, str]) -> None:
        self.server, self.tokens = server, tokens
        self.admin = RegistryClient(server.url, server.token)
        self.ci = RegistryClient(server.url, tokens["ci"])

    def run(self, *args: str, who: str = "ci") -> subprocess.CompletedProcess[str]:
        return registry(*args, url=self.server.url, token=self.tokens[who])

    def ok(self, *args: str, who: str = "ci") -> str:
        done = self.run(*args, who=who)
        assert done.returncode == 0, f"{args}: {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done.stdout

    def refused(self, *args: str, who: str = "ci") -> subprocess.CompletedProcess[str]:
        done = self.run(*args, who=who)
        assert done.returncode == 1, f"{args}: {done.returncode}\n{done.stdout}\n{done.stderr}"
        return done

    def wait_in_background(self, *args: str) -> subprocess.Popen[str]:
        """``promote --wait`` as the ci principal, returned once it polls its request."""
        proc = subprocess.Popen([sys.executable, "-m", "registry", "promote", *args, "--wait",
                                 "--timeout", "60s", "--poll-interval", "0.2"], cwd=REPO, text=True,
                                env=cli_env(self.server.url, self.tokens["ci"]),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stderr is not None
        while not (line := proc.stderr.readline()).startswith("waiting for approval"):
            assert line, f"promote --wait ended early: {proc.wait()}\n{proc.communicate()}"
        return proc

    def register(self, model: str, accuracy: float, *extra: str) -> int:
        out = self.ok("register", model, "--source", f"s3://models/{model}", "--metric", f"accuracy={accuracy}",
                      "--metric", "latency_ms=20", *extra)
        return int(out)

    def staged_and_checked(self, model: str, accuracy: float) -> int:
        """A version in staging whose unit tests passed, set up by ci through the client (the
        CLI's own steps are exercised where they are the point)."""
        version = self.ci.register_version(model, f"s3://models/{model}",
                                           metrics={"accuracy": accuracy, "latency_ms": 20})["version"]
        self.ci.transition(model, version, "staging")
        self.ci.report_check(model, version, "unit-tests", "success")
        return version

    def new_model(self, **production: Any) -> str:
        model = self.admin.create_model(unique("pipe"))["name"]
        self.admin.set_policy(model, "production", {**PRODUCTION, **production})
        return model

    def stage(self, model: str, version: int) -> str:
        return self.admin.get_version(model, version)["stage"]

    def versions(self, model: str) -> list[int]:
        return [v["version"] for v in self.admin.list_versions(model)]

    def counts(self, model: str) -> tuple[int, int]:
        """The model's audit entries and outbox events."""
        events = httpx.get(f"{self.server.api}/events", headers=self.server.headers,
                           params={"model": model, "limit": 1000}).json()["items"]
        return len(list(self.admin.audit_entries(model))), len(events)


@pytest.fixture(scope="module")
def pipeline(server: Server) -> Iterator[Pipeline]:
    tokens = {}
    for name, (role, principal) in TOKENS.items():
        created = registry("token", "create", "--name", name, "--role", role, "--principal", principal,
                           url=server.url, token=server.token)
        assert created.returncode == 0, created.stderr
        tokens[name] = created.stdout.strip()
    p = Pipeline(server, tokens)
    yield p
    p.admin.close()
    p.ci.close()


def request_id(output: str) -> int:
    found = re.search(r"request (\d+)", output)
    assert found, output
    return int(found[1])


# -- gates ------------------------------------------------------------------------------------------


def test_a_failing_metric_blocks_promotion_with_the_reason(pipeline: Pipeline) -> None:
    model = pipeline.new_model()
    version = pipeline.register(model, 0.85, "--run-id", "run-1", "--tag", "team=fraud",
                                "--input", "s3://datasets/train/2026-01@3")
    pipeline.ok("promote", model, str(version), "--to", "staging")
    pipeline.ok("checks", "report", model, str(version), "unit-tests", "--status", "success")

    gate = pipeline.refused("gate", "check", model, str(version), "--to", "production")
    assert re.search(r"^FAIL metric:accuracy:min: .*0\.85", gate.stdout, re.M), gate.stdout
    assert re.search(r"^PASS check:unit-tests:", gate.stdout, re.M), gate.stdout
    assert gate.stdout.splitlines()[-1] == f"not allowed: {model} v{version} -> production"

    promoted = pipeline.refused("promote", model, str(version), "--to", "production")
    assert "error: gate_failed (422)" in promoted.stderr
    assert re.search(r"^FAIL metric:accuracy:min: ", promoted.stderr, re.M), promoted.stderr
    assert re.search(r"^PASS metric:latency_ms:max: ", promoted.stderr, re.M), promoted.stderr
    assert pipeline.stage(model, version) == "staging"
    registered = pipeline.admin.get_version(model, version)
    assert (registered["run_id"], registered["tags"], registered["inputs"]) == (
        "run-1", {"team": "fraud"}, [{"namespace": "s3://datasets", "name": "train/2026-01", "version": "3"}])


def test_a_gate_check_that_cannot_be_answered_exits_2_not_1(pipeline: Pipeline) -> None:
    model = pipeline.new_model()
    missing = pipeline.run("gate", "check", model, "7", "--to", "production")
    assert missing.returncode == 2, (missing.stdout, missing.stderr)
    assert "error: not_found (404)" in missing.stderr
    unknown = pipeline.run("gate", "check", "no-such-model", "1", "--to", "production")
    assert unknown.returncode == 2, (unknown.stdout, unknown.stderr)


def test_reporting_the_missing_check_flips_the_gate(pipeline: Pipeline) -> None:
    model = pipeline.new_model()
    version = pipeline.register(model, 0.95)
    pipeline.ok("promote", model, str(version), "--to", "staging")
    pipeline.ok("checks", "report", model, str(version), "unit-tests", "--status", "pending")

    before = pipeline.refused("gate", "check", model, str(version), "--to", "production", "--json")
    report = json.loads(before.stdout)
    assert report["allowed"] is False
    assert [r["gate"] for r in report["results"] if not r["passed"]] == ["check:unit-tests"]
    assert report["results"][0]["gate"] == "stage_table"

    reported = pipeline.ok("checks", "report", model, str(version), "unit-tests", "--status", "success",
                           "--summary", "412 passed", "--details-url", "https://ci.example/run/9")
    assert reported.strip() == f"{model} v{version}: check unit-tests is success"
    after = pipeline.ok("gate", "check", model, str(version), "--to", "production")
    assert "PASS check:unit-tests:" in after
    assert after.splitlines()[-1] == f"allowed: {model} v{version} -> production"
    listed = json.loads(pipeline.ok("checks", "list", model, str(version), "--json"))["items"]
    assert [(c["name"], c["status"], sorted(h["status"] for h in c["history"])) for c in listed] == [
        ("unit-tests", "success", ["pending", "success"])]
    assert "success  unit-tests  412 passed  https://ci.example/run/9" in pipeline.ok("checks", "list", model,
                                                                                       str(version))


def test_a_relative_gate_refuses_a_version_worse_than_production(pipeline: Pipeline) -> None:
    model = pipeline.new_model()
    first = pipeline.staged_and_checked(model, 0.95)
    pipeline.ok("promote", model, str(first), "--to", "production")
    worse = pipeline.staged_and_checked(model, 0.92)  # above the floor of 0.9, below production

    gate = pipeline.refused("gate", "check", model, str(worse), "--to", "production")
    assert re.search(r"^FAIL metric:accuracy:min_delta_vs_production: ", gate.stdout, re.M), gate.stdout
    assert re.search(r"^PASS metric:accuracy:min: ", gate.stdout, re.M), gate.stdout
    refused = pipeline.refused("promote", model, str(worse), "--to", "production")
    assert "FAIL metric:accuracy:min_delta_vs_production" in refused.stderr
    better = pipeline.staged_and_checked(model, 0.96)
    pipeline.ok("gate", "check", model, str(better), "--to", "production")
    assert (pipeline.stage(model, first), pipeline.stage(model, worse)) == ("production", "staging")


# -- safe calls -------------------------------------------------------------------------------------


def test_a_retried_promote_with_the_same_key_replays_and_changes_nothing(pipeline: Pipeline) -> None:
    model = pipeline.new_model()
    key = f"deploy-{model}-1"
    register = ("register", model, "--source", "s3://m/1", "--metric", "accuracy=0.95", "--metric",
                "latency_ms=20", "--idempotency-key", key)
    registered = pipeline.ok(*register)
    assert pipeline.ok(*register) == registered
    version = int(registered)
    assert pipeline.versions(model) == [version] == [1], "one registration"
    pipeline.ok("promote", model, str(version), "--to", "staging")
    pipeline.ok("checks", "report", model, str(version), "unit-tests", "--status", "success")

    promote = ("promote", model, str(version), "--to", "production", "--comment", "ship",
               "--idempotency-key", f"{key}-promote", "--json")
    first = pipeline.ok(*promote)
    counts = pipeline.counts(model)
    again = pipeline.ok(*promote)
    assert again == first, "the retry prints the stored answer, timestamps included"
    assert json.loads(again)["version"]["stage"] == "production"
    assert pipeline.counts(model) == counts, "no audit entry and no event was added"

    other = pipeline.refused("promote", model, str(version), "--to", "production", "--comment", "other",
                             "--idempotency-key", f"{key}-promote")
    assert "idempotency_conflict (422)" in other.stderr
    fresh = pipeline.refused("promote", model, str(version), "--to", "production", "--comment", "ship")
    assert "invalid_transition (409)" in fresh.stderr, "without the key the same call is a new move"


def test_a_stale_expected_production_version_gets_412_and_rollback_restores(pipeline: Pipeline) -> None:
    model = pipeline.new_model()
    v1 = pipeline.staged_and_checked(model, 0.95)
    pipeline.ok("promote", model, str(v1), "--to", "production", "--expected-production-version", "none")
    v2 = pipeline.staged_and_checked(model, 0.97)

    for stale in ("none", str(v2)):
        refused = pipeline.refused("promote", model, str(v2), "--to", "production",
                                   "--expected-production-version", stale, "--json")
        assert "error: precondition_failed (412)" in refused.stderr
        assert json.loads(refused.stdout)["code"] == "precondition_failed"
    moved = pipeline.ok("promote", model, str(v2), "--to", "production", "--expected-production-version", str(v1))
    assert moved.strip() == f"{model} v{v2}: staging -> production (promote); archived v{v1}"

    # Rolling back from a version no longer in production does nothing, with its own exit code.
    stale = pipeline.run("rollback", model, "--comment", "v2 regressed", "--from", str(v1))
    assert stale.returncode == 3, (stale.stdout, stale.stderr)
    assert stale.stdout.strip() == (f"nothing to do: {model} v{v1} is no longer in production (now: v{v2}); "
                                    "nothing was changed")
    rolled = pipeline.ok("rollback", model, "--comment", "v2 regressed", "--from", str(v2))
    assert rolled.strip() == f"{model} v{v1}: archived -> production (rollback); archived v{v2}"
    assert (pipeline.stage(model, v1), pipeline.stage(model, v2)) == ("production", "archived")


# -- approvals --------------------------------------------------------------------------------------


def test_two_releasers_other_than_the_requester_approve_and_the_second_applies(pipeline: Pipeline) -> None:
    model = pipeline.new_model(required_approvals=2)
    version = pipeline.staged_and_checked(model, 0.95)

    asked = pipeline.refused("promote", model, str(version), "--to", "production", "--comment", "weekly")
    rid = request_id(asked.stdout)
    assert asked.stdout.strip() == f"approval requested: request {rid}: {model} v{version} -> production, " \
                                   "pending, 0 of 2 approvals"
    assert "FAIL approvals:" in asked.stderr
    again = pipeline.refused("promote", model, str(version), "--to", "production", "--comment", "weekly")
    assert request_id(again.stdout) == rid, "the open request is reused, not duplicated"

    own = pipeline.refused("requests", "approve", str(rid), who="ci-again")
    assert "forbidden (403)" in own.stderr, "the requester's principal cannot approve, whatever its token"
    waiter = pipeline.wait_in_background(model, str(version), "--to", "production", "--comment", "weekly")
    first = pipeline.ok("requests", "approve", str(rid), "--comment", "lgtm", who="alice")
    assert f"approve: request {rid}: {model} v{version} -> production, pending, 1 of 2 approvals; not applied" \
        in first
    assert pipeline.stage(model, version) == "staging"
    second = pipeline.ok("requests", "approve", str(rid), who="bob")
    assert f"applied, 2 of 2 approvals; applied: {model} v{version}: production" in second

    out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 0, err
    assert out.strip() == f"{model} v{version}: production"
    assert pipeline.stage(model, version) == "production"
    listed = json.loads(pipeline.ok("requests", "list", "--model", model, "--json"))["items"]
    assert [(r["id"], r["state"], r["requester_principal"], sorted(a["principal"] for a in r["approvals"]))
            for r in listed] == [(rid, "applied", "ci", ["alice", "bob"])]


def test_wait_finishes_an_approved_move_and_fails_on_rejection_and_timeout(pipeline: Pipeline) -> None:
    model = pipeline.new_model(required_approvals=1, auto_apply=False)
    version = pipeline.staged_and_checked(model, 0.95)

    timed_out = pipeline.refused("promote", model, str(version), "--to", "production", "--wait",
                                 "--timeout", "1s", "--poll-interval", "0.2")
    assert "error: not promoted: timed out after 1s" in timed_out.stderr
    rid = request_id(timed_out.stdout)

    waiter = pipeline.wait_in_background(model, str(version), "--to", "production")
    approved = pipeline.ok("requests", "approve", str(rid), who="alice")
    assert "approved, 1 of 1 approvals; not applied" in approved
    out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 0, err
    assert out.strip() == f"{model} v{version}: staging -> production (promote)"

    rejected_version = pipeline.staged_and_checked(model, 0.97)
    waiter = pipeline.wait_in_background(model, str(rejected_version), "--to", "production")
    rid = request_id(pipeline.ok("requests", "list", "--model", model, "--state", "pending"))
    pipeline.ok("requests", "reject", str(rid), "--comment", "not this week", who="bob")
    out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 1 and "error: not promoted: rejected" in err, (out, err)
    assert pipeline.stage(model, rejected_version) == "staging"

    rid = request_id(pipeline.refused("promote", model, str(rejected_version), "--to", "production").stdout)
    cancelled = pipeline.ok("requests", "cancel", str(rid), "--comment", "superseded")
    assert cancelled.startswith(f"cancel: request {rid}: {model} v{rejected_version} -> production, cancelled")


# -- errors -----------------------------------------------------------------------------------------


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGISTRY_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("REGISTRY_TOKEN", "mrt_unused")
    for args in (["register", "m", "--source", "s", "--metric", "auc=high"],
                 ["register", "m", "--source", "s", "--metric", "auc=nan"],
                 ["register", "m", "--source", "s", "--input", "no-slash"],
                 ["promote", "m", "1", "--to", "production", "--timeout", "soon"],
                 ["promote", "m", "0", "--to", "production"],
                 ["promote", "m", "1", "--to", "production", "--expected-production-version", "latest"],
                 ["promote", "m", "1", "--to", "production", "--idempotency-key", "has space"],
                 ["rollback", "m"], ["rollback", "m", "--comment", "no --from"],
                 ["rollback", "m", "--comment", "c", "--from", "latest"],
                 ["checks", "report", "m", "1", "unit", "--status", "green"]):
        with pytest.raises(SystemExit) as exited:
            main(args)
        assert exited.value.code == 2, args
        assert "error:" in capsys.readouterr().err, args
    monkeypatch.delenv("REGISTRY_TOKEN")
    assert main(["checks", "list", "m", "1"]) == 2
    assert "REGISTRY_TOKEN" in capsys.readouterr().err


def test_an_unreachable_server_exits_2() -> None:
    down = registry("gate", "check", "m", "1", "--to", "production", url=f"http://127.0.0.1:{free_port()}",
                    token="mrt_x")
    assert down.returncode == 2 and "cannot reach" in down.stderr, down.stderr


def test_refusals_are_not_retried(pipeline: Pipeline) -> None:
    started = time.monotonic()
    missing = pipeline.refused("checks", "list", unique("none"), "1")
    assert "not_found (404)" in missing.stderr
    assert time.monotonic() - started < 3, "a 404 is answered at once"


# -- the README's pipelines -------------------------------------------------------------------------


VALUES = {"VERSION": "7", "version": "7", "ACCURACY": "0.95", "LATENCY_MS": "31", "status": "success"}


def readme_commands() -> list[list[str]]:
    """Every ``python -m registry …`` command in the README's CI/CD section (shell and both CI
    jobs), its line continuations joined and the variables that need a valid value given one."""
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## CI/CD pipelines", 1)[1].split("\n## ", 1)[0]
    scripts: list[str] = []
    for lang, block in re.findall(r"```(sh|yaml)\n(.*?)```", section, re.S):
        if lang == "sh":
            scripts.append(block)
        else:
            scripts.extend(_strings(yaml.safe_load(block)))
    commands = []
    for script in scripts:
        script = re.sub(r"\\\n\s*", " ", script)
        for found in re.findall(r"python -m registry ([^)\n|#]*)", script):
            found = re.sub(r"\$(" + "|".join(VALUES) + r")\b", lambda m: VALUES[m[1]], found)
            commands.append(shlex.split(found))
    return commands


def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _strings(value)
    elif isinstance(node, list):
        for value in node:
            yield from _strings(value)


def test_the_readme_pipelines_run_commands_that_parse() -> None:
    commands = readme_commands()
    names = {tuple(c[:2]) if c[0] in ("checks", "gate", "requests") else (c[0],) for c in commands}
    assert {("register",), ("checks", "report"), ("gate", "check"), ("promote",)} <= names, names
    assert sum(c[0] == "promote" and "--wait" in c for c in commands) >= 3, "the shell and both CI jobs"
    for command in commands:
        args = parser().parse_args(command)  # exits on an unknown command, flag or value
        assert args.fn is not None
