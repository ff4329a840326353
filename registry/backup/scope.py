"""What a backup archive holds: every table of the schema is either exported or excluded, with
the reason written down, so a table added later cannot be left out of backups silently (a test
fails until it is classified here).

Exported: the registry's state and its history (models, versions, aliases, policies, checks,
requests, comments, principals and tokens' metadata, webhook subscriptions with their encrypted
secrets, artifact file records, the audit log with its chain heads, the outbox events that feed
``GET /events`` and the lineage events that answer a version's lineage).

Excluded: state that belongs to one running installation and means nothing in another.
"""

from __future__ import annotations

from sqlalchemy import Table

from registry.adapters.db.tables import metadata

EXPORTED: tuple[str, ...] = (
    "registered_models",
    "audit_chains",  # chain heads and event counters: verify compares the entries with them
    "audit_log",  # complete: never pruned, so never partial
    "model_versions",
    "model_aliases",
    "stage_policies",
    "version_checks",
    "transition_requests",
    "comments",
    "principals",
    "api_tokens",  # metadata only: see OMITTED
    "webhook_subscriptions",  # secrets as stored: encrypted under REGISTRY_SECRET_KEY
    "artifacts",  # file records; the bytes live in the artifact store, backed up separately
    "outbox_events",  # the pull feed and model history (within REGISTRY_RETENTION_DAYS)
    "lineage_events",  # a version's lineage (never pruned)
)

EXCLUDED: dict[str, str] = {
    "deliveries": "webhook/lineage delivery state and log: leases and retry times of this "
                  "installation's workers (and pruned after REGISTRY_RETENTION_DAYS)",
    "delivery_attempts": "the log of each delivery's tries, pruned with its delivery",
    "idempotency_keys": "stored answers to retried POSTs, kept for REGISTRY_IDEMPOTENCY_TTL only",
    "ui_sessions": "web sign-ins, which act with tokens whose secrets are not exported",
    "artifact_uploads": "presigned uploads in flight: they expire within "
                        "REGISTRY_ARTIFACT_UPLOAD_TTL and name objects not yet checked",
}

# Columns never written to an archive, and what restore stores instead.
OMITTED: dict[str, frozenset[str]] = {
    # A token's secret is shown once and only its SHA-256 is stored: exporting the hash would let
    # whoever holds the archive test guesses offline, and a restored token that still worked would
    # be a credential nobody re-issued. Restore stores a random value no secret hashes to.
    "api_tokens": frozenset({"secret_hash"}),
}


class UnclassifiedTableError(RuntimeError):
    """The schema has a table this module neither exports nor excludes."""


def unclassified() -> set[str]:
    """Tables of the schema that are in neither list (must be empty)."""
    return set(metadata.tables) - set(EXPORTED) - set(EXCLUDED)


def exported_tables() -> list[Table]:
    """The exported tables in an order that satisfies their foreign keys (parents first)."""
    missing = unclassified()
    if missing:
        raise UnclassifiedTableError(
            f"tables neither exported nor excluded by registry.backup.scope: {sorted(missing)}")
    return [t for t in metadata.sorted_tables if t.name in EXPORTED]


def archived_columns(table: Table) -> list[str]:
    """The columns of ``table`` an archive carries, in the table's order."""
    omitted = OMITTED.get(table.name, frozenset())
    return [c.name for c in table.columns if c.name not in omitted]
