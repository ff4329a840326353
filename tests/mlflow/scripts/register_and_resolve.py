"""``mlflow.register_model`` (an object-store URI and local directories; it must not wait for a
READY status) and ``models:/`` URIs resolved by the registry alone: the download URI, and
``mlflow.artifacts.download_artifacts`` by version, alias, stage and ``latest``, from local
version sources. Usage: register_and_resolve.py <name prefix> <dir of v1> <dir of v2>; each
directory holds ``weights.txt``."""

from __future__ import annotations

import os
import sys
import tempfile
import time

import mlflow
from _checks import emit
from mlflow import MlflowClient

prefix, first_dir, second_dir = sys.argv[1:4]
c = MlflowClient()
remote, local = f"{prefix}-remote", f"{prefix}-local"
timings: dict[str, float] = {}


def register(uri: str, name: str) -> object:
    started = time.monotonic()
    mv = mlflow.register_model(uri, name)
    timings[f"{name}/{mv.version}"] = elapsed = time.monotonic() - started
    assert elapsed < 5, f"register_model took {elapsed:.1f} s: it waited for READY"
    assert mv.status == "READY" and mv.name == name, mv
    return mv


assert register("s3://bucket/path/model", remote).version == "1"
assert register("s3://bucket/path/model-2", remote).version == "2"  # the model exists: a new version
assert register(first_dir, local).version == "1"
assert register(second_dir, local).version == "2"
uris = {"remote/1": c.get_model_version_download_uri(remote, "1"),
        "remote/2": c.get_model_version_download_uri(remote, "2"),
        "local/1": c.get_model_version_download_uri(local, "1")}
assert uris == {"remote/1": "s3://bucket/path/model", "remote/2": "s3://bucket/path/model-2",
                "local/1": first_dir}, uris

c.transition_model_version_stage(local, "1", "Staging")
c.transition_model_version_stage(local, "1", "Production")
c.set_registered_model_alias(local, "champion", "1")
c.transition_model_version_stage(local, "2", "Staging")


def download(uri: str) -> str:
    """The content of weights.txt as downloaded through the URI."""
    path = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tempfile.mkdtemp())
    if os.path.isdir(path):
        path = os.path.join(path, "weights.txt")
    with open(path) as f:
        return f.read()


downloads = {uri: download(uri) for uri in (
    f"models:/{local}/1", f"models:/{local}/2", f"models:/{local}@champion", f"models:/{local}/Production",
    f"models:/{local}/production", f"models:/{local}/Staging", f"models:/{local}/latest",
    f"models:/{local}/1/weights.txt")}
first, second = (open(os.path.join(d, "weights.txt")).read() for d in (first_dir, second_dir))
expected = {f"models:/{local}/1": first, f"models:/{local}/2": second, f"models:/{local}@champion": first,
            f"models:/{local}/Production": first, f"models:/{local}/production": first,
            f"models:/{local}/Staging": second, f"models:/{local}/latest": second,
            f"models:/{local}/1/weights.txt": first}
assert downloads == expected, downloads

emit({"remote": remote, "local": local, "timings": timings, "uris": uris, "downloads": downloads})
