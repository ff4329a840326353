"""Model versions through ``MlflowClient``: create, get, update, tags, search (run_id = and IN,
name, tags, version_number, order_by, paging), the download URI, this registry's stage machine
(with archive_existing_versions) and soft deletion. Usage: model_versions.py <name prefix>."""

from __future__ import annotations

import sys
import time

import mlflow
from _checks import by_stage, emit, refused, refused_anywhere, versions_of
from mlflow import MlflowClient

prefix = sys.argv[1]
c = MlflowClient()
m, other = f"{prefix}-versions", f"{prefix}-other"
run_a, run_b, run_c = (f"{prefix}-run-{x}" for x in "abc")
source = {i: f"s3://bucket/{m}/{i}" for i in range(1, 8)}

# -- create, get, update, tags -----------------------------------------------------------------
c.create_registered_model(m)
c.create_registered_model(other)
v1 = c.create_model_version(m, source[1], run_id=run_a, tags={"framework": "sklearn", "fold": "1"},
                            description="first")
assert (v1.name, v1.version, v1.current_stage, v1.status) == (m, "1", "None", "READY"), v1
assert (v1.source, v1.run_id, v1.description, v1.tags) == (source[1], run_a, "first",
                                                           {"framework": "sklearn", "fold": "1"}), v1
assert abs(v1.creation_timestamp / 1000 - time.time()) < 600, v1  # epoch ms, whatever the server's zone
c.create_model_version(m, source[2], run_id=run_b, tags={"framework": "xgboost"})
c.create_model_version(m, source[3], run_id=run_a)
c.create_model_version(m, source[4], run_id=run_c)
c.create_model_version(m, source[5])
c.create_model_version(other, f"s3://bucket/{other}/1", run_id=run_a)

got = c.get_model_version(m, "2")
assert (got.version, got.source, got.run_id, got.tags) == ("2", source[2], run_b, {"framework": "xgboost"}), got
assert c.update_model_version(m, "1", description="better").description == "better"
c.set_model_version_tag(m, "1", "validated", "yes")
c.delete_model_version_tag(m, "1", "fold")
c.delete_model_version_tag(m, "1", "never-set")  # as in MLflow: nothing to delete, no error
got = c.get_model_version(m, "1")
assert (got.description, got.tags) == ("better", {"framework": "sklearn", "validated": "yes"}), got
assert c.get_model_version_download_uri(m, "2") == source[2]

# -- search --------------------------------------------------------------------------------------


def found(filter_string: str, **kw: object) -> list[list[object]]:
    return sorted([v.name, int(v.version)] for v in c.search_model_versions(filter_string, **kw))


search = {
    "run_id": found(f"run_id = '{run_a}'"),
    "run_id_in": found(f"run_id IN ('{run_a}', '{run_b}')"),
    "name": found(f"name = '{m}'"),
    "tag": found(f"name = '{m}' AND tags.framework = 'sklearn'"),
    "tag_backquoted": found(f"name = '{m}' AND tags.`framework` = 'xgboost'"),
    "version_number": found(f"name = '{m}' AND version_number >= 4"),
    "source": found(f"source_path = '{source[3]}'"),
    "run_and_name": found(f"run_id = '{run_a}' AND name = '{other}'"),
}
assert search["run_id"] == [[other, 1], [m, 1], [m, 3]], search
assert search["run_id_in"] == [[other, 1], [m, 1], [m, 2], [m, 3]], search
assert search["name"] == [[m, i] for i in range(1, 6)], search
assert search["tag"] == [[m, 1]] and search["tag_backquoted"] == [[m, 2]], search
assert search["version_number"] == [[m, 4], [m, 5]], search
assert search["source"] == [[m, 3]] and search["run_and_name"] == [[other, 1]], search
ascending = [int(v.version) for v in c.search_model_versions(f"name = '{m}'", order_by=["version_number ASC"])]
assert ascending == [1, 2, 3, 4, 5], ascending

pages, token = [], None
while True:
    page = c.search_model_versions(f"name = '{m}'", max_results=2, page_token=token,
                                   order_by=["version_number DESC"])
    pages.append([int(v.version) for v in page])
    token = page.token
    if not token:
        break
assert pages == [[5, 4], [3, 2], [1]], pages
assert sorted(int(v.version) for v in mlflow.search_model_versions(filter_string=f"name = '{m}'")) == [1, 2, 3, 4, 5]

# -- the stage machine ---------------------------------------------------------------------------


def stage(version: str) -> str:
    return c.get_model_version(m, version).current_stage


c.transition_model_version_stage(m, "1", "Staging")
c.transition_model_version_stage(m, "2", "staging")  # any case, as in MLflow
moved = c.transition_model_version_stage(m, "3", "Staging", archive_existing_versions=True)
assert (moved.version, moved.current_stage) == ("3", "Staging"), moved
assert [stage(v) for v in "123"] == ["Archived", "Archived", "Staging"]  # the other staging ones
c.transition_model_version_stage(m, "3", "Production")
c.transition_model_version_stage(m, "4", "Staging")
promoted = c.transition_model_version_stage(m, "4", "Production", archive_existing_versions=False)
assert promoted.current_stage == "Production", promoted
assert stage("3") == "Archived"  # the incumbent, whatever the flag said
refusals = {
    "none_to_production": refused("INVALID_PARAMETER_VALUE", c.transition_model_version_stage, m, "5", "Production"),
    "production_to_staging": refused("INVALID_PARAMETER_VALUE", c.transition_model_version_stage, m, "4", "Staging"),
    "archive_existing_none": refused("INVALID_PARAMETER_VALUE", c.transition_model_version_stage, m, "5", "None",
                                     archive_existing_versions=True),
    "archive_existing_archived": refused("INVALID_PARAMETER_VALUE", c.transition_model_version_stage, m, "5",
                                         "Archived", archive_existing_versions=True),
    # archived -> production is a rollback here: it needs a comment, which MLflow cannot send.
    "rollback": refused("RESOURCE_CONFLICT", c.transition_model_version_stage, m, "3", "Production"),
    "same_stage": refused("INVALID_PARAMETER_VALUE", c.transition_model_version_stage, m, "4", "Production"),
    "unknown_stage": refused_anywhere("INVALID_PARAMETER_VALUE", c.transition_model_version_stage, m, "5", "Live"),
    "unknown_version": refused("RESOURCE_DOES_NOT_EXIST", c.transition_model_version_stage, m, "99", "Staging"),
}
c.transition_model_version_stage(m, "5", "Staging")
c.transition_model_version_stage(m, "5", "none")  # withdraw
c.transition_model_version_stage(m, "1", "Staging")  # restore
assert [stage(v) for v in "12345"] == ["Staging", "Archived", "Archived", "Production", "None"]

# -- soft deletion -------------------------------------------------------------------------------
c.set_registered_model_alias(m, "candidate", "5")
c.delete_model_version(m, "5")
refusals["deleted_get"] = refused("RESOURCE_DOES_NOT_EXIST", c.get_model_version, m, "5")
refusals["deleted_again"] = refused("RESOURCE_DOES_NOT_EXIST", c.delete_model_version, m, "5")
refusals["deleted_alias"] = refused("INVALID_PARAMETER_VALUE", c.get_model_version_by_alias, m, "candidate")
refusals["deleted_tag"] = refused("RESOURCE_DOES_NOT_EXIST", c.set_model_version_tag, m, "5", "k", "v")
refusals["production_delete"] = refused("RESOURCE_CONFLICT", c.delete_model_version, m, "4")
assert versions_of(c.search_model_versions(f"name = '{m}'")) == [1, 2, 3, 4]
v6 = c.create_model_version(m, source[6])
assert v6.version == "6", v6  # 5 is never handed out again
assert c.get_registered_model(m).aliases == {}
latest = by_stage(c.get_latest_versions(m))
assert latest == {"Staging": 1, "Archived": 3, "Production": 4, "None": 6}, latest

emit({"model": m, "other": other, "run_ids": [run_a, run_b, run_c], "search": search, "pages": pages,
      "latest": latest, "refusals": refusals,
      "stages": {v.version: v.current_stage for v in c.search_model_versions(f"name = '{m}'")}})
