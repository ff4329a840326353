"""Webhook subscriptions and their delivery log (admins of the whole registry); the lineage
sinks' delivery log."""

from __future__ import annotations

from typing import Annotated, Any

from litestar import Controller, Request, delete, get, patch, post
from litestar.params import JSONBody, PathParameter, QueryParameter

from registry.api.deps import given, parse_time, reader, writer
from registry.api.errors import problem_responses
from registry.api.schemas import (
    Accepted,
    CreatedWebhookResponse,
    CreateWebhookRequest,
    DeliveryList,
    DeliveryResponse,
    RecoverRequest,
    RotateSecretRequest,
    UpdateWebhookRequest,
    WebhookList,
    WebhookResponse,
)
from registry.services import webhooks
from registry.services.webhooks import CreateWebhook, UpdateWebhook, target_of

WebhookId = Annotated[int, PathParameter(ge=1, le=2**31 - 1, description="webhook id")]
DeliveryId = Annotated[int, PathParameter(ge=1, le=2**53 - 1, description="delivery id")]
Limit = Annotated[int | None, QueryParameter(ge=1, le=1000)]
Cursor = Annotated[str | None, QueryParameter(max_length=2048)]
State = Annotated[str | None, QueryParameter(name="state", pattern="^(pending|delivered|failed)$",
                                             description="pending, delivered or failed")]
Sink = Annotated[str, PathParameter(pattern="^(http|file)$", description="http or file")]


def _tools(request: Request[Any, Any, Any]) -> webhooks.WebhookTools:
    return request.app.state.container.webhook_tools


class WebhookController(Controller):
    path = "/webhooks"
    tags = ["webhooks"]

    @post("/", operation_id="createWebhook", responses=problem_responses(400, 403))
    async def create_webhook(self, request: Request[Any, Any, Any],
                             data: JSONBody[CreateWebhookRequest]) -> CreatedWebhookResponse:
        """Subscribe a URL to event types (globs such as `model_version.*`), optionally for some
        models (globs). The `whsec_` signing secret is in this response only. The URL must be
        https:// to a public address: it is checked now and on every connection."""
        cmd = CreateWebhook(data.url, data.event_types, data.models, data.description)
        made = await webhooks.create_webhook(cmd, _tools(request), writer(request))
        assert made.secret is not None
        return CreatedWebhookResponse(**_fields(made.record), secret=made.secret)

    @get("/", operation_id="listWebhooks", responses=problem_responses(400, 403))
    async def list_webhooks(self, request: Request[Any, Any, Any], limit: Limit = None,
                            cursor: Cursor = None) -> WebhookList:
        """Subscriptions by id, without secrets."""
        result = await webhooks.list_webhooks(cursor, limit, reader(request))
        return WebhookList([WebhookResponse.of(s) for s in result.items], result.next_cursor)

    @get("/{webhook_id:int}", operation_id="getWebhook", responses=problem_responses(400, 403, 404))
    async def get_webhook(self, request: Request[Any, Any, Any], webhook_id: WebhookId) -> WebhookResponse:
        """One subscription, with its status and, when disabled, why."""
        return WebhookResponse.of(await webhooks.get_webhook(webhook_id, reader(request)))

    @patch("/{webhook_id:int}", operation_id="updateWebhook", responses=problem_responses(400, 403, 404))
    async def update_webhook(self, request: Request[Any, Any, Any], webhook_id: WebhookId,
                             data: JSONBody[UpdateWebhookRequest]) -> WebhookResponse:
        """Change the URL, filters or description; `status: paused` stops deliveries (events the
        relay takes up while it is paused, usually within a second of their commit, are not
        queued for it), `status: active` resumes or re-enables. Filters, too, apply to events
        the relay takes up after the change."""
        cmd = UpdateWebhook(given(data.url), given(data.event_types), given(data.models),
                            given(data.description), given(data.status))
        return WebhookResponse.of(await webhooks.update_webhook(webhook_id, cmd, _tools(request),
                                                                writer(request)))

    @delete("/{webhook_id:int}", operation_id="deleteWebhook", responses=problem_responses(400, 403, 404))
    async def delete_webhook(self, request: Request[Any, Any, Any], webhook_id: WebhookId) -> None:
        """Remove the subscription and its delivery log; nothing more is sent to it."""
        await webhooks.delete_webhook(webhook_id, writer(request))

    @post("/{webhook_id:int}/rotate-secret", operation_id="rotateWebhookSecret", status_code=200,
          responses=problem_responses(400, 403, 404))
    async def rotate_secret(self, request: Request[Any, Any, Any], webhook_id: WebhookId,
                            data: JSONBody[RotateSecretRequest | None] = None) -> CreatedWebhookResponse:
        """A new secret, shown once; deliveries are signed with both the new and the previous
        one until `previous_secret_expires_at` (two `v1,` signatures in `webhook-signature`)."""
        overlap = None if data is None or data.overlap_seconds is None else float(data.overlap_seconds)
        made = await webhooks.rotate_secret(webhook_id, overlap, _tools(request), writer(request))
        assert made.secret is not None
        return CreatedWebhookResponse(**_fields(made.record), secret=made.secret)

    @post("/{webhook_id:int}/ping", operation_id="pingWebhook", status_code=202,
          responses=problem_responses(400, 403, 404, 409))
    async def ping(self, request: Request[Any, Any, Any], webhook_id: WebhookId) -> Accepted:
        """Enqueue a signed `webhook.ping` event for this subscription alone (409 unless it is
        active); its delivery shows in the delivery log."""
        request_id = await webhooks.ping_webhook(webhook_id, writer(request))
        return Accepted("queued", request_id=request_id)

    @get("/{webhook_id:int}/deliveries", operation_id="listWebhookDeliveries",
         responses=problem_responses(400, 403, 404))
    async def deliveries(self, request: Request[Any, Any, Any], webhook_id: WebhookId, delivery_state: State = None,
                         limit: Limit = None, cursor: Cursor = None) -> DeliveryList:
        """Deliveries to this subscription, newest first, each with every attempt (time, response
        code, latency, error)."""
        result = await webhooks.list_deliveries(target_of(webhook_id), delivery_state, cursor, limit,
                                                reader(request), sub_id=webhook_id)
        return DeliveryList([DeliveryResponse.of(d) for d in result.items], result.next_cursor)

    @post("/{webhook_id:int}/deliveries/{delivery_id:int}/redeliver", operation_id="redeliverWebhook",
          status_code=202, responses=problem_responses(400, 403, 404, 409))
    async def redeliver(self, request: Request[Any, Any, Any], webhook_id: WebhookId,
                        delivery_id: DeliveryId) -> DeliveryResponse:
        """Send this delivery again now, with the same `webhook-id` (outside the per-model order)."""
        found = await webhooks.redeliver(target_of(webhook_id), delivery_id, writer(request),
                                         sub_id=webhook_id)
        return DeliveryResponse.of(found)

    @post("/{webhook_id:int}/recover", operation_id="recoverWebhook", status_code=202,
          responses=problem_responses(400, 403, 404))
    async def recover(self, request: Request[Any, Any, Any], webhook_id: WebhookId,
                      data: JSONBody[RecoverRequest]) -> Accepted:
        """Re-send every delivery to this subscription that failed (retries exhausted) among
        those created since `since`; `count` says how many."""
        since = parse_time(data.since)
        assert since is not None
        count = await webhooks.recover(target_of(webhook_id), since, writer(request), sub_id=webhook_id)
        return Accepted("queued", count=count)


class LineageSinkController(Controller):
    path = "/lineage/sinks"
    tags = ["webhooks"]

    @get("/{sink:str}/deliveries", operation_id="listLineageDeliveries",
         responses=problem_responses(400, 403))
    async def deliveries(self, request: Request[Any, Any, Any], sink: Sink, delivery_state: State = None,
                         limit: Limit = None, cursor: Cursor = None) -> DeliveryList:
        """Deliveries of OpenLineage events to the operator's sink (`http`: REGISTRY_LINEAGE_URL,
        `file`: REGISTRY_LINEAGE_FILE), newest first, with every attempt."""
        result = await webhooks.list_deliveries(f"lineage:{sink}", delivery_state, cursor, limit, reader(request))
        return DeliveryList([DeliveryResponse.of(d) for d in result.items], result.next_cursor)

    @post("/{sink:str}/deliveries/{delivery_id:int}/redeliver", operation_id="redeliverLineage",
          status_code=202, responses=problem_responses(400, 403, 404, 409))
    async def redeliver(self, request: Request[Any, Any, Any], sink: Sink,
                        delivery_id: DeliveryId) -> DeliveryResponse:
        """Send this lineage event to the sink again now."""
        return DeliveryResponse.of(await webhooks.redeliver(f"lineage:{sink}", delivery_id, writer(request)))

    @post("/{sink:str}/recover", operation_id="recoverLineage", status_code=202,
          responses=problem_responses(400, 403))
    async def recover(self, request: Request[Any, Any, Any], sink: Sink,
                      data: JSONBody[RecoverRequest]) -> Accepted:
        """Re-send every lineage event to the sink that failed since `since`."""
        since = parse_time(data.since)
        assert since is not None
        return Accepted("queued", count=await webhooks.recover(f"lineage:{sink}", since, writer(request)))


def _fields(record: Any) -> dict[str, Any]:
    r = WebhookResponse.of(record)
    return {f: getattr(r, f) for f in r.__struct_fields__}
