"""Helpers of the MLflow suite: a running registry as the tests read it back (audit, events,
stages), and MLflow client scripts run as subprocesses with a client venv's interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.support import Server

SCRIPTS = Path(__file__).resolve().parent / "scripts"


@dataclass
class Registry:
    """A running server and a token per role on it; HTTP clients kept open for the session (a
    new httpx client costs tens of milliseconds, most of it loading CA certificates)."""

    server: Server
    backend: str
    tokens: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._admin = httpx.Client(base_url=self.server.api, timeout=60, headers=self.server.headers)
        self.raw = httpx.Client(base_url=self.server.url, timeout=60)  # no credentials of its own

    def close(self) -> None:
        self._admin.close()
        self.raw.close()

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def admin(self) -> str:
        return self.server.token

    @contextmanager
    def http(self, token: str | None = None) -> Iterator[httpx.Client]:
        """The native API (``/api/v1``), as admin unless another token is given."""
        if token is None:
            yield self._admin
            return
        with httpx.Client(base_url=self.server.api, timeout=60,
                          headers={"Authorization": f"Bearer {token}"}) as c:
            yield c

    def audit(self, model: str) -> list[dict[str, Any]]:
        """Every audit entry of a model's chain, in order."""
        return self._all("/audit", {"model": model}, "cursor")

    def events(self, model: str) -> list[dict[str, Any]]:
        """Every outbox event of a model, in sequence order."""
        return self._all("/events", {"model": model}, "after")

    def _all(self, path: str, params: dict[str, Any], cursor_name: str) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        cursor = None
        with self.http() as c:
            while True:
                r = c.get(path, params={**params, "limit": 1000, **({cursor_name: cursor} if cursor else {})})
                assert r.status_code == 200, r.text
                page = r.json()
                items += page["items"]
                cursor = page["next_cursor"]
                if not cursor:
                    return items

    def audit_heads(self) -> dict[str, int]:
        """Each chain's last seq (the system chain included: the admin sees it)."""
        with self.http() as c:
            r = c.get("/audit/head")
        assert r.status_code == 200, r.text
        return {h["chain"]: h["seq"] for h in r.json()["items"]}

    def verify(self, model: str | None = None) -> dict[str, Any]:
        with self.http() as c:
            r = c.get("/audit/verify", params={"model": model} if model else {})
        assert r.status_code == 200, r.text
        return r.json()

    def stages(self, model: str) -> dict[int, str]:
        """Version number -> stage (lower case, as the native API spells it) of the live versions."""
        with self.http() as c:
            r = c.get(f"/models/{model}/versions", params={"limit": 1000})
        assert r.status_code == 200, r.text
        return {v["version"]: v["stage"] for v in r.json()["items"]}

    def log_mark(self) -> int:
        """Where the server's log ends now (for :meth:`assert_log_clean`)."""
        return self.server.log.stat().st_size

    def assert_log_clean(self, since: int) -> None:
        """No 5xx answer, traceback or error line in the server's log since the mark."""
        with self.server.log.open("rb") as f:
            f.seek(since)
            new = f.read().decode(errors="replace")
        bad = []
        for line in new.splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                entry = {}
            if "Traceback" in line or entry.get("level") in ("error", "critical") \
                    or (entry.get("event") == "request" and int(entry.get("status", 0)) >= 500):
                bad.append(line)
        assert not bad, "server log:\n" + "\n".join(bad[:20])


def model_dirs(root: Path, count: int) -> list[str]:
    """``count`` model directories (absolute paths, a version's ``source``), each holding a
    ``weights.txt`` that no other holds, so a download proves which one it read."""
    dirs = []
    for i in range(1, count + 1):
        d = root / f"model-v{i}"
        d.mkdir()
        (d / "weights.txt").write_text(f"weights of version {i}: {uuid.uuid4()}\n")
        dirs.append(str(d))
    return dirs


def client_env(registry: Registry, *, token: str | None = None, basic: str | None = None,
               extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment an MLflow script runs in: the server as tracking and registry URI, and a
    token as Bearer (``token``) or as the Basic password (``basic``); a home of its own, so no
    ``~/.mlflow/credentials`` of the machine's takes precedence. No retries, so a 5xx shows at once
    instead of after minutes of back-off."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("MLFLOW_", "REGISTRY_", "DATABRICKS_", "AWS_"))}
    env.update(HOME=str(client_home(registry)), MLFLOW_TRACKING_URI=registry.url, MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
               MLFLOW_HTTP_REQUEST_TIMEOUT="60", PYTHONDONTWRITEBYTECODE="1", PYTHONWARNINGS="ignore",
               NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    if basic is not None:
        env.update(MLFLOW_TRACKING_USERNAME="ci", MLFLOW_TRACKING_PASSWORD=basic)
    else:
        env["MLFLOW_TRACKING_TOKEN"] = token or registry.admin
    env.update(extra or {})
    return env


def client_home(registry: Registry) -> Path:
    home = registry.server.log.parent / "client-home"
    home.mkdir(exist_ok=True)
    return home


def run_script(python: Path, script: str, registry: Registry, *args: str, timeout: float = 180,
               **env_kw: Any) -> dict[str, Any]:
    """Run ``scripts/<script>`` with a client's interpreter; it must exit 0 and print its JSON
    summary as the last line of stdout. The server's log must stay clean meanwhile."""
    mark = registry.log_mark()
    proc = subprocess.run([str(python), str(SCRIPTS / script), *args], env=client_env(registry, **env_kw),
                          capture_output=True, text=True, timeout=timeout, cwd=client_home(registry))
    assert proc.returncode == 0, (f"{script} exited {proc.returncode}\n--- stdout\n{proc.stdout[-4000:]}"
                                  f"\n--- stderr\n{proc.stderr[-6000:]}")
    lines = proc.stdout.strip().splitlines()
    assert lines, f"{script} printed nothing\n{proc.stderr[-4000:]}"
    registry.assert_log_clean(mark)
    return json.loads(lines[-1])


STAGE_CHANGED = "model_version.stage_changed"


def describe(action: str, version: int | None, data: dict[str, Any]) -> tuple[Any, ...]:
    """One change as a comparable tuple: (action, version[, from stage, to stage | alias])."""
    if action == STAGE_CHANGED:
        return action, version, data["from"], data["to"]
    if action.startswith("model_version.alias_"):
        return action, version, data["alias"]
    return action, version


def audit_changes(entries: list[dict[str, Any]]) -> list[set[tuple[Any, ...]]]:
    """Audit entries as one set of changes per request, in the order the requests committed:
    what one call changed (a promotion and the incumbent it archived, say) is one set."""
    def data(e: dict[str, Any]) -> dict[str, Any]:
        before, after = e["before"] or {}, e["after"] or {}
        return {"from": before.get("stage"), "to": after.get("stage"),
                "alias": after.get("alias", before.get("alias"))}
    return _grouped((e["request_id"], describe(e["action"], e["version"], data(e))) for e in entries)


def event_changes(events: list[dict[str, Any]]) -> list[set[tuple[Any, ...]]]:
    """The same, from the outbox events (``data.from_stage``/``to_stage``, ``data.alias``)."""
    def data(e: dict[str, Any]) -> dict[str, Any]:
        d = e["data"]
        return {"from": d.get("from_stage"), "to": d.get("to_stage"), "alias": d.get("alias")}
    return _grouped((e["request_id"], describe(e["type"], e["version"], data(e))) for e in events)


def _grouped(items: Any) -> list[set[tuple[Any, ...]]]:
    groups: dict[str, set[tuple[Any, ...]]] = {}
    for request_id, change in items:
        groups.setdefault(request_id, set()).add(change)
    return list(groups.values())


def created(versions: range | list[int] = ()) -> list[set[tuple[Any, ...]]]:
    """A model's creation and then its versions', one request each."""
    return [{("model.created", None)}, *({("model_version.created", v)} for v in versions)]


def moved(version: int, from_stage: str, to_stage: str) -> tuple[Any, ...]:
    return STAGE_CHANGED, version, from_stage, to_stage
