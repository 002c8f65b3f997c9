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

-- Audit trail: who changed what, when, per field old and new value. Rows are
-- written in the same transaction as the change. Append-only, enforced here:
-- triggers refuse UPDATE, DELETE and TRUNCATE for every role, the application's
-- included (only dropping the trigger, a schema owner's act, could bypass it).
CREATE TABLE IF NOT EXISTS xrm_sys.audit_log (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at             timestamptz NOT NULL DEFAULT now(),
    principal_id   uuid,
    principal_name text NOT NULL,
    action         text NOT NULL,
    entity         text,
    record_id      uuid,
    changes        jsonb,
    details        jsonb
);
CREATE INDEX IF NOT EXISTS audit_log__record ON xrm_sys.audit_log (record_id, id) WHERE record_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS audit_log__entity ON xrm_sys.audit_log (entity, id);
CREATE INDEX IF NOT EXISTS audit_log__principal ON xrm_sys.audit_log (principal_id, id);
CREATE INDEX IF NOT EXISTS audit_log__at ON xrm_sys.audit_log (at);
CREATE OR REPLACE FUNCTION xrm_sys.audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'xrm_sys.audit_log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE OR REPLACE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON xrm_sys.audit_log
    FOR EACH ROW EXECUTE FUNCTION xrm_sys.audit_log_is_append_only();
CREATE OR REPLACE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON xrm_sys.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION xrm_sys.audit_log_is_append_only();

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
-- A read-only token may only read (GET); added after the table, so existing databases get it too.
ALTER TABLE xrm_sys.api_token ADD COLUMN IF NOT EXISTS access text NOT NULL DEFAULT 'write'
    CHECK (access IN ('read', 'write'));

-- ===== Security model: roles, grants, teams, shares (xrm.security; docs/security.md) =====
-- A role grants, per entity ('*' = every entity) and action, a scope. Users
-- hold role names in app_user.roles; the code checks that each one exists.
CREATE TABLE IF NOT EXISTS xrm_sys.role (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_.-]{0,62}$'),
    description text NOT NULL DEFAULT '',
    built_in    boolean NOT NULL DEFAULT false,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS xrm_sys.role_grant (
    role   text NOT NULL REFERENCES xrm_sys.role (name) ON DELETE CASCADE,
    entity text NOT NULL CHECK (entity = '*' OR entity ~ '^[a-z][a-z0-9_]{0,62}$'),
    action text NOT NULL CHECK (action IN ('create', 'read', 'update', 'delete', 'export', 'assign', 'share')),
    scope  text NOT NULL CHECK (scope IN ('none', 'own', 'team', 'team_tree', 'all')),
    PRIMARY KEY (role, entity, action)
);
-- Teams nest (a team with sub-teams is a business unit); code refuses cycles.
CREATE TABLE IF NOT EXISTS xrm_sys.team (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name       text NOT NULL UNIQUE CHECK (name ~ '^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,62}$'),
    parent_id  uuid REFERENCES xrm_sys.team (id),
    created_at timestamptz NOT NULL DEFAULT now(),
    CHECK (parent_id IS DISTINCT FROM id)
);
CREATE INDEX IF NOT EXISTS team_parent ON xrm_sys.team (parent_id);
CREATE TABLE IF NOT EXISTS xrm_sys.team_member (
    team_id uuid NOT NULL REFERENCES xrm_sys.team (id) ON DELETE CASCADE,
    user_id uuid NOT NULL REFERENCES xrm_sys.app_user (id) ON DELETE CASCADE,
    PRIMARY KEY (team_id, user_id)
);
CREATE INDEX IF NOT EXISTS team_member_user ON xrm_sys.team_member (user_id);
-- One record shared with one user or one team; revoking keeps the row (history).
CREATE TABLE IF NOT EXISTS xrm_sys.record_share (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    entity     text NOT NULL,
    record_id  uuid NOT NULL,
    user_id    uuid REFERENCES xrm_sys.app_user (id) ON DELETE CASCADE,
    team_id    uuid REFERENCES xrm_sys.team (id) ON DELETE CASCADE,
    access     text NOT NULL CHECK (access IN ('read', 'write')),
    granted_by uuid,
    granted_at timestamptz NOT NULL DEFAULT now(),
    revoked_by uuid,
    revoked_at timestamptz,
    CHECK (num_nonnulls(user_id, team_id) = 1)
);
CREATE UNIQUE INDEX IF NOT EXISTS record_share_active
    ON xrm_sys.record_share (entity, record_id, coalesce(user_id, team_id)) WHERE revoked_at IS NULL;
CREATE INDEX IF NOT EXISTS record_share_user ON xrm_sys.record_share (user_id, entity) INCLUDE (record_id, access) WHERE revoked_at IS NULL;
CREATE INDEX IF NOT EXISTS record_share_team ON xrm_sys.record_share (team_id, entity) INCLUDE (record_id, access) WHERE revoked_at IS NULL;
-- Built-in roles. `admin` always holds every action on every entity at scope
-- all. `sales` and `service` (used by `xrm demo`) get their grants only when
-- the role is first created, so an admin's later changes stick.
INSERT INTO xrm_sys.role (name, description, built_in)
VALUES ('admin', 'Everything: every action on every entity, all records; role, team and share management', true)
ON CONFLICT (name) DO UPDATE SET built_in = true WHERE NOT xrm_sys.role.built_in;
INSERT INTO xrm_sys.role_grant (role, entity, action, scope)
SELECT 'admin', '*', a, 'all' FROM unnest(ARRAY['create', 'read', 'update', 'delete', 'export', 'assign', 'share']) AS a
ON CONFLICT (role, entity, action) DO UPDATE SET scope = 'all' WHERE xrm_sys.role_grant.scope <> 'all';
WITH created AS (
    INSERT INTO xrm_sys.role (name, description)
    VALUES ('sales', 'Sales: reads all accounts and contacts, works on deals of their team')
    ON CONFLICT (name) DO NOTHING RETURNING name
)
INSERT INTO xrm_sys.role_grant (role, entity, action, scope)
SELECT created.name, g.entity, g.action, g.scope FROM created, (VALUES
    ('account', 'create', 'own'), ('account', 'read', 'all'), ('account', 'update', 'team'), ('account', 'export', 'team'),
    ('account', 'share', 'own'), ('account', 'assign', 'own'),
    ('contact', 'create', 'own'), ('contact', 'read', 'all'), ('contact', 'update', 'team'), ('contact', 'export', 'team'),
    ('contact', 'share', 'own'), ('contact', 'assign', 'own'),
    ('deal', 'create', 'own'), ('deal', 'read', 'team_tree'), ('deal', 'update', 'team'), ('deal', 'delete', 'own'),
    ('deal', 'export', 'team'), ('deal', 'share', 'own'), ('deal', 'assign', 'team')
) AS g (entity, action, scope)
ON CONFLICT DO NOTHING;
WITH created AS (
    INSERT INTO xrm_sys.role (name, description)
    VALUES ('service', 'Service: reads accounts and contacts, keeps contacts of their team up to date, reads deals of their team')
    ON CONFLICT (name) DO NOTHING RETURNING name
)
INSERT INTO xrm_sys.role_grant (role, entity, action, scope)
SELECT created.name, g.entity, g.action, g.scope FROM created, (VALUES
    ('account', 'read', 'all'), ('account', 'update', 'own'),
    ('contact', 'create', 'own'), ('contact', 'read', 'all'), ('contact', 'update', 'team'), ('contact', 'share', 'own'),
    ('deal', 'read', 'team')
) AS g (entity, action, scope)
ON CONFLICT DO NOTHING;
-- ===== end of the security model block =====
-- ===== Field-level security: field grants (xrm.security; docs/security.md) =====
-- A field marked "x-xrm": {"sensitive": true} is read only by roles granted it
-- here ('update' implies 'read'), by the admin role and by the system principal.
CREATE TABLE IF NOT EXISTS xrm_sys.role_field_grant (
    role   text NOT NULL REFERENCES xrm_sys.role (name) ON DELETE CASCADE,
    entity text NOT NULL CHECK (entity ~ '^[a-z][a-z0-9_]{0,62}$'),
    field  text NOT NULL CHECK (field ~ '^[a-z][a-z0-9_]{0,62}$'),
    access text NOT NULL CHECK (access IN ('read', 'update')),
    PRIMARY KEY (role, entity, field)
);
-- ===== end of the field-level security block =====
