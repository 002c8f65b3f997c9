-- The audit table's indexes and its append-only triggers (the table itself is in
-- bootstrap.sql). Run at start by bootstrap_system_schema only when the connected role
-- may change them (a superuser, or the table's owner): on a server where an admin has
-- handed the table to xrm_audit_owner (docs/audit.md) a plain role leaves them alone.

CREATE INDEX IF NOT EXISTS audit_log__record ON xrm_sys.audit_log (record_id, id) WHERE record_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS audit_log__entity ON xrm_sys.audit_log (entity, id);
CREATE INDEX IF NOT EXISTS audit_log__principal ON xrm_sys.audit_log (principal_id, id);
CREATE INDEX IF NOT EXISTS audit_log__at ON xrm_sys.audit_log (at);
-- Two controlled exceptions, both able only to remove information, never to
-- add or alter it (docs/audit.md, docs/privacy.md):
--  * redaction (erasure of a person): inside a transaction that says
--    SET LOCAL xrm.audit_redaction = 'on', an UPDATE may replace values in
--    `changes` / `details` by the string "[redacted]"; every other column and
--    every other value must stay exactly as it was (checked below);
--  * retention: inside SET LOCAL xrm.audit_archive = 'on', a DELETE may remove
--    an entry of an entity whose live definition keeps its trail for N days
--    (x-xrm audit_retention), and only once the entry is older than that.
CREATE OR REPLACE FUNCTION xrm_sys.jsonb_is_redaction_of(redacted jsonb, original jsonb) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
    key text;
    i integer;
BEGIN
    IF redacted IS NOT DISTINCT FROM original OR redacted = '"[redacted]"'::jsonb THEN
        RETURN true;
    END IF;
    IF redacted IS NULL OR original IS NULL OR jsonb_typeof(redacted) <> jsonb_typeof(original) THEN
        RETURN false;
    END IF;
    IF jsonb_typeof(original) = 'object' THEN
        IF (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(redacted) k)
           IS DISTINCT FROM (SELECT array_agg(k ORDER BY k) FROM jsonb_object_keys(original) k) THEN
            RETURN false;
        END IF;
        FOR key IN SELECT jsonb_object_keys(original) LOOP
            IF NOT xrm_sys.jsonb_is_redaction_of(redacted -> key, original -> key) THEN
                RETURN false;
            END IF;
        END LOOP;
        RETURN true;
    END IF;
    IF jsonb_typeof(original) = 'array' AND jsonb_array_length(redacted) = jsonb_array_length(original) THEN
        FOR i IN 0 .. jsonb_array_length(original) - 1 LOOP
            IF NOT xrm_sys.jsonb_is_redaction_of(redacted -> i, original -> i) THEN
                RETURN false;
            END IF;
        END LOOP;
        RETURN true;
    END IF;
    RETURN false;
END $$;
CREATE OR REPLACE FUNCTION xrm_sys.audit_log_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    keep_days integer;
BEGIN
    IF TG_OP = 'UPDATE' AND current_setting('xrm.audit_redaction', true) = 'on'
       AND (NEW.id, NEW.at, NEW.principal_id, NEW.principal_name, NEW.action, NEW.entity, NEW.record_id)
           IS NOT DISTINCT FROM (OLD.id, OLD.at, OLD.principal_id, OLD.principal_name, OLD.action, OLD.entity, OLD.record_id)
       AND xrm_sys.jsonb_is_redaction_of(NEW.changes, OLD.changes)
       AND xrm_sys.jsonb_is_redaction_of(NEW.details, OLD.details) THEN
        RETURN NEW;
    END IF;
    IF TG_OP = 'DELETE' AND current_setting('xrm.audit_archive', true) = 'on' AND OLD.entity IS NOT NULL THEN
        SELECT (definition -> 'x-xrm' -> 'audit_retention' ->> 'days')::integer INTO keep_days
        FROM xrm_sys.entity WHERE name = OLD.entity AND removed_at IS NULL;
        IF keep_days IS NOT NULL AND OLD.at < now() - make_interval(days => keep_days) THEN
            RETURN OLD;
        END IF;
    END IF;
    RAISE EXCEPTION 'xrm_sys.audit_log is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;
CREATE OR REPLACE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON xrm_sys.audit_log
    FOR EACH ROW EXECUTE FUNCTION xrm_sys.audit_log_is_append_only();
CREATE OR REPLACE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON xrm_sys.audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION xrm_sys.audit_log_is_append_only();
