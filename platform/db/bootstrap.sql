-- System schema of xrm. Idempotent: runs at every start.
CREATE EXTENSION IF NOT EXISTS vector;
CREATE SCHEMA IF NOT EXISTS xrm_sys;
CREATE SCHEMA IF NOT EXISTS xrm_archive;

-- One row per schema change (apply, revert, remove, restore).
CREATE TABLE IF NOT EXISTS xrm_sys.schema_changeset (
    id          bigserial PRIMARY KEY,
    kind        text NOT NULL CHECK (kind IN ('apply', 'revert', 'restore')),
    applied_at  timestamptz NOT NULL DEFAULT now(),
    applied_by  uuid,
    details     json NOT NULL,
    reverts     bigint REFERENCES xrm_sys.schema_changeset (id),
    reverted_by bigint REFERENCES xrm_sys.schema_changeset (id)
);

-- An entity type keeps its id across renames; `definition` is the current one.
-- Definitions are `json`, not `jsonb`: the order of properties is the order of
-- fields in forms and lists, and jsonb would sort the keys.
CREATE TABLE IF NOT EXISTS xrm_sys.entity (
    id             uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name           text NOT NULL,
    version        integer NOT NULL,
    definition     json NOT NULL,
    archived_table text,
    removed_at     timestamptz
);
CREATE UNIQUE INDEX IF NOT EXISTS entity_live_name ON xrm_sys.entity (name) WHERE removed_at IS NULL;

-- Every definition an entity ever had; definition is NULL for "removed".
CREATE TABLE IF NOT EXISTS xrm_sys.entity_version (
    entity_id    uuid NOT NULL REFERENCES xrm_sys.entity (id),
    version      integer NOT NULL,
    name         text NOT NULL,
    definition   json,
    changeset_id bigint NOT NULL REFERENCES xrm_sys.schema_changeset (id),
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (entity_id, version)
);

-- Values a schema change removed or rewrote, so they can be restored.
CREATE TABLE IF NOT EXISTS xrm_sys.archive_batch (
    id               bigserial PRIMARY KEY,
    changeset_id     bigint NOT NULL REFERENCES xrm_sys.schema_changeset (id),
    entity_id        uuid NOT NULL REFERENCES xrm_sys.entity (id),
    field            text NOT NULL,
    reason           text NOT NULL CHECK (reason IN ('removed', 'converted', 'backfilled')),
    field_definition json NOT NULL,
    row_count        bigint NOT NULL DEFAULT 0,
    created_at       timestamptz NOT NULL DEFAULT now(),
    restored_at      timestamptz
);
CREATE TABLE IF NOT EXISTS xrm_sys.archive_value (
    batch_id  bigint NOT NULL REFERENCES xrm_sys.archive_batch (id),
    record_id uuid NOT NULL,
    value     jsonb,
    PRIMARY KEY (batch_id, record_id)
);

-- Transactional outbox: written with every change, read by workers after commit.
CREATE TABLE IF NOT EXISTS xrm_sys.outbox (
    id           bigserial PRIMARY KEY,
    occurred_at  timestamptz NOT NULL DEFAULT now(),
    topic        text NOT NULL,
    entity       text,
    record_id    uuid,
    principal_id uuid,
    payload      jsonb NOT NULL,
    processed_at timestamptz
);
CREATE INDEX IF NOT EXISTS outbox_pending ON xrm_sys.outbox (id) WHERE processed_at IS NULL;

-- Users and API tokens (roles, teams and permissions build on these).
CREATE TABLE IF NOT EXISTS xrm_sys.app_user (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name          text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9._@-]{0,62}$'),
    password_hash text NOT NULL,
    roles         text[] NOT NULL DEFAULT '{}',
    created_at    timestamptz NOT NULL DEFAULT now(),
    disabled_at   timestamptz
);
-- Only a hash of each token is stored; the token itself is shown once.
CREATE TABLE IF NOT EXISTS xrm_sys.api_token (
    id           uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id      uuid NOT NULL REFERENCES xrm_sys.app_user (id),
    token_hash   bytea NOT NULL UNIQUE,
    label        text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);
