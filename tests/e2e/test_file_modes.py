"""The embedded database holds token hashes and encrypted webhook secrets: its files are created
readable by their owner only, like the secret key beside them."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from tests.support import REPO


def test_the_embedded_database_and_its_folder_are_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env.update(REGISTRY_DATA_DIR=str(data_dir), REGISTRY_LOG_FORMAT="json")
    old = os.umask(0o022)  # the usual umask, under which files are made world-readable
    try:
        subprocess.run([sys.executable, "-m", "registry", "migrate"], cwd=REPO, env=env, check=True,
                       capture_output=True, timeout=120)
    finally:
        os.umask(old)
    made = [p for p in data_dir.iterdir() if p.name.startswith("registry.db")]
    assert data_dir / "registry.db" in made
    for path in made:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, (path.name, oct(path.stat().st_mode))
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
