"""N versions of one model, all in Staging, then N truly concurrent
``transition_model_version_stage(name, v, "Production", archive_existing_versions=True)``: one
thread per version, released together by a barrier. Prints each call's outcome and timing.
Usage: concurrent_transitions.py <model name> <N>."""

from __future__ import annotations

import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from _checks import emit
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException, RestException

name, n = sys.argv[1], int(sys.argv[2])
c = MlflowClient()
c.create_registered_model(name)
for i in range(1, n + 1):
    assert c.create_model_version(name, f"s3://bucket/{name}/{i}", run_id=f"{name}-run-{i}").version == str(i)
    assert c.transition_model_version_stage(name, str(i), "Staging").current_stage == "Staging"

barrier = threading.Barrier(n)


def promote(version: int) -> dict[str, Any]:
    client = MlflowClient()
    barrier.wait()
    started = time.time()
    outcome: dict[str, Any] = {"version": version, "started": started}
    try:
        moved = client.transition_model_version_stage(name, str(version), "Production",
                                                      archive_existing_versions=True)
        outcome.update(result="ok", stage=moved.current_stage)
    except RestException as exc:  # a clean refusal: the server's JSON error
        outcome.update(result=exc.error_code, message=exc.message)
    except MlflowException as exc:  # anything else: no JSON error, a 5xx, a dropped connection
        outcome.update(result="failed", message=f"{exc.error_code}: {exc.message}")
    outcome["ended"] = time.time()
    return outcome


with ThreadPoolExecutor(max_workers=n) as pool:
    outcomes = list(pool.map(promote, range(1, n + 1)))

final = {v.version: v.current_stage for v in c.search_model_versions(f"name = '{name}'")}
production = [int(v) for v, s in final.items() if s == "Production"]
emit({"model": name, "outcomes": outcomes, "stages": final, "production": production,
      "latest_production": [int(v.version) for v in c.get_latest_versions(name, stages=["Production"])]})
