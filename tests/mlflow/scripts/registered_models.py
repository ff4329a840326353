"""Registered models through ``MlflowClient``: create, get, update, rename, delete, tags, the
search grammar (=, LIKE, ILIKE, tags with and without backquotes, AND, order_by, paging), the
latest version per stage, and aliases. Usage: registered_models.py <name prefix>."""

from __future__ import annotations

import sys
import time

import mlflow
from _checks import MAJOR, by_stage, emit, refused, refused_anywhere, versions_of
from mlflow import MlflowClient

prefix = sys.argv[1]
c = MlflowClient()
alpha, beta, gamma, delta, epsilon = (f"{prefix}-{n}" for n in ("alpha", "beta", "gamma", "delta", "epsilon"))
gamma2 = f"{prefix}-gamma2"
everyone = f"name LIKE '{prefix}-%'"

# -- create and get ------------------------------------------------------------------------------
created = c.create_registered_model(alpha, tags={"team": "fraud", "tier": "gold"}, description="first model")
assert created.name == alpha and created.description == "first model", created
assert created.tags == {"team": "fraud", "tier": "gold"}, created.tags
c.create_registered_model(beta, tags={"team": "risk"}, description="beta")
c.create_registered_model(gamma, tags={"team": "fraud"})
c.create_registered_model(delta, tags={"model.kind": "tree"})
c.create_registered_model(epsilon)

got = c.get_registered_model(alpha)
assert (got.name, got.description, got.tags) == (alpha, "first model", {"team": "fraud", "tier": "gold"}), got
assert got.latest_versions == [] and got.aliases == {}, got
# Epoch milliseconds of now, whatever time zone the server runs in.
assert abs(got.creation_timestamp / 1000 - time.time()) < 600, got.creation_timestamp
assert got.last_updated_timestamp >= got.creation_timestamp, got

# -- update, tags, rename ---------------------------------------------------------------------------
updated = c.update_registered_model(alpha, description="updated description")
assert updated.description == "updated description", updated
c.set_registered_model_tag(alpha, "owner", "ml-platform")
c.delete_registered_model_tag(alpha, "tier")
c.delete_registered_model_tag(alpha, "never-set")  # as in MLflow: nothing to delete, no error
got = c.get_registered_model(alpha)
assert got.tags == {"team": "fraud", "owner": "ml-platform"}, got.tags
assert got.description == "updated description", got

c.rename_registered_model(gamma, gamma2)  # MlflowClient returns None here, as with MLflow's server
renamed = c._get_registry_client().rename_registered_model(gamma2, gamma2)  # the answer, over the wire
assert renamed.name == gamma2 and renamed.tags == {"team": "fraud"}, renamed
assert c.get_registered_model(gamma2).tags == {"team": "fraud"}
not_found = refused("RESOURCE_DOES_NOT_EXIST", c.get_registered_model, gamma)

time.sleep(0.05)  # beta is then the model updated last, by more than a millisecond
c.update_registered_model(beta, description="beta, updated last")

# -- search ---------------------------------------------------------------------------------------


def names(filter_string: str, **kw: object) -> list[str]:
    return [m.name for m in c.search_registered_models(filter_string=filter_string, **kw)]


all_names = sorted([alpha, beta, gamma2, delta, epsilon])
search = {
    "equal": names(f"name = '{alpha}'"),
    "like": names(everyone),
    "ilike": names(f"name ILIKE '{prefix.upper()}-%'"),
    "like_other_case": names(f"name LIKE '{prefix.upper()}-%'"),
    "like_one_char": names(f"name LIKE '{prefix}-_eta'"),
    "tag": names(f"tags.team = 'fraud' AND {everyone}"),
    "tag_backquoted": names(f"tags.`team` = 'fraud' AND {everyone}"),
    "dotted_tag": names(f"tags.`model.kind` = 'tree' AND {everyone}"),
    "tag_like": names(f"tags.team LIKE 'fr%' AND {everyone}"),
    "two_tags": names(f"tags.team = 'fraud' AND tags.owner = 'ml-platform' AND {everyone}"),
    "name_desc": names(everyone, order_by=["name DESC"]),
    "updated_desc": names(everyone, order_by=["last_updated_timestamp DESC"]),
}
assert search["equal"] == [alpha], search
assert search["like"] == all_names, search  # by name unless told otherwise
assert search["ilike"] == all_names, search
assert search["like_other_case"] == [], search  # LIKE is case-sensitive here, on both backends
assert search["like_one_char"] == [beta], search
assert search["tag"] == sorted([alpha, gamma2]) == search["tag_backquoted"], search
assert search["dotted_tag"] == [delta], search
assert search["tag_like"] == sorted([alpha, gamma2]), search
assert search["two_tags"] == [alpha], search
assert search["name_desc"] == all_names[::-1], search
assert search["updated_desc"][0] == beta, search

pages, token = [], None
while True:
    page = c.search_registered_models(filter_string=everyone, max_results=2, page_token=token)
    pages.append([m.name for m in page])
    token = page.token
    if not token:
        break
assert pages == [all_names[0:2], all_names[2:4], all_names[4:5]], pages
# The fluent API pages through everything itself.
assert sorted(m.name for m in mlflow.search_registered_models(filter_string=everyone)) == all_names

# -- versions, latest per stage, aliases -------------------------------------------------------------
for i in (1, 2, 3):
    mv = c.create_model_version(alpha, f"s3://bucket/{alpha}/{i}", run_id=f"run-{i}")
    assert mv.version == str(i) and mv.current_stage == "None" and mv.status == "READY", mv
c.transition_model_version_stage(alpha, "1", "Staging")
c.transition_model_version_stage(alpha, "2", "Staging")
c.transition_model_version_stage(alpha, "2", "Production")

latest_all = by_stage(c.get_latest_versions(alpha))
latest_staging = by_stage(c.get_latest_versions(alpha, stages=["Staging"]))
latest_two = by_stage(c.get_latest_versions(alpha, stages=["production", "None"]))
assert latest_all == {"None": 3, "Staging": 1, "Production": 2}, latest_all
assert latest_staging == {"Staging": 1}, latest_staging
assert latest_two == {"Production": 2, "None": 3}, latest_two
assert by_stage(c.get_registered_model(alpha).latest_versions) == latest_all

c.set_registered_model_alias(alpha, "champion", "2")
c.set_registered_model_alias(alpha, "challenger", "1")
champion = c.get_model_version_by_alias(alpha, "champion")
assert champion.version == "2" and champion.current_stage == "Production", champion
assert champion.aliases == ["champion"], champion.aliases
assert c.get_registered_model(alpha).aliases == {"champion": "2", "challenger": "1"}
c.set_registered_model_alias(alpha, "challenger", "3")  # moves it
assert c.get_model_version_by_alias(alpha, "challenger").version == "3"
assert c.get_model_version(alpha, "1").aliases == []
c.delete_registered_model_alias(alpha, "challenger")
alias_gone = refused("INVALID_PARAMETER_VALUE", c.get_model_version_by_alias, alpha, "challenger")
c.delete_registered_model_alias(alpha, "never-set")  # as in MLflow: nothing to delete, no error
assert c.get_registered_model(alpha).aliases == {"champion": "2"}
# "latest" is the highest version; it and v<digits> may not be set (2.x refuses before sending,
# so the server is also asked directly, past the client's own check).
assert c.get_model_version_by_alias(alpha, "latest").version == "3"
reserved = {}
for alias in ("latest", "v1"):
    refused_anywhere("INVALID_PARAMETER_VALUE", c.set_registered_model_alias, alpha, alias, "1")
    reserved[alias] = refused("INVALID_PARAMETER_VALUE",
                              c._get_registry_client().set_registered_model_alias, alpha, alias, "1")
alias_no_model = refused("RESOURCE_DOES_NOT_EXIST", c._get_registry_client().get_model_version_by_alias,
                         f"{prefix}-missing", "champion")
alias_no_version = refused("RESOURCE_DOES_NOT_EXIST", c.set_registered_model_alias, alpha, "ghost", "99")

# -- delete -------------------------------------------------------------------------------------------
c.create_model_version(delta, f"s3://bucket/{delta}/1")
c.delete_registered_model(delta)  # with a version (not in production)
c.delete_registered_model(epsilon)
for gone in (delta, epsilon):
    refused("RESOURCE_DOES_NOT_EXIST", c.get_registered_model, gone)
production_kept = refused("RESOURCE_CONFLICT", c.delete_registered_model, alpha)
assert names(everyone) == sorted([alpha, beta, gamma2])
assert versions_of(c.search_model_versions(f"name = '{alpha}'")) == [1, 2, 3]

emit({"alpha": alpha, "beta": beta, "gamma": gamma, "gamma2": gamma2, "delta": delta, "epsilon": epsilon,
      "search": search, "pages": pages, "latest": latest_all, "major": MAJOR,
      "messages": {"not_found": not_found, "alias_gone": alias_gone, "reserved": reserved,
                   "alias_no_model": alias_no_model, "alias_no_version": alias_no_version,
                   "production_kept": production_kept}})
