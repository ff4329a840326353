"""The commands for CI/CD pipelines: ``register``, ``checks``, ``gate check``, ``promote``,
``rollback`` and ``requests``, clients of a running service (``REGISTRY_URL``, ``REGISTRY_TOKEN``).

Exit codes: 0 ok or allowed; 1 refused (a gate failed, a 4xx refusal, a rejected or cancelled
request, a wait that timed out); 2 a usage error, an unreachable server or an unexpected answer
(a 5xx included), and for ``gate check`` any refusal of the question itself (a 404, a 403);
3 ``rollback`` only: nothing to do, the version named by ``--from`` is no longer in production (a
rerun after success, or production moved meanwhile), nothing was changed; 141 stdout's reader
closed it early (``--json | head``), as a process killed by SIGPIPE.
Output is for people unless ``--json``, which prints the server's JSON document on stdout (the
problem document on a refusal). Errors go to stderr with the problem code and
detail, and with every gate's ``PASS``/``FAIL`` line when gates failed.

Each POST carries an Idempotency-Key (``--idempotency-key`` or a fresh one). A command that makes
several calls derives one key per call from the given key, so rerunning the command with the same
key replays each call instead of repeating it.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import math
import os
import re
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx

from registry.cli import UsageError
from registry.client import (
    DEFAULT_URL,
    UNSET,
    Dataset,
    GateResult,
    ModelVersion,
    RegistryClient,
    RegistryClientError,
    TransitionRequest,
    TransitionResult,
)

OK, REFUSED, USAGE = 0, 1, 2
# rollback: the version it was to roll back from has already left production; nothing was done.
ALREADY_DONE = 3
STAGES = ("none", "staging", "production", "archived")
Command = Callable[[RegistryClient, argparse.Namespace], int]


def pipeline_command(fn: Command) -> Callable[[argparse.Namespace], int]:
    """Run ``fn`` with a client from the environment; turn failures into messages and exit codes."""

    @functools.wraps(fn)
    def run(args: argparse.Namespace) -> int:
        url = os.environ.get("REGISTRY_URL") or DEFAULT_URL
        if not os.environ.get("REGISTRY_TOKEN"):
            print("error: set REGISTRY_TOKEN to a token of the registry at " + url, file=sys.stderr)
            return USAGE
        try:
            with RegistryClient.from_env() as client:
                return fn(client, args)
        except RegistryClientError as exc:
            refusal(exc, args.json)
            return REFUSED if exc.status < 500 else USAGE
        except httpx.HTTPError as exc:
            print(f"error: cannot reach the registry at {url}: {exc}", file=sys.stderr)
            return USAGE
        except UsageError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return USAGE
        except (ValueError, KeyError, TypeError) as exc:  # a 2xx answer of another shape
            print(f"error: unexpected answer from {url}: {exc!r}", file=sys.stderr)
            return USAGE

    return run


def emit(args: argparse.Namespace, document: Any, human: str) -> None:
    """The server's document with ``--json``, else the line for people."""
    print(json.dumps(document, indent=2) if args.json else human, flush=True)


def refusal(exc: RegistryClientError, as_json: bool) -> None:
    """The problem on stderr, with its gate lines; and the whole document on stdout with --json."""
    if as_json:
        print(json.dumps(exc.problem, indent=2))
    print(f"error: {exc.code} ({exc.status}): {exc.detail}", file=sys.stderr)
    gate_lines(exc.problem.get("results") or [], sys.stderr)


def gate_lines(results: list[GateResult], out: Any) -> None:
    for result in results:
        print(f"{'PASS' if result['passed'] else 'FAIL'} {result['gate']}: {result['detail']}", file=out)


def derived_key(key: str | None, step: str) -> str | None:
    """The key of one call of a command given ``key``: a rerun with ``key`` replays that call."""
    if key is None:
        return None
    derived = f"{key}.{step}"
    return derived if len(derived) <= 255 else hashlib.sha256(derived.encode()).hexdigest()


def describe_version(v: ModelVersion) -> str:
    return f"{v['model']} v{v['version']}: {v['stage']}"


def describe_move(result: TransitionResult) -> str:
    v, t = result["version"], result["transition"]
    archived = "".join(f"; archived v{n}" for n in t["archived"])
    return f"{v['model']} v{v['version']}: {t['from_stage']} -> {t['to_stage']} ({t['trigger']}){archived}"


def describe_request(r: TransitionRequest) -> str:
    counted = sum(1 for a in r["approvals"] if not a.get("voided_at"))  # a check change voids one
    required = r.get("required_approvals")
    return (f"request {r['id']}: {r['model']} v{r['version']} -> {r['to_stage']}, {r['state']}, "
            f"{counted}{'' if required is None else f' of {required}'} approvals")


# -- register, checks, gates ------------------------------------------------------------------------


@pipeline_command
def register(client: RegistryClient, args: argparse.Namespace) -> int:
    try:
        client.create_model(args.model, idempotency_key=derived_key(args.idempotency_key, "model"))
    except RegistryClientError as exc:
        if exc.code != "already_exists":
            raise
    version = client.register_version(
        args.model, args.source, run_id=args.run_id, description=args.description,
        tags=dict(args.tags) or None, metrics=dict(args.metrics) or None, inputs=args.inputs or None,
        idempotency_key=args.idempotency_key)
    emit(args, version, str(version["version"]))
    return OK


@pipeline_command
def checks_report(client: RegistryClient, args: argparse.Namespace) -> int:
    check = client.report_check(args.model, args.version, args.name, args.status,
                                details_url=args.details_url, summary=args.summary,
                                idempotency_key=args.idempotency_key)
    emit(args, check, f"{args.model} v{args.version}: check {check['name']} is {check['status']}")
    return OK


@pipeline_command
def checks_list(client: RegistryClient, args: argparse.Namespace) -> int:
    checks = client.list_checks(args.model, args.version)
    lines = [f"{c['status']:<8} {c['name']}" + "".join(f"  {x}" for x in (c["summary"], c["details_url"]) if x)
             for c in checks]
    emit(args, {"items": checks}, "\n".join(lines) or "no checks reported")
    return OK


@pipeline_command
def gate_check(client: RegistryClient, args: argparse.Namespace) -> int:
    """Exit 0 when allowed, 1 when not; 2 when the gates could not be asked (the issue's
    contract: a refusal of the question itself, such as 404 or 403, is an error, not a "no")."""
    try:
        report = client.gates(args.model, args.version, args.to, comment=args.comment)
    except RegistryClientError as exc:
        refusal(exc, args.json)
        return USAGE
    if not args.json:
        gate_lines(report["results"], sys.stdout)
    verdict = "allowed" if report["allowed"] else "not allowed"
    emit(args, report, f"{verdict}: {args.model} v{args.version} -> {args.to}")
    return OK if report["allowed"] else REFUSED


# -- promote and rollback ---------------------------------------------------------------------------


@pipeline_command
def promote(client: RegistryClient, args: argparse.Namespace) -> int:
    try:
        result = transition(client, args, args.idempotency_key)
    except RegistryClientError as exc:
        if exc.code != "gate_failed" or exc.problem.get("failed") != ["approvals"]:
            raise
        gate_lines(exc.problem.get("results") or [], sys.stderr)
        request = open_request(client, args)
        if not args.wait:
            emit(args, request, f"approval requested: {describe_request(request)}")
            return REFUSED
        return await_request(client, args, request)
    emit(args, result, describe_move(result))
    return OK


def transition(client: RegistryClient, args: argparse.Namespace, key: str | None) -> TransitionResult:
    """The transition ``promote`` was asked for, with its preconditions."""
    return client.transition(args.model, args.version, args.to, comment=args.comment,
                             expected_stage=args.expected_stage,
                             expected_production_version=args.expected_production_version,
                             if_match=args.if_match, idempotency_key=key)


def open_request(client: RegistryClient, args: argparse.Namespace) -> TransitionRequest:
    """A new transition request, or the open one for this version and stage."""
    try:
        return client.request_transition(args.model, args.version, args.to, comment=args.comment,
                                         idempotency_key=derived_key(args.idempotency_key, "request"))
    except RegistryClientError as exc:
        if exc.code != "conflict" or not isinstance(exc.problem.get("request_id"), int):
            raise
        return client.get_request(exc.problem["request_id"])


def await_request(client: RegistryClient, args: argparse.Namespace, request: TransitionRequest) -> int:
    """Poll the request until it is decided or the timeout passes; finish the move if it is ours."""
    deadline, shown = time.monotonic() + args.timeout, ""
    while True:
        if describe_request(request) != shown:
            shown = describe_request(request)
            print(f"waiting for approval: {shown}", file=sys.stderr, flush=True)
        if request["state"] == "applied":
            version = client.get_version(args.model, args.version)
            emit(args, version, describe_version(version))
            return OK
        if request["state"] == "approved":  # auto_apply is off: this call consumes the approval
            result = transition(client, args, derived_key(args.idempotency_key, "apply"))
            emit(args, result, describe_move(result))
            return OK
        if request["state"] in ("rejected", "cancelled") or time.monotonic() >= deadline:
            why = request["state"] if request["state"] != "pending" else f"timed out after {args.timeout:g}s"
            emit(args, request, describe_request(request))
            print(f"error: not promoted: {why}: {describe_request(request)}", file=sys.stderr)
            return REFUSED
        time.sleep(max(0.0, min(args.poll_interval, deadline - time.monotonic())))
        request = client.get_request(request["id"])


@pipeline_command
def rollback(client: RegistryClient, args: argparse.Namespace) -> int:
    """One step back from the version ``--from`` names, or nothing (exit 3) when that version is
    no longer in production: rerunning a pipeline step never rolls back a second time."""
    try:
        result = client.rollback(args.model, args.comment, expected_production_version=args.from_version,
                                 idempotency_key=args.idempotency_key)
    except RegistryClientError as exc:
        if exc.code != "precondition_failed":
            raise
        now = [v["version"] for v in client.list_versions(args.model, stage="production")]
        expected = "no version" if args.from_version is None else f"v{args.from_version}"
        emit(args, exc.problem, f"nothing to do: {args.model} {expected} is no longer in production "
                                f"(now: {f'v{now[0]}' if now else 'none'}); nothing was changed")
        return ALREADY_DONE
    emit(args, result, describe_move(result))
    return OK


# -- transition requests ----------------------------------------------------------------------------


@pipeline_command
def requests_list(client: RegistryClient, args: argparse.Namespace) -> int:
    items = list(client.list_requests(model=args.model, state=args.state, requester=args.requester))
    emit(args, {"items": items}, "\n".join(describe_request(r) for r in items) or "no requests")
    return OK


@pipeline_command
def requests_decide(client: RegistryClient, args: argparse.Namespace) -> int:
    decision = client.decide_request(args.id, args.decision, comment=args.comment,
                                     idempotency_key=args.idempotency_key)
    outcome = ""
    if decision["applied"] and decision["version"]:
        outcome = f"; applied: {describe_version(decision['version'])}"
    elif args.decision == "approve":
        outcome = "; not applied"
        if not args.json:  # why not: the approvals still missing, or another failed gate
            gate_lines([r for r in decision["results"] if not r["passed"]], sys.stdout)
    emit(args, decision, f"{args.decision}: {describe_request(decision['request'])}{outcome}")
    return OK


# -- arguments --------------------------------------------------------------------------------------


def key_value(value: str) -> tuple[str, str]:
    """argparse type: ``key=value``."""
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected key=value, got {value!r}")
    return key, val


def metric(value: str) -> tuple[str, float]:
    """argparse type: ``name=number`` (finite: JSON has no NaN)."""
    key, val = key_value(value)
    try:
        number = float(val)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"expected name=<finite number>, got {value!r}")
    return key, number


def dataset(value: str) -> Dataset:
    """argparse type: ``namespace/name[@version]``; a namespace with a scheme keeps its authority
    (``s3://bucket/path/file`` is namespace ``s3://bucket``, name ``path/file``), as OpenLineage names."""
    body, at, version = value.rpartition("@") if "@" in value else (value, "", "")
    scheme, sep, rest = body.partition("://")
    authority, slash, name = (rest if sep else body).partition("/")
    if not slash or not authority or not name:
        raise argparse.ArgumentTypeError(f"expected namespace/name[@version], got {value!r}")
    found = Dataset(namespace=f"{scheme}://{authority}" if sep else authority, name=name)
    if at:
        found["version"] = version
    return found


def duration(value: str) -> float:
    """argparse type: seconds, or a number with ``s``, ``m`` or ``h`` (``90s``, ``30m``, ``2h``)."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([smh]?)", value.strip())
    if not match:
        raise argparse.ArgumentTypeError(f"expected a duration such as 90s, 30m or 2h, got {value!r}")
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600}[match[2]]


def version_number(value: str) -> int:
    """argparse type: a version number (1 or more)."""
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"expected a version number, got {value!r}")
    return int(value)


def production_version(value: str) -> int | None:
    """argparse type: the version expected in production, or ``none`` for none."""
    return None if value.lower() == "none" else version_number(value)


def idempotency_key(value: str) -> str:
    """argparse type: 1-255 visible ASCII characters."""
    if not re.fullmatch(r"[\x21-\x7e]{1,255}", value):
        raise argparse.ArgumentTypeError("an idempotency key is 1-255 visible ASCII characters")
    return value


def _command(sub: Any, name: str, fn: Callable[[argparse.Namespace], int], help: str,
             posts: bool = True) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(name, help=help)
    p.add_argument("--json", action="store_true", help="print the server's JSON document")
    if posts:
        p.add_argument("--idempotency-key", type=idempotency_key, metavar="KEY",
                       help="reuse to make a rerun replay the first run (default: a fresh key)")
    p.set_defaults(fn=fn)
    return p


def _model_version(p: argparse.ArgumentParser) -> None:
    p.add_argument("model")
    p.add_argument("version", type=version_number)


def add_commands(sub: Any) -> None:
    """Add the pipeline commands to the ``python -m registry`` subparsers ``sub``."""
    r = _command(sub, "register", register, "register a version (and its model if new); prints its number")
    r.add_argument("model")
    r.add_argument("--source", required=True, metavar="URI")
    r.add_argument("--run-id")
    r.add_argument("--description")
    r.add_argument("--metric", dest="metrics", type=metric, action="append", default=[], metavar="NAME=NUMBER")
    r.add_argument("--tag", dest="tags", type=key_value, action="append", default=[], metavar="KEY=VALUE")
    r.add_argument("--input", dest="inputs", type=dataset, action="append", default=[],
                   metavar="NAMESPACE/NAME[@VERSION]")

    _add_checks_and_gate(sub)
    _add_promote(sub)
    rb = _command(sub, "rollback", rollback, "put the previous production version back (one step back "
                  "each time; exit 3 when --from is no longer in production)")
    rb.add_argument("model")
    rb.add_argument("--comment", required=True)
    rb.add_argument("--from", "--expected-production-version", dest="from_version", required=True,
                    type=production_version, metavar="N|none",
                    help="the version in production now, the one to roll back from (none: no version "
                         "is). When it is no longer in production nothing is done and the exit code is "
                         "3, so a rerun after success changes nothing")
    _add_requests(sub)


def _add_checks_and_gate(sub: Any) -> None:
    checks = sub.add_parser("checks", help="CI checks of a version").add_subparsers(dest="checks_command",
                                                                                    required=True)
    cr = _command(checks, "report", checks_report, "report a check's status")
    _model_version(cr)
    cr.add_argument("name")
    cr.add_argument("--status", required=True, choices=["pending", "success", "failure"])
    cr.add_argument("--details-url", metavar="URL")
    cr.add_argument("--summary")
    _model_version(_command(checks, "list", checks_list, "the latest report of each check", posts=False))

    gate = sub.add_parser("gate", help="promotion gates").add_subparsers(dest="gate_command", required=True)
    gc = _command(gate, "check", gate_check, "exit 0 if the move is allowed now, 1 if not", posts=False)
    _model_version(gc)
    gc.add_argument("--to", required=True, choices=STAGES)
    gc.add_argument("--comment")


def _add_promote(sub: Any) -> None:
    p = _command(sub, "promote", promote, "move a version; ask for approval when the policy needs it")
    _model_version(p)
    p.add_argument("--to", required=True, choices=STAGES)
    p.add_argument("--comment")
    p.add_argument("--expected-stage", choices=STAGES)
    p.add_argument("--expected-production-version", type=production_version, default=UNSET, metavar="N|none")
    p.add_argument("--if-match", metavar="ETAG")
    p.add_argument("--wait", action="store_true", help="wait for the approval and finish the move")
    p.add_argument("--timeout", type=duration, default=duration("30m"), help="how long --wait waits (30m)")
    p.add_argument("--poll-interval", type=duration, default=5.0, metavar="SECONDS")


def _add_requests(sub: Any) -> None:
    reqs = sub.add_parser("requests", help="transition requests").add_subparsers(dest="requests_command",
                                                                                 required=True)
    rl = _command(reqs, "list", requests_list, "transition requests, newest first", posts=False)
    rl.add_argument("--model")
    rl.add_argument("--state", choices=["pending", "approved", "applied", "rejected", "cancelled"])
    rl.add_argument("--requester")
    for decision in ("approve", "reject", "cancel"):
        d = _command(reqs, decision, requests_decide, f"{decision} a transition request")
        d.add_argument("id", type=int)
        d.add_argument("--comment")
        d.set_defaults(decision=decision)
