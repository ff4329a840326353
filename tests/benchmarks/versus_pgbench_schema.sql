-- Tables for pgbench's bare promotion transaction (versus_pgbench_promote.sql), shaped like the
-- registry's: a model row to lock, versions with at most one production version per model (a
-- partial unique index), an append-only audit log and an outbox, with the same keys and indexes.
-- Every model starts with version 1 in production and version 2 in staging.
CREATE TABLE registered_models (
    id serial PRIMARY KEY,
    name varchar(256) NOT NULL UNIQUE,
    last_version integer NOT NULL DEFAULT 2,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE model_versions (
    id serial PRIMARY KEY,
    model_id integer NOT NULL REFERENCES registered_models (id) ON DELETE CASCADE,
    version integer NOT NULL,
    stage varchar(16) NOT NULL,
    source text NOT NULL DEFAULT 's3://bench/model',
    revision integer NOT NULL DEFAULT 1,
    stage_since timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT uq_model_versions_model_id_version UNIQUE (model_id, version)
);
CREATE INDEX ix_model_versions_model_id_stage ON model_versions (model_id, stage);
CREATE UNIQUE INDEX uq_model_versions_one_production ON model_versions (model_id)
    WHERE stage = 'production';
CREATE TABLE audit_log (
    id bigserial PRIMARY KEY,
    chain varchar(64) NOT NULL,
    seq bigserial NOT NULL,
    at timestamptz NOT NULL,
    actor varchar(256) NOT NULL,
    request_id varchar(128) NOT NULL,
    action varchar(64) NOT NULL,
    model varchar(256),
    version integer,
    canonical text NOT NULL,
    prev_hash varchar(64) NOT NULL,
    hash varchar(64) NOT NULL,
    CONSTRAINT uq_audit_log_chain_seq UNIQUE (chain, seq)
);
CREATE INDEX ix_audit_log_chain_version ON audit_log (chain, version);
CREATE TABLE outbox_events (
    id bigserial PRIMARY KEY,
    event_id varchar(36) NOT NULL UNIQUE,
    chain varchar(64) NOT NULL,
    sequence bigserial NOT NULL,
    type varchar(64) NOT NULL,
    model varchar(256),
    version integer,
    actor varchar(256) NOT NULL,
    request_id varchar(128) NOT NULL,
    at timestamptz NOT NULL,
    data json NOT NULL,
    relayed_at timestamptz,
    CONSTRAINT uq_outbox_events_chain_sequence UNIQUE (chain, sequence)
);
CREATE INDEX ix_outbox_events_unrelayed ON outbox_events (id) WHERE relayed_at IS NULL;
CREATE INDEX ix_outbox_events_unrelayed_chain ON outbox_events (chain, sequence)
    WHERE relayed_at IS NULL;
