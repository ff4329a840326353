"""``/readyz`` says whether this process can serve: the database answers and the artifact store is
usable. A replica whose artifact folder is gone (an unmounted volume) is not ready."""

from __future__ import annotations

import shutil
from pathlib import Path

import httpx

from tests.support import server_for


def test_a_missing_artifact_folder_makes_the_service_not_ready(tmp_path: Path) -> None:
    folder = tmp_path / "shared-artifacts"
    with server_for("sqlite", tmp_path / "data", extra_env={"REGISTRY_ARTIFACTS_URL": str(folder)}) as srv:
        assert httpx.get(srv.url + "/readyz").status_code == 200
        shutil.rmtree(folder)
        r = httpx.get(srv.url + "/readyz")
        assert r.status_code == 503
        assert r.json()["code"] == "unavailable" and str(folder) in r.json()["detail"]
        assert r.headers["retry-after"]
        folder.mkdir()
        assert httpx.get(srv.url + "/readyz").status_code == 200
