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
-- written in the same transaction as the change. Append-only: triggers
-- (audit_trail.sql) refuse UPDATE, DELETE and TRUNCATE for every role, and the
-- application's role owns neither the table nor the triggers (docs/audit.md).
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
-- The files audit retention archived entries to (xrm.privacy.audit_retention), so an
-- erasure can redact them too (xrm.privacy.archive_files).
CREATE TABLE IF NOT EXISTS xrm_sys.audit_archive_file (
    path       text PRIMARY KEY,
    entity     text NOT NULL,
    entries    integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
-- Its indexes, trigger functions and triggers: audit_trail.sql (run only by a role that may
-- change them: a superuser or the table's owner; see bootstrap_system_schema).

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
-- ===== Web sessions and login protection (xrm.sessions, xrm.auth; docs/security.md) =====
-- Consecutive failed logins per user; N of them lock the login until locked_until.
ALTER TABLE xrm_sys.app_user ADD COLUMN IF NOT EXISTS failed_logins integer NOT NULL DEFAULT 0;
ALTER TABLE xrm_sys.app_user ADD COLUMN IF NOT EXISTS last_failed_login_at timestamptz;
ALTER TABLE xrm_sys.app_user ADD COLUMN IF NOT EXISTS locked_until timestamptz;
-- The same counters for names that are no (enabled) user, so the lock-out
-- cannot tell who exists. Rows are pruned once quiet for the lock-out period.
CREATE TABLE IF NOT EXISTS xrm_sys.login_failure (
    name                 text PRIMARY KEY,
    failed_logins        integer NOT NULL DEFAULT 0,
    last_failed_login_at timestamptz,
    locked_until         timestamptz
);
CREATE INDEX IF NOT EXISTS login_failure_last ON xrm_sys.login_failure (last_failed_login_at);
-- Failed logins per client address, whatever the names (password spraying: one
-- guess per name from one address); the same counting and lock as per name.
CREATE TABLE IF NOT EXISTS xrm_sys.login_failure_by_address (
    address              text PRIMARY KEY,
    failed_logins        integer NOT NULL DEFAULT 0,
    last_failed_login_at timestamptz,
    locked_until         timestamptz
);
CREATE INDEX IF NOT EXISTS login_failure_by_address_last ON xrm_sys.login_failure_by_address (last_failed_login_at);
-- A browser login. id is the SHA-256 of the cookie's random token (the token
-- itself is never stored); the CSRF token is derived from the token.
CREATE TABLE IF NOT EXISTS xrm_sys.web_session (
    id           bytea PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES xrm_sys.app_user (id) ON DELETE CASCADE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_seen_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    revoked_at   timestamptz,
    user_agent   text NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS web_session_user ON xrm_sys.web_session (user_id);
-- ===== end of the web sessions block =====
-- ===== Web UI (webui/; docs/webui.md) =====
-- The user's language for the UI (en, de); NULL: the browser's Accept-Language.
ALTER TABLE xrm_sys.app_user ADD COLUMN IF NOT EXISTS language text CHECK (language IN ('en', 'de'));
-- ===== end of the web UI block =====
-- ===== Saved views of lists (webui/views_lists.py; docs/webui.md "Saved views") =====
-- A named list URL query string (filters, search, sort, columns) of one entity.
-- Personal views are seen by their owner only; shared ones by every user who
-- may read the entity (only the owner or an admin may delete a shared one).
CREATE TABLE IF NOT EXISTS xrm_sys.saved_view (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    entity     text NOT NULL CHECK (entity ~ '^[a-z][a-z0-9_]{0,62}$'),
    name       text NOT NULL CHECK (length(btrim(name)) BETWEEN 1 AND 100),
    query      text NOT NULL DEFAULT '' CHECK (length(query) <= 4000),
    owner_id   uuid NOT NULL REFERENCES xrm_sys.app_user (id) ON DELETE CASCADE,
    shared     boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (owner_id, entity, name)
);
CREATE INDEX IF NOT EXISTS saved_view_entity ON xrm_sys.saved_view (entity) WHERE shared;
-- ===== end of the saved views block =====
-- ===== Relationships (plugin xrm.builtins.relationships; docs/relationships.md) =====
-- Connection roles: named pairs an admin creates ("advisor of" / "advised by"),
-- with the entities allowed at each end (NULL: any entity).
CREATE TABLE IF NOT EXISTS xrm_sys.connection_role (
    name            text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    label           jsonb NOT NULL,
    inverse_label   jsonb NOT NULL,
    source_entities text[],
    target_entities text[],
    created_at      timestamptz NOT NULL DEFAULT now(),
    created_by      uuid
);
-- A role a plugin declares (xrm_relationship_types) names that plugin: it is
-- created and updated at start-up, and cannot be deleted while the plugin is loaded.
ALTER TABLE xrm_sys.connection_role ADD COLUMN IF NOT EXISTS plugin text;
-- One generic table for many-to-many links (kind 'link', name = the link declared
-- in the source entity's x-xrm links) and any-to-any connections (kind
-- 'connection', name = a connection role). Rows point at records of any entity,
-- so there is no foreign key: a link shows only while both ends are live and
-- readable. Removing a link deletes its row; the audit trail keeps it.
CREATE TABLE IF NOT EXISTS xrm_sys.record_link (
    id            uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    kind          text NOT NULL CHECK (kind IN ('link', 'connection')),
    name          text NOT NULL,
    source_entity text NOT NULL,
    source_id     uuid NOT NULL,
    target_entity text NOT NULL,
    target_id     uuid NOT NULL,
    attributes    jsonb NOT NULL DEFAULT '{}'::jsonb,
    valid_from    date,
    valid_until   date,
    created_at    timestamptz NOT NULL DEFAULT now(),
    created_by    uuid,
    CHECK (valid_from IS NULL OR valid_until IS NULL OR valid_from <= valid_until)
);
CREATE INDEX IF NOT EXISTS record_link__source ON xrm_sys.record_link (source_id, kind, name);
CREATE INDEX IF NOT EXISTS record_link__target ON xrm_sys.record_link (target_id, kind, name);
-- A pair is linked at most once per link; a connection at most once per role and start date.
CREATE UNIQUE INDEX IF NOT EXISTS record_link__unique_link ON xrm_sys.record_link (name, source_entity, source_id, target_id) WHERE kind = 'link';
CREATE UNIQUE INDEX IF NOT EXISTS record_link__unique_connection
    ON xrm_sys.record_link (name, source_id, target_id, coalesce(valid_from, '-infinity'::date)) WHERE kind = 'connection';
-- ===== end of the relationships block =====
-- ===== Jobs and automations (plugin xrm.builtins.automations; docs/workflows.md) =====
-- Which transaction wrote an outbox event: a reader that only takes events of
-- transactions older than its snapshot's xmin never skips one that commits late.
ALTER TABLE xrm_sys.outbox ADD COLUMN IF NOT EXISTS xact xid8 NOT NULL DEFAULT pg_current_xact_id();
CREATE INDEX IF NOT EXISTS outbox_xact ON xrm_sys.outbox (xact);
-- How far each outbox reader got: every event of a transaction below `horizon` is read.
-- Created at install time, so events from then on are read (older history is not replayed).
CREATE TABLE IF NOT EXISTS xrm_sys.automation_cursor (
    consumer   text PRIMARY KEY,
    horizon    xid8 NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
INSERT INTO xrm_sys.automation_cursor (consumer, horizon)
VALUES ('automations', pg_snapshot_xmin(pg_current_snapshot())) ON CONFLICT (consumer) DO NOTHING;
-- The durable job queue: workers claim with FOR UPDATE SKIP LOCKED and a lease.
CREATE TABLE IF NOT EXISTS xrm_sys.job (
    id              bigserial PRIMARY KEY,
    kind            text NOT NULL,
    payload         jsonb NOT NULL DEFAULT '{}'::jsonb,
    idempotency_key text NOT NULL UNIQUE,
    automation      text,
    state           text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'running', 'done', 'failed', 'dead')),
    attempts        integer NOT NULL DEFAULT 0,
    max_attempts    integer NOT NULL DEFAULT 5 CHECK (max_attempts >= 1),
    run_after       timestamptz NOT NULL DEFAULT now(),
    locked_by       text,
    locked_until    timestamptz,
    last_error      text,
    result          jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    started_at      timestamptz,
    finished_at     timestamptz
);
CREATE INDEX IF NOT EXISTS job_ready ON xrm_sys.job (run_after, id) WHERE state IN ('queued', 'running');
CREATE INDEX IF NOT EXISTS job_state ON xrm_sys.job (state, id);
CREATE INDEX IF NOT EXISTS job_automation ON xrm_sys.job (automation, id);
-- Automations admins create (those in entity definitions live in x-xrm automations).
CREATE TABLE IF NOT EXISTS xrm_sys.automation (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name       text NOT NULL UNIQUE CHECK (name ~ '^[a-z][a-z0-9_]{0,62}$'),
    entity     text NOT NULL CHECK (entity ~ '^[a-z][a-z0-9_]{0,62}$'),
    trigger    jsonb NOT NULL,
    condition  jsonb NOT NULL DEFAULT '[]'::jsonb,
    actions    jsonb NOT NULL,
    run_as     text NOT NULL,
    enabled    boolean NOT NULL DEFAULT true,
    created_by text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- Per automation (key "db:<name>" or "def:<entity>:<name>"): webhook secret,
-- last scheduled run / date scan, round-robin position.
CREATE TABLE IF NOT EXISTS xrm_sys.automation_state (
    key         text PRIMARY KEY,
    secret      text NOT NULL DEFAULT replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''),
    last_run    timestamptz,
    round_robin bigint NOT NULL DEFAULT 0
);
-- Rendered e-mails; a job sends each one (Message-ID <id@xrm>, so a resend after a crash is recognisable).
CREATE TABLE IF NOT EXISTS xrm_sys.mail_outbox (
    id         uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    automation text,
    recipients text[] NOT NULL,
    subject    text NOT NULL,
    body       text NOT NULL,
    state      text NOT NULL DEFAULT 'queued' CHECK (state IN ('queued', 'sent')),
    created_at timestamptz NOT NULL DEFAULT now(),
    sent_at    timestamptz
);
-- A user's e-mail address, for mail to a record's owner (automations' send_email to_owner; reminders).
ALTER TABLE xrm_sys.app_user ADD COLUMN IF NOT EXISTS email text CHECK (email ~ '^[^@\s]+@[^@\s]+$' AND length(email) <= 254);
-- In-app notifications (the automations' notify action, e.g. activity reminders): one row per user,
-- shown on /notifications until the user dismisses it.
CREATE TABLE IF NOT EXISTS xrm_sys.notification (
    id           bigserial PRIMARY KEY,
    user_id      uuid NOT NULL REFERENCES xrm_sys.app_user (id) ON DELETE CASCADE,
    automation   text,
    entity       text,
    record_id    uuid,
    title        text NOT NULL,
    body         text NOT NULL DEFAULT '',
    created_at   timestamptz NOT NULL DEFAULT now(),
    dismissed_at timestamptz
);
CREATE INDEX IF NOT EXISTS notification_open ON xrm_sys.notification (user_id, id) WHERE dismissed_at IS NULL;
-- ===== end of the jobs and automations block =====

-- Definition files (entity_schemas/, plugins) as last applied at start: a file is applied again
-- only when its content changed, so an admin's later change of the entity survives a restart.
CREATE TABLE IF NOT EXISTS xrm_sys.startup_definition (
    entity     text PRIMARY KEY,
    digest     text NOT NULL,
    source     text,
    applied_at timestamptz NOT NULL DEFAULT now()
);
-- ===== The assistant's vector index (xrm.assistant.index; docs/assistant.md) =====
-- One vector per record of a searchable entity. The column has no fixed
-- dimension (the model decides); each entity's HNSW index casts to it. A schema
-- of its own, which the application may create those indexes in (not xrm_sys).
CREATE SCHEMA IF NOT EXISTS xrm_index;
CREATE TABLE IF NOT EXISTS xrm_index.record_embedding (
    entity     text NOT NULL,
    record_id  uuid NOT NULL,
    text_hash  bytea NOT NULL,
    embedding  vector NOT NULL,
    indexed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (entity, record_id)
);
-- Which model the vectors come from (one row).
CREATE TABLE IF NOT EXISTS xrm_sys.embedding_model (
    singleton  boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    model      text NOT NULL,
    dimensions integer NOT NULL
);
-- The index follows the outbox from install time on (older records: xrm reindex).
INSERT INTO xrm_sys.automation_cursor (consumer, horizon)
VALUES ('assistant_index', pg_snapshot_xmin(pg_current_snapshot())) ON CONFLICT (consumer) DO NOTHING;
-- The assistant's conversations: each user's questions and the answers they got (docs/assistant.md).
CREATE TABLE IF NOT EXISTS xrm_sys.assistant_message (
    id       bigserial PRIMARY KEY,
    user_id  uuid NOT NULL,
    asked_at timestamptz NOT NULL DEFAULT now(),
    question text NOT NULL,
    answer   jsonb NOT NULL
);
CREATE INDEX IF NOT EXISTS assistant_message_by_user ON xrm_sys.assistant_message (user_id, id);
