"""The random operations the chaos clients send, legal and illegal, and the client's (possibly
stale) view of the models that makes most of them plausible.

A legal-looking move is chosen from the stage table against the last stage the client heard of;
other clients move the same versions meanwhile, so "legal" is an intent, not a promise. Illegal
operations whose refusal does not depend on timing (an unknown stage, a version that does not
exist, a body without a required field) carry the exact ``(status, code)`` they must get.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from tests.api.helpers import seg

# The stage table (DESIGN.md), written out here rather than imported: the suite checks the
# service against the design, not against itself.
ALLOWED = {"none": ["staging", "archived"], "staging": ["production", "archived", "none"],
           "production": ["archived"], "archived": ["staging", "production"]}
STAGES = list(ALLOWED)
MISSING_VERSION = 999_999
ALIASES = ("champion", "challenger")


@dataclass
class Action:
    kind: str
    method: str
    path: str
    body: Any = None
    legal: bool = True
    expect: tuple[int, str] | None = None
    token: str = "rel-a"
    model: str = ""


@dataclass
class World:
    """What the clients have heard: every model's versions and stages, and open requests."""

    models: list[str]
    approvals_model: str
    stages: dict[str, dict[int, str]] = field(default_factory=dict)
    open_requests: dict[str, set[int]] = field(default_factory=dict)

    def learn_version(self, model: str, v: dict[str, Any]) -> None:
        if isinstance(v, dict) and isinstance(v.get("version"), int) and isinstance(v.get("stage"), str):
            self.stages.setdefault(model, {})[v["version"]] = v["stage"]

    def learn(self, action: Action, status: int | None, body: Any) -> None:
        """Update the view from an answer (2xx ones; refusals say little about state)."""
        if status is None or not 200 <= status < 300 or not isinstance(body, dict):
            return
        m = action.model
        if "transition" in body and isinstance(body.get("version"), dict):
            self.learn_version(m, body["version"])
            for v in body["transition"].get("archived") or []:
                self.stages.setdefault(m, {})[v] = "archived"
        elif isinstance(body.get("items"), list) and action.kind == "list_versions":
            for v in body["items"]:
                self.learn_version(m, v)
        elif action.kind == "register":
            self.learn_version(m, body)
        elif action.kind in ("request_transition", "list_requests", "approve"):
            reqs = body.get("items") or [body.get("request", body)]
            for r in reqs:
                if isinstance(r, dict) and "id" in r:
                    target = self.open_requests.setdefault(r.get("model", m), set())
                    (target.add if r.get("state") == "pending" else target.discard)(r["id"])

    def versions(self, model: str) -> dict[int, str]:
        return self.stages.get(model, {})


def choose(world: World, rng: random.Random) -> Action:
    model = rng.choice(world.models)
    kind = rng.choices(list(_WEIGHTS), weights=list(_WEIGHTS.values()))[0]
    return _BUILDERS[kind](world, model, rng)


def _pick_version(world: World, model: str, rng: random.Random) -> tuple[int, str] | None:
    known = sorted(world.versions(model).items())
    if not known:
        return None
    recent = known[-8:]  # mostly the newest: that is where the action is
    return rng.choice(recent if rng.random() < 0.8 else known)


def _transition(world: World, model: str, rng: random.Random) -> Action:
    base = f"/models/{seg(model)}/versions"
    roll = rng.random()
    if roll < 0.04:
        return Action("transition", "POST", f"{base}/1/transitions", {"to_stage": "limbo"}, False,
                      (400, "validation_error"), model=model)
    if roll < 0.08:
        return Action("transition", "POST", f"{base}/{MISSING_VERSION}/transitions", {"to_stage": "staging"},
                      False, (404, "not_found"), model=model)
    picked = _pick_version(world, model, rng)
    if picked is None:
        return _register(world, model, rng)
    version, stage = picked
    legal = rng.random() < 0.75
    targets = ALLOWED[stage] if legal else [s for s in STAGES if s not in ALLOWED[stage]]
    body: dict[str, Any] = {"to_stage": rng.choice(targets), "comment": "chaos"}
    if rng.random() < 0.3:  # conditional moves: stale ones must be 412, never a wrong move
        body["expected_stage"] = stage if rng.random() < 0.8 else rng.choice(STAGES)
    if rng.random() < 0.2:
        body["expected_production_version"] = _in_production(world, model)
    return Action("transition", "POST", f"{base}/{version}/transitions", body, legal, model=model)


def _in_production(world: World, model: str) -> int | None:
    """The version the clients last saw in production (None: none), for expected_* fields."""
    return next((v for v, s in world.versions(model).items() if s == "production"), None)


def _register(world: World, model: str, rng: random.Random) -> Action:
    path = f"/models/{seg(model)}/versions"
    if rng.random() < 0.05:
        return Action("register", "POST", path, {"run_id": "no-source"}, False, (400, "validation_error"),
                      model=model)
    if rng.random() < 0.05:
        return Action("register", "POST", f"/models/{seg(model)}-missing/versions", {"source": "s3://x"},
                      False, (404, "not_found"), model=model)
    body = {"source": f"s3://chaos/{model}", "run_id": f"run-{rng.randrange(10**6)}",
            "metrics": {"auc": round(rng.uniform(0.5, 1.0), 4)}}
    return Action("register", "POST", path, body, model=model, token="editor" if rng.random() < 0.3 else "rel-a")


def _rollback(world: World, model: str, rng: random.Random) -> Action:
    body: dict[str, Any] = {"comment": "chaos rollback"}
    legal = True
    if rng.random() < 0.15:
        body, legal = {}, False  # a rollback needs a comment
    elif rng.random() < 0.4:
        body["expected_production_version"] = _in_production(world, model)
    return Action("rollback", "POST", f"/models/{seg(model)}/rollback", body, legal, model=model)


def _alias_set(world: World, model: str, rng: random.Random) -> Action:
    path = f"/models/{seg(model)}/aliases/{rng.choice(ALIASES)}"
    picked = _pick_version(world, model, rng)
    if picked is None or rng.random() < 0.1:
        return Action("alias_set", "PUT", path, {"version": MISSING_VERSION}, False, (404, "not_found"),
                      model=model)
    return Action("alias_set", "PUT", path, {"version": picked[0]}, model=model)


def _alias_delete(world: World, model: str, rng: random.Random) -> Action:
    return Action("alias_delete", "DELETE", f"/models/{seg(model)}/aliases/{rng.choice(ALIASES)}",
                  model=model)


def _request_transition(world: World, model: str, rng: random.Random) -> Action:
    model = world.approvals_model  # the one model whose production policy wants approvals
    staging = [v for v, s in world.versions(model).items() if s == "staging"]
    legal = bool(staging) and rng.random() < 0.85
    version = rng.choice(staging) if legal else (_pick_version(world, model, rng) or (1, ""))[0]
    return Action("request_transition", "POST", f"/models/{seg(model)}/versions/{version}/transition-requests",
                  {"to_stage": "production", "comment": "please"}, legal, token="editor", model=model)


def _approve(world: World, model: str, rng: random.Random) -> Action:
    model = world.approvals_model
    pending = sorted(world.open_requests.get(model, ()))
    if not pending or rng.random() < 0.25:
        return Action("list_requests", "GET", f"/transition-requests?model={seg(model)}&state=pending",
                      model=model)
    return Action("approve", "POST", f"/transition-requests/{rng.choice(pending)}/approve",
                  {"comment": "lgtm"}, token=rng.choice(("rel-a", "rel-b")), model=model)


def _create_model(world: World, model: str, rng: random.Random) -> Action:
    if rng.random() < 0.5:
        return Action("create_model", "POST", "/models", {"name": model}, False, (409, "already_exists"),
                      model=model)
    return Action("create_model", "POST", "/models", {"name": "bad/name"}, False, (400, "validation_error"),
                  model=model)


def _read(world: World, model: str, rng: random.Random) -> Action:
    m = seg(model)
    kind, path = rng.choice([
        ("list_versions", f"/models/{m}/versions?limit=1000"), ("get_model", f"/models/{m}"),
        ("production", f"/models/{m}/stages/production"), ("get_alias", f"/models/{m}/aliases/champion"),
        ("events", f"/events?model={m}&limit=20"), ("get_version", f"/models/{m}/versions/1"),
        ("missing_model", f"/models/{m}-missing")])
    expect = (404, "not_found") if kind == "missing_model" else None
    return Action(kind, "GET", path, legal=expect is None, expect=expect, model=model)


_WEIGHTS = {"transition": 36, "register": 12, "rollback": 4, "alias_set": 6, "alias_delete": 2,
            "request_transition": 6, "approve": 7, "create_model": 2, "read": 25}
_BUILDERS = {"transition": _transition, "register": _register, "rollback": _rollback,
             "alias_set": _alias_set, "alias_delete": _alias_delete,
             "request_transition": _request_transition, "approve": _approve,
             "create_model": _create_model, "read": _read}
