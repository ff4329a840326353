"""deploy/ cannot be started here (no Docker engine), so it is checked by parsing: the compose file
runs real commands of this CLI with configuration names the service reads."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from registry.__main__ import parser

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
CONFIG_NAMES = set(re.findall(r'"(REGISTRY_[A-Z0-9_]+)"', (DEPLOY.parent / "registry" / "config.py").read_text()))


def test_compose_services_run_cli_commands_that_parse() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    for name in ("migrate", "registry", "worker"):
        command = compose["services"][name]["command"]
        assert command[:3] == ["python", "-m", "registry"]
        parser().parse_args(command[3:])  # exits on an unknown command or flag


def test_compose_sets_only_settings_the_service_reads() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    for name in ("migrate", "registry", "worker"):
        env = compose["services"][name]["environment"]
        assert set(env) <= CONFIG_NAMES, set(env) - CONFIG_NAMES
        assert env["REGISTRY_DATABASE_URL"].startswith("postgresql+asyncpg://")


def test_image_installs_with_the_constraints_and_serves() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "-c constraints.txt" in dockerfile
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.M)
    assert cmd is not None
    args = yaml.safe_load(cmd.group(1))
    assert args[:3] == ["python", "-m", "registry"]
    parser().parse_args(args[3:])
