"""The repository: Core statements on one AsyncConnection, rows mapped to domain objects."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, case, exists, func, insert, literal, not_, or_, select, true, tuple_, update
from sqlalchemy.exc import IntegrityError

from registry.adapters.db.aggregates import split_names
from registry.adapters.db.artifact_queries import ArtifactQueries
from registry.adapters.db.comment_queries import CommentQueries
from registry.adapters.db.deliveries import DeliveryQueries
from registry.adapters.db.gate_queries import GateQueries
from registry.adapters.db.matching import name_matches
from registry.adapters.db.rows import (
    LIVE,
    MODEL_ALIASES,
    MODEL_COLS,
    VERSION_COLS,
    model_of,
    version_of,
)
from registry.adapters.db.search_queries import SearchQueries
from registry.adapters.db.session_queries import SessionQueries
from registry.adapters.db.statements import Db, Query, bound
from registry.adapters.db.tables import (
    aliases_t,
    audit_t,
    chains_t,
    models_t,
    outbox_t,
    policies_t,
    principals_t,
    requests_t,
    tokens_t,
    versions_t,
)
from registry.domain.errors import AlreadyExistsError, NotFoundError
from registry.domain.model import ModelVersion, RegisteredModel
from registry.domain.stages import Stage
from registry.services.audit import GENESIS, model_chain, rfc3339
from registry.services.ports import AliasRecord, AuditQuery, TokenRecord


@dataclass(slots=True)
class ChainHead:
    chain: str
    audit_seq: int
    audit_hash: str
    event_seq: int


_TOKENS = (select(tokens_t.c.id, tokens_t.c.name, principals_t.c.name.label("principal"),
                  tokens_t.c.role, tokens_t.c.expires_at, tokens_t.c.revoked_at, tokens_t.c.models,
                  tokens_t.c.created_at, tokens_t.c.last_used_at)
           .join(principals_t, principals_t.c.id == tokens_t.c.principal_id))


def _token(row: Any) -> TokenRecord:
    return TokenRecord(row.id, row.name, row.principal, row.role, row.expires_at, row.revoked_at,
                       row.models, row.created_at, row.last_used_at)


# -- the hot statements, built once (see statements.py) ----------------------------------------------

_OPEN = ("pending", "approved")


def _policy_rules(stage: Stage) -> Any:
    return (select(policies_t.c.rules)
            .where(policies_t.c.model_id == models_t.c.id, policies_t.c.stage == stage.value)
            .scalar_subquery().label(f"policy_{stage.value}"))


_GET_MODEL = Query(select(*MODEL_COLS).where(models_t.c.name == bindparam("name")))
_GET_MODEL_AND_ALIASES = Query(select(*MODEL_COLS, MODEL_ALIASES).where(models_t.c.name == bindparam("name")))
# The model, its chain head and its policies for staging and production, in the one statement
# that locks them: a move then needs no round trip of its own for the policy.
_LOCK_MODEL = Query(
    select(*MODEL_COLS, chains_t.c.id.label("chain"), chains_t.c.audit_seq, chains_t.c.audit_hash,
           chains_t.c.event_seq, _policy_rules(Stage.STAGING), _policy_rules(Stage.PRODUCTION))
    .join(chains_t, chains_t.c.model_id == models_t.c.id)
    .where(models_t.c.name == bindparam("name"))
    .with_for_update(of=[models_t, chains_t])
)
_ALLOCATE_VERSION = Query(update(models_t).where(models_t.c.id == bindparam("model_id"))
                          .values(last_version=models_t.c.last_version + 1)
                          .returning(models_t.c.last_version))
_ADD_VERSION = Query(insert(versions_t).values(bound(
    versions_t, "model_id", "version", "stage", "source", "run_id", "description", "tags", "metrics",
    "inputs", "revision", "left_production_seq", "stage_since", "created_at", "updated_at",
    "created_by")).returning(versions_t.c.id))
_GET_VERSION = Query(select(*VERSION_COLS).where(versions_t.c.model_id == bindparam("model_id"),
                                                  versions_t.c.version == bindparam("number"), LIVE))
# Whether a version has open transition requests: a move settles them only where there are any.
_HAS_OPEN = exists().where(requests_t.c.model_id == versions_t.c.model_id,
                           requests_t.c.version == versions_t.c.version,
                           or_(*(requests_t.c.state == state for state in _OPEN))
                           ).label("has_open_requests")
_VERSION_AND_PRODUCTION = Query(
    select(*VERSION_COLS, _HAS_OPEN).where(
        versions_t.c.model_id == bindparam("model_id"), LIVE,
        or_(versions_t.c.version == bindparam("number"), versions_t.c.stage == Stage.PRODUCTION.value))
)
_SAVE_VERSION = Query(update(versions_t).where(
    versions_t.c.model_id == bindparam("p_model_id"), versions_t.c.version == bindparam("p_version"),
).values(bound(versions_t, "stage", "description", "tags", "metrics", "revision",
               "left_production_seq", "left_by_rollback", "stage_since", "updated_at", "sealed_at",
               "manifest_digest")))
# The version a rollback goes back to (ModelVersion.is_rollback_target): the archived one that left
# production last, other than by a rollback. A deleted one too: it is the step back, and a rollback
# refuses rather than skip it to an older version.
_ROLLBACK_CANDIDATE = Query(
    select(versions_t.c.version)
    .where(versions_t.c.model_id == bindparam("model_id"), versions_t.c.stage == Stage.ARCHIVED.value,
           versions_t.c.left_production_seq.is_not(None), not_(versions_t.c.left_by_rollback))
    .order_by(versions_t.c.left_production_seq.desc()).limit(1)
)
_IN_STAGE_BY_NAME = Query(
    select(models_t.c.id.label("mid"), *VERSION_COLS)
    .select_from(models_t.outerjoin(versions_t, and_(versions_t.c.model_id == models_t.c.id,
                                                     versions_t.c.stage == bindparam("stage"), LIVE)))
    .where(models_t.c.name == bindparam("name")).order_by(versions_t.c.version)
)
_GET_ALIAS = Query(select(aliases_t.c.version, aliases_t.c.protected).where(
    aliases_t.c.model_id == bindparam("model_id"), aliases_t.c.alias == bindparam("alias")))
# The alias and its version by model name; the outer joins tell a missing model (no row) from a
# missing alias (a row of NULLs beside the model's id).
_ALIAS_BY_NAME = Query(
    select(models_t.c.id.label("mid"), aliases_t.c.protected, *VERSION_COLS)
    .select_from(models_t
                 .outerjoin(aliases_t, and_(aliases_t.c.model_id == models_t.c.id,
                                            aliases_t.c.alias == bindparam("alias")))
                 .outerjoin(versions_t, and_(versions_t.c.model_id == models_t.c.id,
                                             versions_t.c.version == aliases_t.c.version, LIVE)))
    .where(models_t.c.name == bindparam("name"))
)
_TOKEN_BY_HASH = Query(_TOKENS.where(tokens_t.c.secret_hash == bindparam("secret_hash")))


def event_of(row: Any) -> dict[str, Any]:
    """The one shape of an event, from its outbox row: an item of the pull feed, the ``data`` of
    its webhook, the input of its lineage document (``at`` as the audit log writes times)."""
    return {"id": row.event_id, "type": row.type, "model": row.model, "version": row.version,
            "sequence": row.sequence, "actor": row.actor, "request_id": row.request_id,
            "at": rfc3339(row.at), "data": row.data}


def _visible_chain(chain_column: Any, query: AuditQuery, sqlite: bool) -> Any:
    """Chains the query may see: one chain, or its models' chains (and the system chain for
    admins)."""
    if query.chain is not None:
        return chain_column == query.chain
    if query.patterns is None:
        visible = true()
    else:
        visible = chain_column.in_(select(chains_t.c.id).where(
            name_matches(chains_t.c.model_name, query.patterns, sqlite)))
    if query.include_system:
        return or_(visible, chain_column == "system")
    return and_(visible, chain_column != "system")


class SqlRepository(ArtifactQueries, CommentQueries, DeliveryQueries, GateQueries, SearchQueries, SessionQueries):
    """Data access for one unit of work. ``heads`` holds the chain heads this transaction has
    locked, for the unit of work to extend at commit."""

    def __init__(self, db: Db) -> None:
        self.db = db
        self.conn = db.conn
        self.sqlite = self.conn.dialect.name == "sqlite"
        self.heads: dict[str, ChainHead] = {}
        # Policies read with a model's lock: {(model id, stage): rules or None}.
        self.locked_policies: dict[tuple[int, str], dict[str, Any] | None] = {}
        # Versions read by get_version_and_production with no open transition request.
        self.no_open_requests: set[tuple[int, int]] = set()

    # -- models -------------------------------------------------------------------------------

    async def get_model(self, name: str, *, aliases: bool = False) -> RegisteredModel | None:
        """The model; with ``aliases``, their names too (in the same query)."""
        row = await self.db.first(_GET_MODEL_AND_ALIASES if aliases else _GET_MODEL, name=name)
        if row is None:
            return None
        model = model_of(row)
        if aliases:
            model.aliases = split_names(row.aliases)
        return model

    async def lock_model(self, name: str) -> RegisteredModel:
        """Lock the model's row and its chain head (SELECT ... FOR UPDATE; on SQLite the
        transaction's BEGIN IMMEDIATE already serialises writers). Its stage policies come with
        it: under the lock they cannot change before this unit of work ends."""
        row = await self.db.first(_LOCK_MODEL, name=name)
        if row is None:
            raise NotFoundError(f"model {name!r} does not exist")
        self.heads[row.chain] = ChainHead(row.chain, row.audit_seq, row.audit_hash, row.event_seq)
        self.locked_policies[(row.id, Stage.STAGING.value)] = row.policy_staging
        self.locked_policies[(row.id, Stage.PRODUCTION.value)] = row.policy_production
        return model_of(row)

    async def lock_chain(self, chain: str) -> ChainHead:
        stmt = select(chains_t.c.audit_seq, chains_t.c.audit_hash, chains_t.c.event_seq).where(
            chains_t.c.id == chain).with_for_update()
        row = (await self.conn.execute(stmt)).first()
        if row is None:
            raise NotFoundError(f"audit chain {chain!r} does not exist")
        head = self.heads[chain] = ChainHead(chain, row.audit_seq, row.audit_hash, row.event_seq)
        return head

    async def add_model(self, name: str, description: str, tags: dict[str, str], actor: str,
                        now: datetime) -> RegisteredModel:
        try:
            model_id = (await self.conn.execute(
                insert(models_t).values(name=name, description=description, tags=tags,
                                        last_version=0, created_at=now, updated_at=now,
                                        created_by=actor).returning(models_t.c.id)
            )).scalar_one()
        except IntegrityError:
            raise AlreadyExistsError(f"model {name!r} already exists") from None
        chain = model_chain(model_id)
        await self.conn.execute(insert(chains_t).values(
            id=chain, model_id=model_id, model_name=name, audit_seq=0, audit_hash=GENESIS,
            event_seq=0, created_at=now))
        self.heads[chain] = ChainHead(chain, 0, GENESIS, 0)
        return RegisteredModel(model_id, name, description, tags, now, now, actor, 0)

    async def update_model(self, model: RegisteredModel) -> None:
        await self.conn.execute(update(models_t).where(models_t.c.id == model.id).values(
            description=model.description, tags=model.tags, updated_at=model.updated_at))

    async def rename_model(self, model: RegisteredModel, new_name: str) -> None:
        """Give the model a new name; its chain (keyed by the model's id) follows it."""
        try:
            await self.conn.execute(update(models_t).where(models_t.c.id == model.id).values(
                name=new_name, updated_at=model.updated_at))
        except IntegrityError:
            raise AlreadyExistsError(f"model {new_name!r} already exists") from None
        await self.conn.execute(update(chains_t).where(chains_t.c.model_id == model.id).values(
            model_name=new_name))

    async def delete_model(self, model: RegisteredModel) -> None:
        # Versions and aliases go by ON DELETE CASCADE; the chain row and audit entries stay.
        await self.conn.execute(models_t.delete().where(models_t.c.id == model.id))

    async def list_models(self, name_prefix: str | None, after: str | None, limit: int,
                          patterns: Sequence[str] | None = None) -> list[RegisteredModel]:
        stmt = select(*MODEL_COLS, MODEL_ALIASES).order_by(models_t.c.name).limit(limit)
        if patterns is not None:
            stmt = stmt.where(name_matches(models_t.c.name, patterns, self.sqlite))
        if name_prefix:
            # LIKE narrows (and uses the index); substr keeps it exact where LIKE ignores case.
            stmt = stmt.where(models_t.c.name.startswith(name_prefix, autoescape=True),
                              func.substr(models_t.c.name, 1, len(name_prefix)) == name_prefix)
        if after is not None:
            stmt = stmt.where(models_t.c.name > after)
        found = []
        for row in await self.conn.execute(stmt):
            found.append(model := model_of(row))
            model.aliases = split_names(row.aliases)
        return found

    # -- versions -----------------------------------------------------------------------------

    async def allocate_version(self, model: RegisteredModel) -> int:
        model.last_version = await self.db.scalar(_ALLOCATE_VERSION, model_id=model.id)
        return model.last_version

    async def reserve_version(self, model: RegisteredModel, number: int) -> bool:
        """Take ``number`` (an imported version keeps its number): False when the counter has
        already handed it out, live or deleted; otherwise the counter moves up to it."""
        if number <= model.last_version:
            return False
        await self.conn.execute(update(models_t).where(models_t.c.id == model.id).values(
            last_version=number))
        model.last_version = number
        return True

    async def delete_version(self, version: ModelVersion, now: datetime) -> None:
        """Delete softly: the row stays (deleted_at set) and is hidden from every read."""
        await self.conn.execute(update(versions_t).where(
            versions_t.c.model_id == version.model_id, versions_t.c.version == version.version,
        ).values(deleted_at=now, updated_at=now))

    async def add_version(self, v: ModelVersion) -> None:
        v.id = await self.db.scalar(
            _ADD_VERSION, model_id=v.model_id, version=v.version, stage=v.stage.value, source=v.source,
            run_id=v.run_id, description=v.description, tags=v.tags, metrics=v.metrics,
            inputs=[i.to_dict() for i in v.inputs], revision=v.revision,
            left_production_seq=v.left_production_seq, stage_since=v.stage_since,
            created_at=v.created_at, updated_at=v.updated_at, created_by=v.created_by)

    async def get_version(self, model: RegisteredModel, number: int) -> ModelVersion | None:
        row = await self.db.first(_GET_VERSION, model_id=model.id, number=number)
        return version_of(row, model.name) if row else None

    async def get_version_and_production(
        self, model: RegisteredModel, number: int
    ) -> tuple[ModelVersion | None, ModelVersion | None]:
        """The version and the current production version, in one query (which also notes
        those of them with no open transition request)."""
        target = production = None
        for row in await self.db.all(_VERSION_AND_PRODUCTION, model_id=model.id, number=number):
            if not row.has_open_requests:
                self.no_open_requests.add((model.id, row.version))
            # Separate objects even when the target is itself in production.
            if row.version == number:
                target = version_of(row, model.name)
            if row.stage == Stage.PRODUCTION.value:
                production = version_of(row, model.name)
        return target, production

    async def save_version(self, v: ModelVersion) -> None:
        await self.db.run(_SAVE_VERSION, p_model_id=v.model_id, p_version=v.version, stage=v.stage.value,
                          description=v.description, tags=v.tags, metrics=v.metrics, revision=v.revision,
                          left_production_seq=v.left_production_seq,
                          left_by_rollback=v.left_by_rollback, stage_since=v.stage_since,
                          updated_at=v.updated_at, sealed_at=v.sealed_at,
                          manifest_digest=v.manifest_digest)

    async def list_versions(self, model: RegisteredModel, stage: Stage | None, run_id: str | None,
                            tags: Sequence[tuple[str, str]], after: int,
                            limit: int) -> list[ModelVersion]:
        stmt = (select(*VERSION_COLS)
                .where(versions_t.c.model_id == model.id, versions_t.c.version > after, LIVE)
                .order_by(versions_t.c.version).limit(limit))
        if stage is not None:
            stmt = stmt.where(versions_t.c.stage == stage.value)
        if run_id is not None:
            stmt = stmt.where(versions_t.c.run_id == run_id)
        for key, value in tags:
            stmt = stmt.where(versions_t.c.tags[key].as_string() == value)
        return [version_of(r, model.name) for r in await self.conn.execute(stmt)]

    async def versions_in_stage(self, model: RegisteredModel, stage: Stage) -> list[ModelVersion]:
        stmt = (select(*VERSION_COLS)
                .where(versions_t.c.model_id == model.id, versions_t.c.stage == stage.value, LIVE)
                .order_by(versions_t.c.version))
        return [version_of(r, model.name) for r in await self.conn.execute(stmt)]

    async def versions_in_stage_by_name(self, name: str, stage: Stage) -> list[ModelVersion] | None:
        """The model's versions in ``stage`` and whether the model exists, in one query (the
        outer join yields one row of NULLs for a model with none)."""
        rows = await self.db.all(_IN_STAGE_BY_NAME, name=name, stage=stage.value)
        if not rows:
            return None
        return [version_of(r, name) for r in rows if r.id is not None]

    async def rollback_candidate(self, model: RegisteredModel) -> int | None:
        return await self.db.scalar(_ROLLBACK_CANDIDATE, model_id=model.id)

    # -- aliases ------------------------------------------------------------------------------

    async def get_alias(self, model: RegisteredModel, alias: str) -> AliasRecord | None:
        row = await self.db.first(_GET_ALIAS, model_id=model.id, alias=alias)
        return AliasRecord(row.version, bool(row.protected)) if row else None

    async def alias_by_name(self, name: str, alias: str) -> tuple[AliasRecord, ModelVersion] | tuple[None, None] | None:
        row = await self.db.first(_ALIAS_BY_NAME, name=name, alias=alias)
        if row is None:
            return None
        if row.id is None:
            return None, None
        return AliasRecord(row.version, bool(row.protected)), version_of(row, name)

    async def set_alias(self, model: RegisteredModel, alias: str, version: int, protected: bool) -> None:
        # The model row is locked, so update-or-insert cannot race with another writer.
        result = await self.conn.execute(update(aliases_t).where(
            aliases_t.c.model_id == model.id, aliases_t.c.alias == alias).values(
            version=version, protected=protected))
        if result.rowcount == 0:
            await self.conn.execute(insert(aliases_t).values(model_id=model.id, alias=alias,
                                                             version=version, protected=protected))

    async def list_aliases(self, model: RegisteredModel, after: str | None,
                           limit: int | None) -> list[tuple[str, AliasRecord]]:
        """The model's aliases by name (bytewise on both backends), after ``after``."""
        name = aliases_t.c.alias if self.sqlite else aliases_t.c.alias.collate("C")
        stmt = (select(aliases_t.c.alias, aliases_t.c.version, aliases_t.c.protected)
                .where(aliases_t.c.model_id == model.id).order_by(name).limit(limit))
        if after is not None:
            stmt = stmt.where(name > after)
        return [(r.alias, AliasRecord(r.version, bool(r.protected))) for r in await self.conn.execute(stmt)]

    async def delete_alias(self, model: RegisteredModel, alias: str) -> None:
        await self.conn.execute(aliases_t.delete().where(aliases_t.c.model_id == model.id,
                                                         aliases_t.c.alias == alias))

    # -- audit and events -----------------------------------------------------------------------

    async def stage_history(self, model: RegisteredModel, version: int) -> list[dict[str, Any]]:
        stmt = (select(audit_t.c.canonical)
                .where(audit_t.c.chain == model_chain(model.id), audit_t.c.version == version,
                       audit_t.c.action == "model_version.stage_changed")
                .order_by(audit_t.c.seq))
        history = []
        for (text,) in await self.conn.execute(stmt):
            entry = json.loads(text)
            history.append({
                "from_stage": entry["before"]["stage"], "to_stage": entry["after"]["stage"],
                "trigger": entry["after"]["trigger"], "comment": entry["after"].get("comment"),
                "actor": entry["actor"], "at": entry["at"], "request_id": entry["request_id"],
                "audit_seq": entry["seq"],
            })
        return history

    async def chain_for_model_name(self, name: str) -> str | None:
        """The chain of the model now holding ``name``, or of the last one that held it."""
        chains = await self.chains_for_model_name(name)
        return chains[0] if chains else None

    async def chains_for_model_name(self, name: str) -> list[str]:
        """Every chain whose model held ``name`` last, the live model's first (a rename can give a
        model the name of a deleted one with a larger id), then the deleted ones, newest first."""
        live = exists().where(models_t.c.id == chains_t.c.model_id, models_t.c.name == name)
        stmt = (select(chains_t.c.id).where(chains_t.c.model_name == name)
                .order_by(case((live, 0), else_=1), chains_t.c.model_id.desc()))
        return list((await self.conn.execute(stmt)).scalars())

    async def audit_entries(self, query: AuditQuery, after: tuple[str, int] | None,
                            limit: int) -> list[dict[str, Any]]:
        """Entries in (chain, seq) order, after the (chain, seq) cursor. Not by id: ids are taken
        at insert and commit out of order across chains, so an id cursor could skip an entry that
        commits late; within a chain, seqs are allocated under its lock and commit in order."""
        stmt = (select(audit_t.c.id, audit_t.c.canonical, audit_t.c.hash)
                .where(_visible_chain(audit_t.c.chain, query, self.sqlite))
                .order_by(audit_t.c.chain, audit_t.c.seq).limit(limit))
        if after is not None:
            stmt = stmt.where(tuple_(audit_t.c.chain, audit_t.c.seq) > tuple_(literal(after[0]),
                                                                               literal(after[1])))
        if query.version is not None:
            stmt = stmt.where(audit_t.c.version == query.version)
        if query.actor is not None:
            stmt = stmt.where(audit_t.c.actor == query.actor)
        if query.action is not None:
            stmt = stmt.where(audit_t.c.action == query.action)
        if query.since is not None:
            stmt = stmt.where(audit_t.c.at >= query.since)
        if query.until is not None:
            stmt = stmt.where(audit_t.c.at <= query.until)
        return [{"id": r.id, **json.loads(r.canonical), "hash": r.hash}
                for r in await self.conn.execute(stmt)]

    async def audit_heads(self, query: AuditQuery) -> list[dict[str, Any]]:
        stmt = (select(chains_t.c.id, chains_t.c.model_name, chains_t.c.audit_seq, chains_t.c.audit_hash)
                .where(_visible_chain(chains_t.c.id, query, self.sqlite)).order_by(chains_t.c.id))
        return [{"chain": r.id, "model": r.model_name, "seq": r.audit_seq, "hash": r.audit_hash}
                for r in await self.conn.execute(stmt)]

    async def audit_log_chains(self, query: AuditQuery) -> dict[str, int]:
        """The chains the audit entries name (with each one's first seq), heads or not."""
        stmt = (select(audit_t.c.chain, func.min(audit_t.c.seq))
                .where(_visible_chain(audit_t.c.chain, query, self.sqlite)).group_by(audit_t.c.chain))
        return {chain: first for chain, first in await self.conn.execute(stmt)}

    async def audit_chain_rows(self, chain: str, after_seq: int, limit: int) -> list[dict[str, Any]]:
        stmt = (select(audit_t.c.chain, audit_t.c.seq, audit_t.c.at, audit_t.c.actor,
                       audit_t.c.request_id, audit_t.c.action, audit_t.c.model, audit_t.c.version,
                       audit_t.c.canonical, audit_t.c.prev_hash, audit_t.c.hash)
                .where(audit_t.c.chain == chain, audit_t.c.seq > after_seq)
                .order_by(audit_t.c.seq).limit(limit))
        return [r._asdict() for r in await self.conn.execute(stmt)]

    async def events(self, chain: str, after: int, limit: int) -> list[dict[str, Any]]:
        stmt = (select(outbox_t.c.event_id, outbox_t.c.type, outbox_t.c.model, outbox_t.c.sequence,
                       outbox_t.c.version, outbox_t.c.actor, outbox_t.c.request_id, outbox_t.c.at,
                       outbox_t.c.data)
                .where(outbox_t.c.chain == chain, outbox_t.c.sequence > after)
                .order_by(outbox_t.c.sequence).limit(limit))
        return [event_of(r) for r in await self.conn.execute(stmt)]

    # -- tokens -------------------------------------------------------------------------------

    async def any_token(self) -> bool:
        return bool((await self.conn.execute(select(exists().select_from(tokens_t)))).scalar())

    async def add_token(self, name: str, principal: str, role: str, secret_hash: str, prefix: str,
                        now: datetime, models: list[str] | None = None,
                        expires_at: datetime | None = None) -> int:
        principal_id = (await self.conn.execute(
            select(principals_t.c.id).where(principals_t.c.name == principal))).scalar_one_or_none()
        if principal_id is None:
            principal_id = (await self.conn.execute(insert(principals_t).values(
                name=principal, created_at=now).returning(principals_t.c.id))).scalar_one()
        return (await self.conn.execute(insert(tokens_t).values(
            principal_id=principal_id, name=name, prefix=prefix, secret_hash=secret_hash,
            role=role, models=models, expires_at=expires_at, created_at=now,
        ).returning(tokens_t.c.id))).scalar_one()

    async def token_by_hash(self, secret_hash: str) -> TokenRecord | None:
        row = await self.db.first(_TOKEN_BY_HASH, secret_hash=secret_hash)
        return _token(row) if row else None

    async def get_token(self, token_id: int) -> TokenRecord | None:
        row = (await self.conn.execute(_TOKENS.where(tokens_t.c.id == token_id))).first()
        return _token(row) if row else None

    async def list_tokens(self, after: int, limit: int) -> list[TokenRecord]:
        stmt = _TOKENS.where(tokens_t.c.id > after).order_by(tokens_t.c.id).limit(limit)
        return [_token(r) for r in await self.conn.execute(stmt)]

    async def revoke_token(self, token_id: int, now: datetime) -> None:
        await self.conn.execute(update(tokens_t).where(tokens_t.c.id == token_id).values(revoked_at=now))

    async def touch_token(self, token_id: int, now: datetime) -> None:
        await self.conn.execute(update(tokens_t).where(tokens_t.c.id == token_id).values(last_used_at=now))
