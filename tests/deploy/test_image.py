"""deploy/Dockerfile, checked by reading it (no Docker engine here): a build stage that makes
wheels from the pinned dependencies, a final stage with no compilers that installs only those
wheels, runs as a non-root user that matches the Kubernetes manifests, checks its health and
starts a command this CLI accepts."""

from __future__ import annotations

import re

import pytest

from tests.deploy.manifests import (
    CONFIG_NAMES,
    DEPLOY,
    K8S,
    ROOT,
    Stage,
    dockerfile_stages,
    exec_form,
    parse_cli,
)

BUILD_TOOLS = re.compile(r"\b(build-essential|gcc|g\+\+|make|clang|libpq-dev|python3?-dev)\b")


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return dockerfile_stages((DEPLOY / "Dockerfile").read_text())


def test_two_stages_and_the_final_one_has_no_build_tools(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    build, final = stages[0], stages[-1]
    assert build.name and final.base == build.base  # the same Python, not FROM the builder
    assert any(BUILD_TOOLS.search(r) for r in build.all("RUN")), "the builder compiles"
    for kw, arg in final.instructions:
        assert not BUILD_TOOLS.search(arg), f"final stage: {kw} {arg}"
        assert "apt-get install" not in arg
    # Nothing from the builder is copied in as a layer: the wheels are mounted for one RUN.
    assert not any("--from" in arg for arg in final.all("COPY"))


def test_dependencies_come_from_the_constraints_as_wheels(stages: list[Stage]) -> None:
    build, final = stages[0], stages[-1]
    (wheel,) = [r for r in build.all("RUN") if "pip wheel" in r]
    assert "-c constraints.txt" in wheel and "--wheel-dir /wheels" in wheel
    (install,) = [r for r in final.all("RUN") if "pip install" in r]
    assert f"--mount=type=bind,from={build.name},source=/wheels,target=/wheels" in install
    assert "--no-index --find-links /wheels -c /wheels/constraints.txt model-registry" in install
    for copy in build.all("COPY"):
        for source in copy.split()[:-1]:
            assert (ROOT / source).exists(), source  # the build context is the repository root


def test_runs_as_the_non_root_user_the_manifests_expect(stages: list[Stage]) -> None:
    final = stages[-1]
    (user,) = final.all("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, "numeric, so runAsNonRoot can check it"
    assert f"--uid {uid}" in " ".join(final.all("RUN"))
    for manifest in (K8S / "base").glob("*.yaml"):
        for found in re.findall(r"runAsUser: (\d+)", manifest.read_text()):
            assert found == uid, manifest.name
        for found in re.findall(r"runAsGroup: (\d+)", manifest.read_text()):
            assert found == gid, manifest.name


def test_health_check_and_command(stages: list[Stage]) -> None:
    final = stages[-1]
    (health,) = final.all("HEALTHCHECK")
    options, _, cmd = health.partition(" CMD ")
    assert "--interval=" in options and "--timeout=" in options
    probe = exec_form(cmd)
    (cmd,) = final.all("CMD")
    args = parse_cli(exec_form(cmd))
    assert args.command == "serve" and args.host == "0.0.0.0"
    # Liveness, not readiness: a database outage must not mark every container unhealthy.
    assert f"http://127.0.0.1:{args.port}/healthz" in " ".join(probe)
    assert str(args.port) in " ".join(final.all("EXPOSE")).split()


def test_environment_names_are_settings(stages: list[Stage]) -> None:
    names = set(re.findall(r"\b(REGISTRY_[A-Z0-9_]+)=", " ".join(stages[-1].all("ENV"))))
    assert names == {"REGISTRY_DATA_DIR", "REGISTRY_LOG_FORMAT"}
    assert names <= CONFIG_NAMES
