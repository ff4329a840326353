"""A small typed client of the registry's HTTP API, synchronous and asynchronous, for the CLI and CI.

Every operation is built once, as an :class:`Op` (method, path, query, body, headers, and how to
read the answer); :class:`RegistryClient` and :class:`AsyncRegistryClient` differ only in how they
send one, so both have the same methods with the same arguments (the async ones are awaited, and
their lists are async iterators).

Errors:

- ``RegistryClientError``: the server answered with a non-2xx status; carries ``status`` and the
  RFC 9457 problem body (``code``, ``detail`` and any extension members in ``problem``).
- ``httpx.TransportError`` (and other ``httpx.HTTPError``\\ s that are not status errors): the
  server could not be reached or the connection failed, after the retries; raised unchanged.

Safe retries: every POST carries an ``Idempotency-Key``, the caller's ``idempotency_key`` or a fresh
uuid4 per call, and the client's own retries of that call resend the same key, so the server
replays the first outcome instead of applying it twice. GET, PUT and POST are retried (see
:class:`Retry`) on network errors and timeouts, 503 and 409 ``idempotency_in_progress``.

Settings: ``REGISTRY_URL`` (default ``http://127.0.0.1:8000``) and ``REGISTRY_TOKEN``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Generic, Literal, NotRequired, ParamSpec, TypedDict, TypeVar, overload
from urllib.parse import quote

import httpx

from registry.client.answers import (  # noqa: F401 - re-exported
    Approval,
    ArtifactFile,
    AuditEntry,
    Check,
    CheckReport,
    CheckStatus,
    CreatedToken,
    Dataset,
    Decision,
    GateReport,
    GateResult,
    Model,
    ModelVersion,
    Policy,
    ReportedCheck,
    RequestState,
    Resolved,
    Stage,
    Token,
    Transition,
    TransitionRequest,
    TransitionResult,
)

DEFAULT_URL = "http://127.0.0.1:8000"
PAGE_LIMIT = 1000
CHUNK = 1024 * 1024


class RegistryClientError(Exception):
    """The server refused a request: ``status``, and the problem's ``code`` and ``detail``."""

    def __init__(self, status: int, problem: dict[str, Any]) -> None:
        self.status = status
        self.problem = problem
        self.code: str = str(problem.get("code") or f"http_{status}")
        self.detail: str = str(problem.get("detail") or problem.get("title") or "")
        super().__init__(f"{status} {self.code}: {self.detail}")


# -- one operation, and when to send it again ------------------------------------------------------

T = TypeVar("T")
P = ParamSpec("P")
Outcome = httpx.Response | httpx.TransportError


def _json(response: httpx.Response) -> Any:
    return response.json() if response.content else None


@dataclass(frozen=True)
class Op(Generic[T]):
    """One request, built once per logical call, so that every retry sends the same bytes and key."""

    method: str
    path: str
    params: Mapping[str, Any] = field(default_factory=dict)
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    read: Callable[[httpx.Response], T] = _json

    def request_args(self) -> dict[str, Any]:
        args: dict[str, Any] = {"params": {k: v for k, v in self.params.items() if v is not None},
                                "headers": dict(self.headers)}
        if self.body is not None:
            args["json"] = self.body
        return args

    def answer(self, outcome: Outcome) -> T:
        """The operation's result, or its failure raised."""
        if isinstance(outcome, Exception):
            raise outcome
        if not outcome.is_success:
            raise RegistryClientError(outcome.status_code, _problem(outcome))
        return self.read(outcome)


def _problem(response: httpx.Response) -> dict[str, Any]:
    try:
        problem = response.json()
    except ValueError:
        problem = None
    problem = problem if isinstance(problem, dict) else {}
    problem.setdefault("detail", response.text[:200] or response.reason_phrase)
    return problem


@dataclass(frozen=True)
class Retry:
    """``attempts`` tries in all (1: no retry); waits ``backoff`` seconds before the second,
    doubling each time up to ``max_delay``, or what a 503's ``Retry-After`` asks within that."""

    attempts: int = 4
    backoff: float = 0.5
    max_delay: float = 10.0
    methods: frozenset[str] = frozenset({"GET", "PUT", "POST"})

    def delay(self, op: Op[Any], attempt: int, outcome: Outcome) -> float | None:
        """Seconds to wait before sending ``op`` again after its ``attempt``-th try, or None."""
        if attempt >= self.attempts or op.method not in self.methods or not _transient(outcome):
            return None
        wait = self.backoff * 2.0 ** (attempt - 1)
        if isinstance(outcome, httpx.Response) and outcome.headers.get("retry-after", "").isdigit():
            wait = float(outcome.headers["retry-after"])
        return min(wait, self.max_delay)


def _transient(outcome: Outcome) -> bool:
    if isinstance(outcome, httpx.TransportError):  # not a bad URL or a local misuse: those stay bad
        return isinstance(outcome, httpx.NetworkError | httpx.TimeoutException | httpx.RemoteProtocolError)
    if outcome.status_code == 409:
        return _problem(outcome).get("code") == "idempotency_in_progress"
    return outcome.status_code == 503


def seg(value: str | int) -> str:
    """One percent-encoded path segment (model names may hold spaces, '%', '?' or '#')."""
    return quote(str(value), safe="")


def post(path: str, body: Any, key: str | None, read: Callable[[httpx.Response], T] = _json,
         headers: Mapping[str, str] | None = None) -> Op[T]:
    """A POST with its Idempotency-Key: the caller's, or a fresh one for this call."""
    return Op("POST", path, body=body, read=read,
              headers={**(headers or {}), "Idempotency-Key": key or str(uuid.uuid4())})


def _items(response: httpx.Response) -> Any:
    return response.json()["items"]


def _present(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


class _Unset:
    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()  # "no precondition", where None means "expect no production version"


# -- turning operations into methods of both clients -----------------------------------------------


class endpoint(Generic[P, T]):  # noqa: N801 - used as a decorator
    """An Op builder as a method: ``RegistryClient`` returns ``T``, the async client awaits it."""

    def __init__(self, build: Callable[P, Op[T]]) -> None:
        self.build = build
        functools.update_wrapper(self, build)  # type: ignore[arg-type]

    @overload
    def __get__(self, client: RegistryClient, owner: Any) -> Callable[P, T]: ...
    @overload
    def __get__(self, client: AsyncRegistryClient, owner: Any) -> Callable[P, Awaitable[T]]: ...
    def __get__(self, client: Any, owner: Any) -> Any:
        if client is None:
            return self
        return functools.wraps(self.build)(lambda *a, **kw: client._call(self.build(*a, **kw)))


class Page(TypedDict, Generic[T]):
    items: list[T]
    next_cursor: NotRequired[str | None]


class paged(Generic[P, T]):  # noqa: N801 - used as a decorator
    """A list Op builder as a method that follows ``next_cursor`` and yields every item."""

    def __init__(self, build: Callable[P, Op[Page[T]]]) -> None:
        self.build = build
        functools.update_wrapper(self, build)  # type: ignore[arg-type]

    @overload
    def __get__(self, client: RegistryClient, owner: Any) -> Callable[P, Iterator[T]]: ...
    @overload
    def __get__(self, client: AsyncRegistryClient, owner: Any) -> Callable[P, AsyncIterator[T]]: ...
    def __get__(self, client: Any, owner: Any) -> Any:
        if client is None:
            return self
        return functools.wraps(self.build)(lambda *a, **kw: client._pages(self.build(*a, **kw)))


def _next_page(op: Op[Page[T]], page: Page[T]) -> Op[Page[T]] | None:
    cursor = page.get("next_cursor")
    return Op(op.method, op.path, {**op.params, "cursor": cursor}, read=op.read) if cursor else None


def _list(path: str, **params: Any) -> Op[Any]:
    return Op("GET", path, {**params, "limit": PAGE_LIMIT})


def _version_path(model: str, version: int) -> str:
    return f"/models/{seg(model)}/versions/{seg(version)}"


class _Operations:
    """Every operation, once; the two clients below inherit them and differ only in sending."""

    # -- models and versions ----------------------------------------------------------------------

    @endpoint
    def create_model(name: str, *, description: str | None = None, tags: dict[str, str] | None = None,
                     idempotency_key: str | None = None) -> Op[Model]:
        """Register a model (409 ``already_exists`` if the name is taken)."""
        return post("/models", _present(name=name, description=description, tags=tags), idempotency_key)

    @paged
    def list_models(name_prefix: str | None = None) -> Op[Page[Model]]:
        """Every model the token may see, by name."""
        return _list("/models", name_prefix=name_prefix)

    @endpoint
    def register_version(model: str, source: str, *, run_id: str | None = None,
                         description: str | None = None, tags: dict[str, str] | None = None,
                         metrics: dict[str, float] | None = None, inputs: list[Dataset] | None = None,
                         idempotency_key: str | None = None) -> Op[ModelVersion]:
        """Register the model's next version, in stage ``none``."""
        body = _present(source=source, run_id=run_id, description=description, tags=tags,
                        metrics=metrics, inputs=inputs)
        return post(f"/models/{seg(model)}/versions", body, idempotency_key)

    @paged
    def list_versions(model: str, stage: str | None = None, run_id: str | None = None) -> Op[Page[ModelVersion]]:
        """The model's versions by number."""
        return _list(f"/models/{seg(model)}/versions", stage=stage, run_id=run_id)

    @endpoint
    def get_version(model: str, version: int) -> Op[ModelVersion]:
        """One version, with its ``etag``."""
        return Op("GET", _version_path(model, version))

    @endpoint
    def transition(model: str, version: int, to_stage: str, *, comment: str | None = None,
                   expected_stage: str | None = None, expected_production_version: int | None = UNSET,
                   if_match: str | None = None, idempotency_key: str | None = None) -> Op[TransitionResult]:
        """Move a version; ``expected_production_version=None`` requires that none is in production."""
        body = _present(to_stage=to_stage, comment=comment, expected_stage=expected_stage)
        if expected_production_version is not UNSET:
            body["expected_production_version"] = expected_production_version
        return post(f"{_version_path(model, version)}/transitions", body, idempotency_key,
                    headers={"If-Match": if_match} if if_match else None)

    @endpoint
    def rollback(model: str, comment: str, *, expected_production_version: int | None = UNSET,
                 idempotency_key: str | None = None) -> Op[TransitionResult]:
        """Put the previous production version back, archiving the current one: one step further
        back each time (a version a rollback archived is never a target again); 422 when no step
        is left. ``expected_production_version``: the version to roll back from (412 when it is
        no longer in production, so a retry after success changes nothing)."""
        body: dict[str, Any] = {"comment": comment}
        if expected_production_version is not UNSET:
            body["expected_production_version"] = expected_production_version
        return post(f"/models/{seg(model)}/rollback", body, idempotency_key)

    # -- checks, policies, gates --------------------------------------------------------------------

    @endpoint
    def report_check(model: str, version: int, name: str, status: CheckStatus, *,
                     details_url: str | None = None, summary: str | None = None,
                     idempotency_key: str | None = None) -> Op[ReportedCheck]:
        """Report a CI check's status; the latest report per name counts."""
        body = _present(name=name, status=status, details_url=details_url, summary=summary)
        return post(f"{_version_path(model, version)}/checks", body, idempotency_key)

    @endpoint
    def list_checks(model: str, version: int) -> Op[list[Check]]:
        """The latest report of each check name, each with its history."""
        return Op("GET", f"{_version_path(model, version)}/checks", read=_items)

    @endpoint
    def get_policy(model: str, stage: str) -> Op[Policy]:
        """The rules for entering ``stage`` (staging or production) and where they come from."""
        return Op("GET", f"/models/{seg(model)}/policies/{seg(stage)}")

    @endpoint
    def set_policy(model: str, stage: str, rules: dict[str, Any]) -> Op[Policy]:
        """Replace the model's rules for entering ``stage`` (admin)."""
        return Op("PUT", f"/models/{seg(model)}/policies/{seg(stage)}", body=rules)

    @endpoint
    def delete_policy(model: str, stage: str) -> Op[None]:
        """Drop the model's own rules for ``stage`` (the default policy applies again)."""
        return Op("DELETE", f"/models/{seg(model)}/policies/{seg(stage)}")

    @endpoint
    def gates(model: str, version: int, to_stage: str, *, comment: str | None = None) -> Op[GateReport]:
        """Whether the move is allowed now, with every gate's result; changes nothing."""
        return Op("GET", f"{_version_path(model, version)}/gates",
                  params={"to_stage": to_stage, "comment": comment})

    # -- transition requests ----------------------------------------------------------------------

    @endpoint
    def request_transition(model: str, version: int, to_stage: str, *, comment: str | None = None,
                           idempotency_key: str | None = None) -> Op[TransitionRequest]:
        """Ask releasers to approve a move; 409 ``conflict`` with ``request_id`` if one is open."""
        return post(f"{_version_path(model, version)}/transition-requests",
                    _present(to_stage=to_stage, comment=comment), idempotency_key)

    @endpoint
    def get_request(request_id: int) -> Op[TransitionRequest]:
        """One transition request."""
        return Op("GET", f"/transition-requests/{seg(request_id)}")

    @paged
    def list_requests(model: str | None = None, state: str | None = None,
                      requester: str | None = None) -> Op[Page[TransitionRequest]]:
        """Transition requests, newest first."""
        return _list("/transition-requests", model=model, state=state, requester=requester)

    @endpoint
    def decide_request(request_id: int, decision: Literal["approve", "reject", "cancel"], *,
                       comment: str | None = None, idempotency_key: str | None = None) -> Op[Decision]:
        """Approve or reject (releaser), or cancel (the requester or an admin) a request."""
        return post(f"/transition-requests/{seg(request_id)}/{decision}", _present(comment=comment),
                    idempotency_key)

    # -- tokens and audit -------------------------------------------------------------------------

    @endpoint
    def create_token(name: str, role: str, *, principal: str | None = None, models: list[str] | None = None,
                     expires_at: str | None = None, idempotency_key: str | None = None) -> Op[CreatedToken]:
        """Create a token; the answer's ``token`` is the secret, shown this once."""
        body = _present(name=name, role=role, principal=principal, models=models, expires_at=expires_at)
        return post("/tokens", body, idempotency_key)

    @paged
    def list_tokens() -> Op[Page[Token]]:
        """Every token, without secrets (admin)."""
        return _list("/tokens")

    @endpoint
    def revoke_token(token_id: int) -> Op[None]:
        """Revoke a token; it is refused within a second."""
        return Op("DELETE", f"/tokens/{seg(token_id)}")

    @paged
    def audit_entries(model: str | None = None, **filters: Any) -> Op[Page[AuditEntry]]:
        """Every audit entry (one model's chain, or every visible chain), in the server's order.
        ``filters``: version, actor, action, since, until."""
        return _list("/audit", model=model, **filters)

    # -- artifacts ---------------------------------------------------------------------------------

    @paged
    def list_artifacts(model: str, version: int) -> Op[Page[ArtifactFile]]:
        """The version's files by path, with sizes and sha256."""
        return _list(f"{_version_path(model, version)}/artifacts")

    @endpoint
    def resolve(uri: str) -> Op[Resolved]:
        """The version a ``models:/`` URI names now."""
        return Op("GET", "/resolve", params={"uri": uri})

    @endpoint
    def audit_head(model: str | None = None) -> Op[list[dict[str, Any]]]:
        """Each visible chain's latest ``{chain, model, seq, hash}``."""
        return Op("GET", "/audit/head", params={"model": model}, read=_items)

    @endpoint
    def verify_audit(model: str | None = None) -> Op[dict[str, Any]]:
        """The server's own verification: ``{ok, checked, first_bad_seq, first_bad_chain}``."""
        return Op("GET", "/audit/verify", params={"model": model})


# -- the two clients -------------------------------------------------------------------------------


def _http_options(base_url: str, token: str | None, timeout: float) -> dict[str, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return {"base_url": base_url.rstrip("/") + "/api/v1", "headers": headers, "timeout": timeout}


def _env(env: Mapping[str, str] | None) -> tuple[str, str | None]:
    env = os.environ if env is None else env
    return env.get("REGISTRY_URL") or DEFAULT_URL, env.get("REGISTRY_TOKEN") or None


class RegistryClient(_Operations):
    """The synchronous client; use it as a context manager, or call :meth:`close`."""

    def __init__(self, base_url: str, token: str | None, transport: httpx.BaseTransport | None = None,
                 timeout: float = 30.0, retry: Retry | None = None) -> None:
        self._http = httpx.Client(transport=transport, **_http_options(base_url, token, timeout))
        self.retry = retry or Retry()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, transport: httpx.BaseTransport | None = None,
                 retry: Retry | None = None) -> RegistryClient:
        """A client of ``REGISTRY_URL`` with ``REGISTRY_TOKEN``."""
        return cls(*_env(env), transport=transport, retry=retry)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, op: Op[T]) -> T:
        attempt = 1
        while (delay := self.retry.delay(op, attempt, outcome := self._send(op))) is not None:
            time.sleep(delay)
            attempt += 1
        return op.answer(outcome)

    def _send(self, op: Op[Any]) -> Outcome:
        try:
            return self._http.request(op.method, op.path, **op.request_args())
        except httpx.TransportError as exc:
            return exc

    def _pages(self, op: Op[Page[T]] | None) -> Iterator[T]:
        while op is not None:
            page = self._call(op)
            yield from page["items"]
            op = _next_page(op, page)

    def upload_artifact(self, model: str, version: int, path: str, file: BinaryIO,
                        sha256: str) -> ArtifactFile:
        """Stream ``file`` to the version's ``path``; the server refuses it unless its bytes
        hash to ``sha256`` (hex). Not retried: the body is a stream."""
        digest = "sha-256=:" + base64.b64encode(bytes.fromhex(sha256)).decode() + ":"
        url = f"{_version_path(model, version)}/artifacts/{quote(path, safe='/')}"
        headers = {"Content-Digest": digest}
        with contextlib.suppress(OSError, ValueError):  # a real file: the server can refuse early
            headers["Content-Length"] = str(os.fstat(file.fileno()).st_size - file.tell())
        response = self._http.put(url, content=iter(functools.partial(file.read, CHUNK), b""),
                                  headers=headers, timeout=None)
        return Op[ArtifactFile]("PUT", url).answer(response)

    @contextlib.contextmanager
    def download_artifact(self, model: str, version: int, path: str) -> Iterator[httpx.Response]:
        """The file's response, its body not yet read (``iter_bytes``); a presigned redirect is
        followed, without our token (httpx drops it when the origin changes)."""
        url = f"{_version_path(model, version)}/artifacts/{quote(path, safe='/')}"
        with self._http.stream("GET", url, follow_redirects=True, timeout=None) as response:
            if response.status_code >= 400:
                response.read()
                raise RegistryClientError(response.status_code, _problem(response))
            yield response


class AsyncRegistryClient(_Operations):
    """The asynchronous client: the same methods, awaited; lists are async iterators."""

    def __init__(self, base_url: str, token: str | None, transport: httpx.AsyncBaseTransport | None = None,
                 timeout: float = 30.0, retry: Retry | None = None) -> None:
        self._http = httpx.AsyncClient(transport=transport, **_http_options(base_url, token, timeout))
        self.retry = retry or Retry()

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, transport: httpx.AsyncBaseTransport | None = None,
                 retry: Retry | None = None) -> AsyncRegistryClient:
        """A client of ``REGISTRY_URL`` with ``REGISTRY_TOKEN``."""
        return cls(*_env(env), transport=transport, retry=retry)

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncRegistryClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _call(self, op: Op[T]) -> T:
        attempt = 1
        while (delay := self.retry.delay(op, attempt, outcome := await self._send(op))) is not None:
            await asyncio.sleep(delay)
            attempt += 1
        return op.answer(outcome)

    async def _send(self, op: Op[Any]) -> Outcome:
        try:
            return await self._http.request(op.method, op.path, **op.request_args())
        except httpx.TransportError as exc:
            return exc

    async def _pages(self, op: Op[Page[T]] | None) -> AsyncIterator[T]:
        while op is not None:
            page = await self._call(op)
            for item in page["items"]:
                yield item
            op = _next_page(op, page)
