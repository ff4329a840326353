"""CI checks reported on a version, like commit statuses: the latest report per name counts."""

from __future__ import annotations

from dataclasses import dataclass

from registry.domain.errors import ValidationError
from registry.domain.events import ApprovalsVoided, CheckReported
from registry.domain.gates import check_name
from registry.domain.model import MAX_TEXT, RegisteredModel
from registry.domain.permissions import Role
from registry.services.access import lock_model, require_model
from registry.services.audit import rfc3339
from registry.services.commands import ReportCheck
from registry.services.ports import CheckRecord, UnitOfWork
from registry.services.versions import require_version

STATUSES = ("pending", "success", "failure")
MAX_URL = 2048


@dataclass(frozen=True, slots=True)
class CheckSummary:
    """One check name: its latest report and every report, newest first."""

    latest: CheckRecord
    history: list[CheckRecord]


def _validate(cmd: ReportCheck) -> None:
    check_name(cmd.name)
    if cmd.status not in STATUSES:
        raise ValidationError(f"status must be one of {', '.join(STATUSES)}")
    url = cmd.details_url
    if url is not None and (not url.lower().startswith(("https://", "http://")) or len(url) > MAX_URL
                            or any(ch <= " " or "\x7f" <= ch <= "\x9f" for ch in url)):
        raise ValidationError(f"details_url must be an http(s) URL of at most {MAX_URL} characters")
    if cmd.summary is not None and len(cmd.summary) > MAX_TEXT:
        raise ValidationError(f"summary is at most {MAX_TEXT} characters")


async def report_check(cmd: ReportCheck, uow: UnitOfWork) -> CheckRecord:
    """Record a report; a status that differs from the name's previous one is a change to the
    version's checks, which voids the approvals given so far."""
    _validate(cmd)
    async with uow:
        model = await lock_model(uow, cmd.model, Role.EDITOR, "reporting a check")
        await require_version(uow.repo, model, cmd.version)
        previous = (await uow.repo.latest_checks(model, cmd.version)).get(cmd.name)
        now = uow.now()
        check_id = await uow.repo.add_check(model, cmd.version, cmd.name, cmd.status,
                                            cmd.details_url, cmd.summary, uow.actor.name, now)
        report = {"name": cmd.name, "status": cmd.status, "details_url": cmd.details_url,
                  "summary": cmd.summary}
        uow.record(model, CheckReported(model=model.name, version=cmd.version,
                                        before={"name": cmd.name, "status": previous},
                                        after=report, extra={"check_id": check_id}))
        if previous != cmd.status:
            await _void_approvals(uow, model, cmd.version, cmd.name)
        await uow.commit()
    return CheckRecord(check_id, cmd.name, cmd.status, cmd.details_url, cmd.summary,
                       uow.actor.name, now)


async def _void_approvals(uow: UnitOfWork, model: RegisteredModel, version: int, check: str) -> None:
    for request in await uow.repo.open_requests(model, version):
        if not request.valid_approvals:
            continue
        before = request.snapshot()
        for approval in request.valid_approvals:
            approval["voided_at"] = rfc3339(uow.now())
        request.state, request.updated_at = "pending", uow.now()
        await uow.repo.save_request(request)
        uow.record(model, ApprovalsVoided(model=model.name, version=version, before=before,
                                          after=request.snapshot(),
                                          extra={"request": request.id, "check": check}))


async def list_checks(model_name: str, number: int, uow: UnitOfWork) -> list[CheckSummary]:
    """Each check name's latest report with its history, by name."""
    async with uow:
        model = await require_model(uow, model_name)
        await require_version(uow.repo, model, number)
        reports = await uow.repo.check_history(model, number)
    by_name: dict[str, list[CheckRecord]] = {}
    for report in reports:
        by_name.setdefault(report.name, []).append(report)
    return [CheckSummary(history[0], history) for history in by_name.values()]
