"""Refusals as MLflow's client sees them: error codes of missing and existing models, of moves
the stage table lacks, of roles too low for a call, of bad credentials (Bearer and Basic); and
version numbers that deletion never frees. Runs as admin; ``ROLE_TOKENS`` (JSON) holds a token
per role. Usage: errors_and_auth.py <name prefix>."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from _checks import emit, refused, versions_of
from mlflow import MlflowClient

prefix = sys.argv[1]
tokens = json.loads(os.environ["ROLE_TOKENS"])
c = MlflowClient()
m, taken = f"{prefix}-errors", f"{prefix}-taken"
messages: dict[str, str] = {}


@contextmanager
def credentials(token: str | None = None, basic: str | None = None) -> Iterator[None]:
    """Another token for the calls inside (the client reads its credentials on every request)."""
    saved = dict(os.environ)
    for key in ("MLFLOW_TRACKING_TOKEN", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"):
        os.environ.pop(key, None)
    if token is not None:
        os.environ["MLFLOW_TRACKING_TOKEN"] = token
    if basic is not None:
        os.environ.update(MLFLOW_TRACKING_USERNAME="someone", MLFLOW_TRACKING_PASSWORD=basic)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


# -- missing and existing -------------------------------------------------------------------------
messages["missing_model"] = refused("RESOURCE_DOES_NOT_EXIST", c.get_registered_model, f"{prefix}-missing")
messages["missing_model_version"] = refused("RESOURCE_DOES_NOT_EXIST", c.get_model_version, f"{prefix}-missing", "1")
messages["missing_model_latest"] = refused("RESOURCE_DOES_NOT_EXIST",
                                           c._get_registry_client().get_latest_versions, f"{prefix}-missing")
messages["missing_model_create_version"] = refused("RESOURCE_DOES_NOT_EXIST", c.create_model_version,
                                                   f"{prefix}-missing", "s3://bucket/x")
c.create_registered_model(m)
c.create_registered_model(taken)
messages["already_exists"] = refused("RESOURCE_ALREADY_EXISTS", c.create_registered_model, m)
messages["rename_onto_existing"] = refused("RESOURCE_ALREADY_EXISTS",
                                           c._get_registry_client().rename_registered_model, m, taken)
messages["missing_version"] = refused("RESOURCE_DOES_NOT_EXIST", c.get_model_version, m, "1")

# -- version numbers are never reused --------------------------------------------------------------
for i in (1, 2):
    assert c.create_model_version(m, f"s3://bucket/{m}/{i}").version == str(i)
c.delete_model_version(m, "2")
assert c.create_model_version(m, f"s3://bucket/{m}/3").version == "3"
c.delete_model_version(m, "3")
assert c.create_model_version(m, f"s3://bucket/{m}/4").version == "4"
assert versions_of(c.search_model_versions(f"name = '{m}'")) == [1, 4]

# -- the stage table ------------------------------------------------------------------------------
messages["none_to_production"] = refused("INVALID_PARAMETER_VALUE", c.transition_model_version_stage,
                                         m, "1", "Production")
assert "allowed stages: Staging, Archived" in messages["none_to_production"], messages

# -- roles -------------------------------------------------------------------------------------------
with credentials(tokens["viewer"]):
    assert c.get_registered_model(m).name == m  # a viewer reads
    assert versions_of(c.search_model_versions(f"name = '{m}'")) == [1, 4]
    messages["viewer_create"] = refused("PERMISSION_DENIED", c.create_registered_model, f"{prefix}-viewer")
    messages["viewer_version"] = refused("PERMISSION_DENIED", c.create_model_version, m, "s3://bucket/v")
    messages["viewer_tag"] = refused("PERMISSION_DENIED", c.set_registered_model_tag, m, "k", "v")
    messages["viewer_alias"] = refused("PERMISSION_DENIED", c.set_registered_model_alias, m, "champion", "1")
    messages["viewer_transition"] = refused("PERMISSION_DENIED", c.transition_model_version_stage, m, "1", "Staging")
with credentials(tokens["editor"]):
    assert c.create_model_version(m, f"s3://bucket/{m}/5", run_id="by-editor").version == "5"
    messages["editor_transition"] = refused("PERMISSION_DENIED", c.transition_model_version_stage, m, "5", "Staging")
    messages["editor_delete_version"] = refused("PERMISSION_DENIED", c.delete_model_version, m, "5")
with credentials(tokens["stager"]):
    assert c.transition_model_version_stage(m, "1", "Staging").current_stage == "Staging"
    messages["stager_promote"] = refused("PERMISSION_DENIED", c.transition_model_version_stage, m, "1", "Production")
with credentials(basic=tokens["releaser"]):  # the token as the Basic password
    assert c.transition_model_version_stage(m, "1", "Production").current_stage == "Production"
    messages["releaser_delete_model"] = refused("PERMISSION_DENIED", c.delete_registered_model, taken)

# -- credentials ---------------------------------------------------------------------------------------
with credentials("mrt_not-a-token"):
    messages["bad_token_read"] = refused("UNAUTHENTICATED", c.get_registered_model, m)
    messages["bad_token_write"] = refused("UNAUTHENTICATED", c.create_registered_model, f"{prefix}-bad")
with credentials(basic="mrt_not-a-token"):
    messages["bad_basic"] = refused("UNAUTHENTICATED", c.get_registered_model, m)
with credentials():
    messages["no_credentials"] = refused("UNAUTHENTICATED", c.search_registered_models)

stages = {v.version: v.current_stage for v in c.search_model_versions(f"name = '{m}'")}
assert stages == {"1": "Production", "4": "None", "5": "None"}, stages
emit({"model": m, "taken": taken, "messages": messages, "stages": stages})
