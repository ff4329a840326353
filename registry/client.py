"""A small synchronous client of the registry's HTTP API, for the CLI and for CI pipelines.

Errors:

- ``RegistryClientError``: the server answered with a non-2xx status; carries ``status`` and the
  RFC 9457 problem body (``code``, ``detail`` and any extension members in ``problem``).
- ``httpx.TransportError`` (and other ``httpx.HTTPError``\\ s that are not status errors): the
  server could not be reached or the connection failed; raised unchanged.

Settings: ``REGISTRY_URL`` (default ``http://127.0.0.1:8000``) and ``REGISTRY_TOKEN``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
PAGE_LIMIT = 1000


class RegistryClientError(Exception):
    """The server refused a request: ``status``, and the problem's ``code`` and ``detail``."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.code: str = str(problem.get("code") or f"http_{status}")
        self.detail: str = str(problem.get("detail") or problem.get("title") or "")
        super().__init__(f"{status} {self.code}: {self.detail}")


class RegistryClient:
    """One method per endpoint; list methods follow ``next_cursor`` and yield every item."""

    def __init__(self, base_url: str, token: str | None,
                 transport: httpx.BaseTransport | None = None, timeout: float = 30.0) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=base_url.rstrip("/") + "/api/v1", headers=headers,
                                  transport=transport, timeout=timeout)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None,
                 transport: httpx.BaseTransport | None = None) -> RegistryClient:
        env = os.environ if env is None else env
        return cls(env.get("REGISTRY_URL") or DEFAULT_URL, env.get("REGISTRY_TOKEN") or None,
                   transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing ---------------------------------------------------------------------------------

    def _request(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._http.request(method, path, **kwargs)
        if not response.is_success:
            try:
                problem = response.json()
            except ValueError:
                problem = {}
            if not isinstance(problem, dict):
                problem = {}
            problem.setdefault("detail", response.text[:200] or response.reason_phrase)
            raise RegistryClientError(response.status_code, problem)
        return response.json() if response.content else None

    def _pages(self, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        params = {k: v for k, v in params.items() if v is not None} | {"limit": PAGE_LIMIT}
        while True:
            page = self._request("GET", path, params=params)
            yield from page["items"]
            if not page.get("next_cursor"):
                return
            params["cursor"] = page["next_cursor"]

    # -- tokens -----------------------------------------------------------------------------------

    def create_token(self, name: str, role: str, *, principal: str | None = None,
                     models: list[str] | None = None, expires_at: str | None = None) -> dict[str, Any]:
        """Create a token; the answer's ``token`` is the secret, shown this once."""
        body = {"name": name, "role": role, "principal": principal, "models": models,
                "expires_at": expires_at}
        return self._request("POST", "/tokens", json={k: v for k, v in body.items() if v is not None})

    def list_tokens(self) -> Iterator[dict[str, Any]]:
        return self._pages("/tokens", {})

    def revoke_token(self, token_id: int) -> None:
        self._request("DELETE", f"/tokens/{token_id}")

    # -- models (enough to check a token works) ---------------------------------------------------

    def list_models(self) -> Iterator[dict[str, Any]]:
        return self._pages("/models", {})

    # -- audit ------------------------------------------------------------------------------------

    def audit_entries(self, model: str | None = None, **filters: Any) -> Iterator[dict[str, Any]]:
        """Every audit entry (one model's chain, or every visible chain), in the server's order.
        ``filters``: version, actor, action, since, until."""
        return self._pages("/audit", {"model": model, **filters})

    def audit_head(self, model: str | None = None) -> list[dict[str, Any]]:
        """Each visible chain's latest ``{chain, model, seq, hash}``."""
        params = {"model": model} if model is not None else {}
        return self._request("GET", "/audit/head", params=params)["items"]

    def verify_audit(self, model: str | None = None) -> dict[str, Any]:
        """The server's own verification: ``{ok, checked, first_bad_seq, first_bad_chain}``."""
        params = {"model": model} if model is not None else {}
        return self._request("GET", "/audit/verify", params=params)
