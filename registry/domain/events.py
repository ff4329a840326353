"""What happened, recorded by the services and written by the unit of work into the audit log
and the outbox in the same transaction. Wire names are the same in outbox, webhook and audit."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar


@dataclass(frozen=True, slots=True)
class Change:
    """One change to one model's state; becomes one audit entry and one outbox event."""

    type: ClassVar[str]
    model: str
    version: int | None = None
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    # Event-only fields beyond before/after (not hashed into the audit entry).
    extra: dict[str, Any] = field(default_factory=dict)

    def event_data(self) -> dict[str, Any]:
        data: dict[str, Any] = {"model": self.model}
        if self.version is not None:
            data["version"] = self.version
        data.update(self.extra)
        data["before"] = self.before
        data["after"] = self.after
        return data


@dataclass(frozen=True, slots=True)
class ModelCreated(Change):
    type: ClassVar[str] = "model.created"


@dataclass(frozen=True, slots=True)
class ModelUpdated(Change):
    type: ClassVar[str] = "model.updated"


@dataclass(frozen=True, slots=True)
class ModelDeleted(Change):
    type: ClassVar[str] = "model.deleted"


@dataclass(frozen=True, slots=True)
class ModelImported(Change):
    """The model was copied from another registry; ``after.imported`` keeps where from and its
    original creation time and user."""

    type: ClassVar[str] = "model.imported"


@dataclass(frozen=True, slots=True)
class VersionCreated(Change):
    type: ClassVar[str] = "model_version.created"


@dataclass(frozen=True, slots=True)
class VersionUpdated(Change):
    type: ClassVar[str] = "model_version.updated"


@dataclass(frozen=True, slots=True)
class VersionDeleted(Change):
    """The version was deleted softly: hidden from reads, its number never reused."""

    type: ClassVar[str] = "model_version.deleted"


@dataclass(frozen=True, slots=True)
class VersionImported(Change):
    """The version was copied from another registry with its number and stage; ``after.imported``
    keeps where from and its original creation and update times and user."""

    type: ClassVar[str] = "model_version.imported"


@dataclass(frozen=True, slots=True)
class StageChanged(Change):
    """A version moved from one stage to another by a trigger of the stage table. ``extra``
    holds what else the event tells (``archived``, ``gates``, ``superseded_by``, ``artifacts``,
    the request and its approvers)."""

    type: ClassVar[str] = "model_version.stage_changed"
    from_stage: str = ""
    to_stage: str = ""
    trigger: str = ""
    comment: str | None = None

    def event_data(self) -> dict[str, Any]:
        return {"model": self.model, "version": self.version, "from_stage": self.from_stage,
                "to_stage": self.to_stage, "trigger": self.trigger, "comment": self.comment,
                **self.extra, "before": self.before, "after": self.after}


@dataclass(frozen=True, slots=True)
class AliasSet(Change):
    type: ClassVar[str] = "model_version.alias_set"


@dataclass(frozen=True, slots=True)
class AliasDeleted(Change):
    type: ClassVar[str] = "model_version.alias_deleted"


@dataclass(frozen=True, slots=True)
class CheckReported(Change):
    """``extra`` holds the report: name, status, details_url, summary."""

    type: ClassVar[str] = "model_version.check_reported"


@dataclass(frozen=True, slots=True)
class PolicyChanged(Change):
    """A model's policy for entering a stage was set or removed (``extra``: stage)."""

    type: ClassVar[str] = "model.policy_changed"


@dataclass(frozen=True, slots=True)
class RequestCreated(Change):
    type: ClassVar[str] = "transition_request.created"


@dataclass(frozen=True, slots=True)
class RequestApproved(Change):
    """One approval; ``extra`` says whether it completed the quorum and applied the move."""

    type: ClassVar[str] = "transition_request.approved"


@dataclass(frozen=True, slots=True)
class RequestRejected(Change):
    type: ClassVar[str] = "transition_request.rejected"


@dataclass(frozen=True, slots=True)
class RequestCancelled(Change):
    type: ClassVar[str] = "transition_request.cancelled"


@dataclass(frozen=True, slots=True)
class RequestApplied(Change):
    """The approved move was made (by the last approval, or by the requester's own call)."""

    type: ClassVar[str] = "transition_request.applied"


@dataclass(frozen=True, slots=True)
class ApprovalsVoided(Change):
    """The version's checks changed after approvals were given: they no longer count."""

    type: ClassVar[str] = "transition_request.approvals_voided"


@dataclass(frozen=True, slots=True)
class ArtifactUploaded(Change):
    """``after``: the file's path, size and sha256 (``before``: what it replaced, if anything)."""

    type: ClassVar[str] = "model_version.artifact_uploaded"


@dataclass(frozen=True, slots=True)
class ArtifactDeleted(Change):
    type: ClassVar[str] = "model_version.artifact_deleted"


@dataclass(frozen=True, slots=True)
class ArtifactsSealed(Change):
    """``after``: ``sealed_at`` and the manifest (files and digest) the version holds forever."""

    type: ClassVar[str] = "model_version.artifacts_sealed"


@dataclass(frozen=True, slots=True)
class CommentCreated(Change):
    """A comment on a version or on one of its transition requests. ``after``: its id, body,
    author (a principal) and request_id; ``extra``: comment_id and request_id."""

    type: ClassVar[str] = "comment.created"


@dataclass(frozen=True, slots=True)
class CommentUpdated(Change):
    """Its author changed a comment's body (``before`` and ``after``)."""

    type: ClassVar[str] = "comment.updated"


@dataclass(frozen=True, slots=True)
class CommentDeleted(Change):
    """A comment was deleted (softly: hidden from every read); ``before`` is what it said."""

    type: ClassVar[str] = "comment.deleted"


@dataclass(frozen=True, slots=True)
class SystemChange:
    """A change outside any model (tokens, subscriptions, later policies), audited in the system
    chain. With ``event`` it is also announced: an outbox event of type ``action`` carrying
    ``event`` as its data, for every matching subscription or, with ``target``, for that
    subscription only (a ping)."""

    action: str
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None
    event: dict[str, Any] | None = None
    target: int | None = None


WEBHOOK_PING = "webhook.ping"
WEBHOOK_DISABLED = "webhook.disabled"


# Every model event type, derived from the classes above (in their order): what a webhook
# subscription may name besides the webhook's own events.
# (A slotted dataclass is a new class: its unslotted original is a subclass too, hence the dedup.)
CHANGE_TYPES: tuple[str, ...] = tuple(dict.fromkeys(cls.type for cls in Change.__subclasses__()))
