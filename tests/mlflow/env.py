"""Virtual environments with MLflow's own packages, made once per machine and reused: the real
clients (``mlflow-skinny`` of the current 3.x and of the last 2.x release) and a real ``mlflow
server`` for the import. They are never dependencies of this project: each lives under
``~/.cache/registry-tests/`` (or ``REGISTRY_TEST_MLFLOW_CACHE``), installed from PyPI with the
pins below and the constraints file beside this module, so every run uses the same packages."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Flavour:
    name: str
    requirement: str  # the one top-level pin

    @property
    def constraints(self) -> Path:
        return HERE / f"constraints-{self.name}.txt"


CLIENT_3 = Flavour("client-3", "mlflow-skinny==3.18.0")
CLIENT_2 = Flavour("client-2", "mlflow-skinny==2.22.5")
SERVER = Flavour("server-3", "mlflow==3.17.2")  # 3.18.0 needs mlflow-tracing 3.18.0, not on PyPI yet


def cache_dir() -> Path:
    return Path(os.environ.get("REGISTRY_TEST_MLFLOW_CACHE") or Path.home() / ".cache" / "registry-tests")


def python_of(flavour: Flavour) -> Path:
    """The venv's interpreter, installing the flavour first if this machine has not yet (under
    a file lock, so concurrent test processes build it once)."""
    venv = cache_dir() / flavour.name
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    wanted = flavour.requirement + "\n" + (flavour.constraints.read_text() if flavour.constraints.exists() else "")
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{flavour.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists() and marker.read_text() == wanted:
            return python
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        if flavour.constraints.exists():
            pip += ["-c", str(flavour.constraints)]
        subprocess.run([*pip, flavour.requirement], check=True)
        marker.write_text(wanted)
    return python
