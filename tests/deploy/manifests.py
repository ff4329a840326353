"""Readers for deploy/: no Docker engine or cluster runs here, so the artefacts are checked by
parsing them (Dockerfile, compose file, env files) and by rendering the Kustomize trees with the
real ``kubectl kustomize``. Shared by the tests of this folder."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from registry.__main__ import parser

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
CLI_PREFIX = ["python", "-m", "registry"]
# Every REGISTRY_* name the service's code reads (settings, logging, metrics, ...).
CONFIG_NAMES = frozenset(
    name for path in (ROOT / "registry").rglob("*.py")
    for name in re.findall(r'"(REGISTRY_[A-Z0-9_]+)"', path.read_text())
)
# Values that must never be written in a manifest or the compose file, only in a secret store.
SECRET_NAMES = frozenset({"REGISTRY_DATABASE_URL", "REGISTRY_SECRET_KEY", "REGISTRY_S3_ACCESS_KEY",
                          "REGISTRY_S3_SECRET_KEY", "REGISTRY_METRICS_TOKEN",
                          "REGISTRY_BOOTSTRAP_TOKEN"})


def parse_cli(command: list[str]):  # type: ignore[no-untyped-def]
    """Parse a container's command with the real CLI parser; argparse exits (SystemExit) on an
    unknown command or flag."""
    assert command[:3] == CLI_PREFIX, command
    return parser().parse_args(command[3:])


# --- Kubernetes -------------------------------------------------------------------------------

def kustomize(folder: Path) -> list[dict]:
    """Render a Kustomize folder with the real kubectl (which must be installed: CI has it)."""
    kubectl = shutil.which("kubectl")
    assert kubectl is not None, "kubectl is needed to render deploy/k8s (kubectl kustomize)"
    out = subprocess.run([kubectl, "kustomize", str(folder)], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def find(objects: list[dict], kind: str, name_prefix: str = "") -> dict:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"].startswith(name_prefix)]
    assert len(found) == 1, (kind, name_prefix, [o["metadata"]["name"] for o in found])
    return found[0]


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def container(workload: dict) -> dict:
    containers = pod_spec(workload)["containers"]
    assert len(containers) == 1, [c["name"] for c in containers]
    return containers[0]


def env_of(c: dict) -> dict[str, dict]:
    return {e["name"]: e for e in c.get("env", [])}


def workloads(objects: list[dict]) -> list[dict]:
    return [o for o in objects if o["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet")]


# --- Dockerfile -------------------------------------------------------------------------------

@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [arg for kw, arg in self.instructions if kw == keyword]


def dockerfile_stages(text: str) -> list[Stage]:
    """Split a Dockerfile into stages of (INSTRUCTION, arguments), continuation lines joined and
    comments dropped."""
    logical, pending = [], ""
    for line in text.splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[Stage] = []
    for line in logical:
        keyword, _, args = line.strip().partition(" ")
        keyword, args = keyword.upper(), args.strip()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif stages:
            stages[-1].instructions.append((keyword, args))
    return stages


def exec_form(args: str) -> list[str]:
    """The JSON array of an exec-form CMD or HEALTHCHECK CMD."""
    parsed = yaml.safe_load(args)
    assert isinstance(parsed, list), f"not exec form: {args}"
    return parsed


# --- compose ----------------------------------------------------------------------------------

def env_file(path: Path) -> dict[str, str]:
    """KEY=value lines, as `docker compose` env_file and `kubectl --from-env-file` read them."""
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            assert sep and key == key.strip() and re.fullmatch(r"[A-Z][A-Z0-9_]*", key), line
            values[key] = value
    return values


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?message}, against ``env``."""
    def one(match: re.Match[str]) -> str:
        name, op, rest = match.group(1), match.group(2), match.group(3)
        if env.get(name):
            return env[name]
        if op == ":?":
            raise AssertionError(f"${{{name}}} is required: {rest}")
        return rest or ""
    return re.sub(r"\$\{([A-Z0-9_]+)(?:(:-|:\?)([^}]*))?\}", one, value)
