"""Webhook subscriptions (admins of the whole registry) and their delivery log.

A subscription names a URL, the event types it wants and optionally the models (both as globs).
Its signing secret (``whsec_``) is shown when it is made or rotated and stored only encrypted;
after a rotation the previous secret keeps signing for an overlap. Every change is audited in the
system chain, without secrets. Deliveries are made by the workers; here they are listed, and
re-sent on request (``redeliver``, ``recover``).
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from fnmatch import fnmatchcase
from typing import Any, Protocol

from registry.domain.errors import ConflictError, NotFoundError, ValidationError
from registry.domain.events import CHANGE_TYPES, WEBHOOK_DISABLED, WEBHOOK_PING, SystemChange
from registry.domain.permissions import validate_patterns, visible
from registry.services.audit import SYSTEM_CHAIN, rfc3339
from registry.services.commands import MISSING
from registry.services.pagination import check_limit, decode_cursor, page
from registry.services.ports import DeliveryRecord, Page, SubscriptionRecord, UnitOfWork
from registry.services.tokens import check_token_admin

SECRET_PREFIX = "whsec_"
STATUSES = ("active", "paused", "disabled")
DELIVERY_STATES = ("pending", "delivered", "failed")
# Every event type a subscription can name (globs must match at least one).
EVENT_TYPES = (*CHANGE_TYPES, WEBHOOK_PING, WEBHOOK_DISABLED)
MAX_EVENT_TYPES = 64


class SecretCipher(Protocol):
    def encrypt(self, plaintext: str) -> str: ...
    def decrypt(self, ciphertext: str) -> str: ...


UrlCheck = Callable[[str], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class WebhookTools:
    """What the use cases need from outside: the URL check (raises ValidationError) and the
    cipher for secrets at rest, with the rotation overlap."""

    check_url: UrlCheck
    cipher: SecretCipher
    secret_overlap: float = 86400.0


@dataclass(frozen=True, slots=True)
class CreateWebhook:
    url: str
    event_types: list[str]
    models: list[str] | None = None
    description: str = ""


@dataclass(frozen=True, slots=True)
class UpdateWebhook:
    url: Any = MISSING
    event_types: Any = MISSING
    models: Any = MISSING
    description: Any = MISSING
    status: Any = MISSING


@dataclass(frozen=True, slots=True)
class Subscription:
    record: SubscriptionRecord
    secret: str | None = None  # only when just made or rotated


@dataclass(frozen=True, slots=True)
class Requeued:
    count: int
    delivery: DeliveryRecord | None = None


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def matches(sub: SubscriptionRecord | Any, event_type: str, model: str | None) -> bool:
    """Whether an event goes to this subscription (model globs apply to model events only)."""
    if not any(fnmatchcase(event_type, p) for p in sub.event_types):
        return False
    return model is None or visible(sub.models, model)


def validate_event_types(patterns: list[str]) -> list[str]:
    if not patterns:
        raise ValidationError("event_types must name at least one type or glob (\"*\" for all)")
    if len(patterns) > MAX_EVENT_TYPES:
        raise ValidationError(f"event_types may name at most {MAX_EVENT_TYPES} entries")
    for p in patterns:
        if not any(fnmatchcase(t, p) for t in EVENT_TYPES):
            raise ValidationError(
                f"event type {p!r} matches no event type; known: {', '.join(EVENT_TYPES)}")
    return list(dict.fromkeys(patterns))


def _validate_description(description: str) -> str:
    if len(description) > 1000:
        raise ValidationError("description must be at most 1000 characters")
    return description


def _describe(sub: SubscriptionRecord) -> dict[str, Any]:
    return {"id": sub.id, "url": sub.url, "description": sub.description,
            "event_types": sub.event_types, "models": sub.models, "status": sub.status}


async def _require(uow: UnitOfWork, sub_id: int) -> SubscriptionRecord:
    sub = await uow.repo.get_subscription(sub_id)
    if sub is None:
        raise NotFoundError(f"webhook {sub_id} does not exist")
    return sub


async def create_webhook(cmd: CreateWebhook, tools: WebhookTools, uow: UnitOfWork) -> Subscription:
    check_token_admin(uow, "creating a webhook")
    event_types = validate_event_types(cmd.event_types)
    models = validate_patterns(cmd.models)
    description = _validate_description(cmd.description)
    await tools.check_url(cmd.url)
    secret = new_secret()
    async with uow:
        await uow.repo.lock_chain(SYSTEM_CHAIN)
        sub_id = await uow.repo.add_subscription(cmd.url, description, event_types, models,
                                                 tools.cipher.encrypt(secret), uow.actor.name,
                                                 uow.now())
        record = await _require(uow, sub_id)
        uow.record_system(SystemChange(action="webhook.created", after=_describe(record)))
        await uow.commit()
    return Subscription(record, secret)


async def list_webhooks(cursor: str | None, limit: int | None, uow: UnitOfWork) -> Page:
    check_token_admin(uow, "listing webhooks")
    limit = check_limit(limit)
    after = decode_cursor(cursor, int) or 0
    async with uow:
        rows = await uow.repo.list_subscriptions(after, limit + 1)
    return Page(*page(rows, limit, lambda s: s.id))


async def get_webhook(sub_id: int, uow: UnitOfWork) -> SubscriptionRecord:
    check_token_admin(uow, "reading a webhook")
    async with uow:
        return await _require(uow, sub_id)


async def update_webhook(sub_id: int, cmd: UpdateWebhook, tools: WebhookTools,
                         uow: UnitOfWork) -> SubscriptionRecord:
    """Change the URL, filters or description, pause (``paused``) or resume (``active``; this
    also re-enables a disabled subscription and forgets how long it had been failing)."""
    check_token_admin(uow, "changing a webhook")
    values: dict[str, Any] = {}
    if cmd.event_types is not MISSING:
        values["event_types"] = validate_event_types(cmd.event_types)
    if cmd.models is not MISSING:
        values["models"] = validate_patterns(cmd.models)
    if cmd.description is not MISSING:
        values["description"] = _validate_description(cmd.description)
    if cmd.status is not MISSING:
        if cmd.status not in ("active", "paused"):
            raise ValidationError("status must be active or paused")
        values["status"] = cmd.status
        values["disabled_reason"] = None
        if cmd.status == "active":
            values["failing_since"] = None
    if cmd.url is not MISSING:
        await tools.check_url(cmd.url)
        values["url"] = cmd.url
    async with uow:
        await uow.repo.lock_chain(SYSTEM_CHAIN)
        before = await _require(uow, sub_id)
        if values:
            values["updated_at"] = uow.now()
            await uow.repo.update_subscription(sub_id, values)
            after = await _require(uow, sub_id)
            uow.record_system(SystemChange(action="webhook.updated", before=_describe(before),
                                           after=_describe(after)))
            await uow.commit()
            return after
    return before


async def delete_webhook(sub_id: int, uow: UnitOfWork) -> None:
    """The subscription goes with its delivery log; nothing more is sent to it."""
    check_token_admin(uow, "deleting a webhook")
    async with uow:
        await uow.repo.lock_chain(SYSTEM_CHAIN)
        sub = await _require(uow, sub_id)
        await uow.repo.delete_subscription(sub_id)
        uow.record_system(SystemChange(action="webhook.deleted", before=_describe(sub)))
        await uow.commit()


async def rotate_secret(sub_id: int, overlap: float | None, tools: WebhookTools,
                        uow: UnitOfWork) -> Subscription:
    """A new secret; the old one also signs until the overlap ends (0: it stops now)."""
    check_token_admin(uow, "rotating a webhook's secret")
    overlap = tools.secret_overlap if overlap is None else overlap
    if not 0 <= overlap <= 7 * 86400:
        raise ValidationError("overlap_seconds must be between 0 and 604800 (7 days)")
    secret = new_secret()
    async with uow:
        await uow.repo.lock_chain(SYSTEM_CHAIN)
        await _require(uow, sub_id)
        current, _ = await uow.repo.subscription_secrets(sub_id)
        now = uow.now()
        until = now + timedelta(seconds=overlap) if overlap > 0 else None
        await uow.repo.update_subscription(sub_id, {
            "secret": tools.cipher.encrypt(secret),
            "previous_secret": current if until is not None else None,
            "previous_secret_until": until, "updated_at": now})
        record = await _require(uow, sub_id)
        uow.record_system(SystemChange(action="webhook.secret_rotated", after={
            "id": sub_id, "previous_secret_until": None if until is None else rfc3339(until)}))
        await uow.commit()
    return Subscription(record, secret)


async def ping_webhook(sub_id: int, uow: UnitOfWork) -> str:
    """Enqueue a signed ``webhook.ping`` for this subscription alone; returns the event's
    request id (its delivery shows in the log)."""
    check_token_admin(uow, "pinging a webhook")
    async with uow:
        await uow.repo.lock_chain(SYSTEM_CHAIN)
        sub = await _require(uow, sub_id)
        if sub.status != "active":
            raise ConflictError(f"webhook {sub_id} is {sub.status}; resume it before a ping")
        uow.record_system(SystemChange(
            action=WEBHOOK_PING, after={"id": sub_id},
            event={"webhook": sub_id, "url": sub.url}, target=sub_id))
        await uow.commit()
    return uow.actor.request_id


async def disable_webhook(sub_id: int, reason: str, uow: UnitOfWork) -> bool:
    """Disable an active subscription and announce ``webhook.disabled`` (the workers call this
    on a 410, or when deliveries have failed for too long). False if it was not active."""
    async with uow:
        await uow.repo.lock_chain(SYSTEM_CHAIN)
        sub = await uow.repo.get_subscription(sub_id)
        if sub is None or sub.status != "active":
            return False
        await uow.repo.update_subscription(sub_id, {"status": "disabled", "disabled_reason": reason,
                                                    "updated_at": uow.now()})
        after = {**_describe(sub), "status": "disabled"}
        uow.record_system(SystemChange(
            action=WEBHOOK_DISABLED, before=_describe(sub), after=after,
            # Other subscribers receive this event: never another receiver's URL (it often
            # carries that receiver's credential, as Slack/Teams URLs do).
            event={"webhook": sub_id, "reason": reason}))
        await uow.commit()
    return True


def target_of(sub_id: int) -> str:
    return f"webhook:{sub_id}"


async def list_deliveries(target: str, state: str | None, cursor: str | None, limit: int | None,
                          uow: UnitOfWork, *, sub_id: int | None = None) -> Page:
    """Newest first, each with its attempts."""
    check_token_admin(uow, "reading deliveries")
    if state is not None and state not in DELIVERY_STATES:
        raise ValidationError(f"state must be one of {', '.join(DELIVERY_STATES)}")
    limit = check_limit(limit)
    before = decode_cursor(cursor, int)
    async with uow:
        if sub_id is not None:
            await _require(uow, sub_id)
        rows = await uow.repo.list_deliveries(target, state, before, limit + 1)
    return Page(*page(rows, limit, lambda d: d.id))


async def redeliver(target: str, delivery_id: int, uow: UnitOfWork, *,
                    sub_id: int | None = None) -> DeliveryRecord:
    """Send one delivery again now (with its original ``webhook-id``), whatever its state."""
    check_token_admin(uow, "re-sending a delivery")
    async with uow:
        await uow.repo.lock_chain(SYSTEM_CHAIN)
        if sub_id is not None:
            await _require(uow, sub_id)
        delivery = await uow.repo.get_delivery(target, delivery_id)
        if delivery is None:
            raise NotFoundError(f"delivery {delivery_id} does not exist for {target}")
        if delivery.in_flight:
            raise ConflictError(f"delivery {delivery_id} is being sent right now")
        await uow.repo.requeue_deliveries(target, uow.now(), delivery_id=delivery_id)
        uow.record_system(SystemChange(action="delivery.requeued", after={
            "target": target, "delivery": delivery_id, "event_id": delivery.event_id}))
        await uow.commit()
        updated = await uow.repo.get_delivery(target, delivery_id)
    assert updated is not None
    return updated


async def recover(target: str, since: datetime, uow: UnitOfWork, *, sub_id: int | None = None) -> int:
    """Re-send every delivery that failed (retries exhausted) among those created since a time."""
    check_token_admin(uow, "recovering deliveries")
    if since.tzinfo is None:
        raise ValidationError("since must carry a time zone")
    async with uow:
        await uow.repo.lock_chain(SYSTEM_CHAIN)
        if sub_id is not None:
            await _require(uow, sub_id)
        count = await uow.repo.requeue_deliveries(target, uow.now(), failed_since=since)
        uow.record_system(SystemChange(action="delivery.recovered", after={
            "target": target, "since": rfc3339(since), "count": count}))
        await uow.commit()
    return count

