-- pgbench script: the bare promotion transaction, as versus_mlflow.py runs it (-D models=M
-- -D clients=C). Client k only promotes models k+1, k+1+C, ...: clients never wait on each other's
-- model lock, as the HTTP runs (requests in model order) mostly do not either. Each transaction
-- archives the model's production version and promotes the other of its two versions, so it
-- always makes the writes of a promotion: lock, archive incumbent, promote target, audit row,
-- outbox row. One statement per round trip, prepared (pgbench -M prepared).
\set m 1 + :client_id + :clients * random(0, (:models - 1 - :client_id) / :clients)
BEGIN;
SELECT id, name, last_version FROM registered_models WHERE id = :m FOR UPDATE;
UPDATE model_versions SET stage = 'archived', revision = revision + 1, stage_since = now(), updated_at = now() WHERE model_id = :m AND stage = 'production' RETURNING version AS incumbent \gset
UPDATE model_versions SET stage = 'production', revision = revision + 1, stage_since = now(), updated_at = now() WHERE model_id = :m AND version = 3 - :incumbent;
INSERT INTO audit_log (chain, at, actor, request_id, action, model, version, canonical, prev_hash, hash) VALUES ('model:' || :m, now(), 'bench', md5(random()::text), 'model_version.stage_changed', 'bench-' || :m, 3 - :incumbent, '{"action":"model_version.stage_changed","actor":"bench","data":{"from_stage":"staging","to_stage":"production","trigger":"promote","archived":[' || :incumbent || ']},"model":"bench-' || :m || '","version":' || (3 - :incumbent) || '}', md5(random()::text) || md5(random()::text), md5(random()::text) || md5(random()::text));
INSERT INTO outbox_events (event_id, chain, type, model, version, actor, request_id, at, data) VALUES (gen_random_uuid()::text, 'model:' || :m, 'model_version.stage_changed', 'bench-' || :m, 3 - :incumbent, 'bench', md5(random()::text), now(), '{"from_stage":"staging","to_stage":"production","trigger":"promote","archived":[1]}');
COMMIT;
