"""SQLite: only one process runs the workers. A `worker` beside a `serve` that runs them is
refused; with serve's workers off, one `worker` runs and a second is refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.support import REPO, run_server, sqlite_url


def _worker(env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "registry", "worker"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _env(url: str, data_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env.update(REGISTRY_DATABASE_URL=url, REGISTRY_DATA_DIR=str(data_dir), REGISTRY_LOG_FORMAT="json")
    return env


def test_a_second_worker_process_is_refused(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    with run_server(url, tmp_path):  # runs the workers itself
        refused = _worker(_env(url, tmp_path))
    assert refused.returncode == 2, refused
    assert "only one may" in refused.stderr

    with run_server(url, tmp_path, extra_env={"REGISTRY_RUN_WORKERS": "false"}):
        first = subprocess.Popen([sys.executable, "-m", "registry", "worker"], cwd=REPO,
                                 env=_env(url, tmp_path), stdout=subprocess.PIPE, text=True)
        try:
            assert first.stdout is not None and "running" in first.stdout.readline()
            second = _worker(_env(url, tmp_path))
            assert second.returncode == 2 and "only one may" in second.stderr
        finally:
            first.terminate()
            first.wait(timeout=20)


def test_serve_beside_a_running_worker_serves_the_api_without_workers(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path)
    worker = subprocess.Popen([sys.executable, "-m", "registry", "worker"], cwd=REPO,
                              env=_env(url, tmp_path), stdout=subprocess.PIPE, text=True)
    try:
        assert worker.stdout is not None and "running" in worker.stdout.readline()
        with run_server(url, tmp_path) as srv:  # would run workers, but the worker has them
            log = srv.log.read_text()
            assert "workers_not_started" in log and "workers_started" not in log
            assert worker.poll() is None
    finally:
        worker.terminate()
        worker.wait(timeout=20)
