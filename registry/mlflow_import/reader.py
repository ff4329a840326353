"""Reading an MLflow server over its REST API: models, versions and artifact files, with retries."""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote, urlsplit

import httpx

API = "/api/2.0/mlflow"
ARTIFACTS = "/api/2.0/mlflow-artifacts/artifacts"
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
PROMPT_TAG = "mlflow.prompt.is_prompt"
BLOCK = 1024 * 1024
T = TypeVar("T")


def tags_of(entity: Mapping[str, Any]) -> dict[str, str]:
    return {t["key"]: t.get("value", "") for t in entity.get("tags", [])}


class UsageError(Exception):
    """Bad arguments or credentials, or an MLflow that does not answer as one: exit 2."""


class MlflowUnreachable(Exception):
    """MLflow did not answer after every retry: the run stops (exit 2)."""


class MlflowError(Exception):
    """MLflow answered one request with an error."""

    def __init__(self, what: str, status: int, message: str) -> None:
        super().__init__(f"{what}: MLflow answered {status}: {message}")
        self.status = status


class NotServedError(Exception):
    """A version's files are where MLflow's artifact proxy does not serve them (s3://, a path)."""


class _Busy(Exception):
    """A retryable answer (408, 429, 5xx)."""

    def __init__(self, status: int, message: str, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}")
        self.status, self.message, self.retry_after = status, message, retry_after


# -- reading MLflow ------------------------------------------------------------------------------

def mlflow_url(text: str) -> str:
    """--from: the MLflow server's http(s) URL, without credentials, query or fragment."""
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"{text!r} is not an http(s) URL")
    if parts.username is not None or parts.password is not None:
        raise argparse.ArgumentTypeError("credentials do not go in the URL: set MLFLOW_TRACKING_TOKEN, "
                                         "or MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD")
    if parts.query or parts.fragment:
        raise argparse.ArgumentTypeError("the URL is the server's root: no query or fragment")
    return text.rstrip("/")


def auth_headers(env: Mapping[str, str]) -> dict[str, str]:
    """MLflow's own variables: a token (Bearer), else a user and password (Basic)."""
    if env.get("MLFLOW_TRACKING_TOKEN"):
        return {"Authorization": f"Bearer {env['MLFLOW_TRACKING_TOKEN']}"}
    user, password = env.get("MLFLOW_TRACKING_USERNAME"), env.get("MLFLOW_TRACKING_PASSWORD")
    if bool(user) != bool(password):
        raise UsageError("set both MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD, or neither")
    if user and password:
        return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}
    return {}


def name_filter(name: str) -> str:
    """A search filter for one model's versions. MLflow's filter strings cannot escape a quote,
    so such names are matched with LIKE ('_' for the quote) and the caller keeps exact names."""
    if "'" in name or "\\" in name:
        return "name LIKE '" + name.replace("'", "_").replace("\\", "_") + "'"
    return f"name = '{name}'"


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
        return f"{body.get('error_code', '')}: {body.get('message', '')}".strip(": ")
    except (ValueError, AttributeError):
        return response.text[:300]


def _check(what: str, response: httpx.Response) -> httpx.Response:
    if response.status_code == 200:
        return response
    if response.status_code in RETRY_STATUSES:
        after = response.headers.get("Retry-After", "")
        raise _Busy(response.status_code, _error_message(response),
                    float(after) if after.replace(".", "", 1).isdigit() else None)
    raise MlflowError(what, response.status_code, _error_message(response))


class MlflowReader:
    """MLflow's registry and artifact proxy over REST, every request retried with backoff."""

    def __init__(self, url: str, client: httpx.AsyncClient, *, attempts: int = 5,
                 backoff: float = 0.5, page_size: int = 1000,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.url, self.client = url, client
        self.attempts, self.backoff, self.page_size, self.sleep = attempts, backoff, page_size, sleep

    @classmethod
    def open(cls, url: str, env: Mapping[str, str], **options: Any) -> MlflowReader:
        headers = {"User-Agent": "registry-import", **auth_headers(env)}
        client = httpx.AsyncClient(headers=headers, follow_redirects=True,
                                   timeout=httpx.Timeout(120, connect=10),
                                   transport=options.pop("transport", None))
        return cls(url, client, **options)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def _retrying(self, what: str, once: Callable[[], Awaitable[T]]) -> T:
        attempt = 0
        while True:
            attempt += 1
            try:
                return await once()
            except (httpx.TransportError, _Busy) as exc:
                if attempt < self.attempts:
                    pause = getattr(exc, "retry_after", None) or self.backoff * 2 ** (attempt - 1)
                    await self.sleep(min(pause, 60.0))
                    continue
                if isinstance(exc, _Busy):
                    raise MlflowError(what, exc.status, exc.message) from None
                raise MlflowUnreachable(f"{what}: no answer from {self.url} after {attempt} "
                                        f"attempts ({type(exc).__name__}: {exc})") from exc

    async def _json(self, what: str, path: str, params: dict[str, Any]) -> dict[str, Any]:
        async def once() -> dict[str, Any]:
            response = _check(what, await self.client.get(self.url + path, params=params))
            try:
                body = response.json()
            except ValueError:
                raise MlflowError(what, 200, "the answer is not JSON: is this an MLflow server?") from None
            if not isinstance(body, dict):
                raise MlflowError(what, 200, "the answer is not a JSON object")
            return body

        return await self._retrying(what, once)

    async def _all(self, what: str, path: str, key: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = []
        token = None
        while True:
            page = await self._json(what, path, {**params, **({"page_token": token} if token else {})})
            items += page.get(key, [])
            token = page.get("next_page_token")
            if not token:
                return items

    async def models(self) -> list[dict[str, Any]]:
        """Every registered model that is not a prompt, by name."""
        found = await self._all("listing models", API + "/registered-models/search", "registered_models",
                                {"max_results": min(self.page_size, 1000)})
        return sorted((m for m in found if tags_of(m).get(PROMPT_TAG, "").lower() != "true"),
                      key=lambda m: m["name"])

    async def versions(self, name: str) -> list[dict[str, Any]]:
        """The model's live versions (MLflow never lists deleted ones), by number."""
        found = await self._all(f"listing versions of {name!r}", API + "/model-versions/search",
                                "model_versions", {"filter": name_filter(name),
                                                   "max_results": self.page_size,
                                                   "order_by": "version_number ASC"})
        return sorted((v for v in found if v.get("name") == name), key=lambda v: int(v["version"]))

    async def artifact_root(self, name: str, version: int) -> str:
        """Where the artifact proxy serves the version's files (a path under its root)."""
        found = await self._json(f"{name!r} version {version}: its artifact location",
                                 API + "/model-versions/get-download-uri",
                                 {"name": name, "version": str(version)})
        return await self.resolve(found["artifact_uri"])

    async def resolve(self, uri: str) -> str:
        """The proxied path of an artifact URI: ``mlflow-artifacts:/P`` is P; ``models:/m-<id>``
        (a logged model) and ``runs:/<run>/<path>`` name one, found through MLflow."""
        for _ in range(3):
            if uri.startswith("mlflow-artifacts:"):
                return urlsplit(uri).path.strip("/")
            if uri.startswith("models:/m-"):
                uri = await self._logged_model_uri(uri.removeprefix("models:/").split("/", 1)[0])
            elif uri.startswith("runs:/"):
                uri = await self._run_uri(uri.removeprefix("runs:/"))
            else:
                break
        raise NotServedError(f"its files are at {uri}, which MLflow's artifact proxy does not serve; "
                             "copy them yourself")

    async def _logged_model_uri(self, model_id: str) -> str:
        found = await self._json(f"logged model {model_id}", f"{API}/logged-models/{quote(model_id)}", {})
        return found["model"]["info"]["artifact_uri"]

    async def _run_uri(self, tail: str) -> str:
        run_id, _, path = tail.partition("/")
        found = await self._json(f"run {run_id}", API + "/runs/get", {"run_id": run_id})
        return found["run"]["info"]["artifact_uri"].rstrip("/") + ("/" + path if path else "")

    async def files(self, root: str, sub: str = "") -> list[tuple[str, int]]:
        """Every file under ``root`` (recursively) as (path relative to root, size)."""
        where = f"{root}/{sub}".strip("/")
        listed = await self._json(f"listing {where}", ARTIFACTS, {"path": where})
        found: list[tuple[str, int]] = []
        for entry in listed.get("files", []):
            rel = f"{sub}/{entry['path'].rsplit('/', 1)[-1]}".strip("/")
            if entry.get("is_dir"):
                found += await self.files(root, rel)
            else:
                found.append((rel, int(entry.get("file_size", 0))))
        return found

    async def download(self, path: str, target: Path) -> tuple[int, str]:
        """The file's bytes into ``target``; returns their size and sha256."""
        url = f"{self.url}{ARTIFACTS}/{quote(path)}"

        async def once() -> tuple[int, str]:
            sha, size = hashlib.sha256(), 0
            async with self.client.stream("GET", url) as response:
                if response.status_code != 200:
                    await response.aread()
                    _check(f"downloading {path}", response)
                with target.open("wb") as out:
                    async for block in response.aiter_bytes(BLOCK):
                        sha.update(block)
                        size += len(block)
                        out.write(block)
            return size, sha.hexdigest()

        return await self._retrying(f"downloading {path}", once)


# -- what MLflow's entries become here -----------------------------------------------------------
