"""One database handle: Piccolo's PostgresEngine for the pool and transactions.

Piccolo keeps the current transaction in a context variable, so a service call
that opens ``db.transaction()`` inside another one joins it: a record write,
its outbox event and a schema change can compose into one transaction. SQL for
admin-defined tables is built by our own code (see ``xrm.schema.ddl`` and
``xrm.records.sql``) on the transaction's asyncpg connection; Piccolo's ORM
cannot express generated columns or CHECK constraints, and its dynamic table
classes go stale after DDL (../STYLE.md, pitfalls 1-7).
"""

from __future__ import annotations

import dataclasses
import decimal
import json
import logging
import urllib.parse
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

import asyncpg
from piccolo.engine.postgres import PostgresEngine, PostgresTransaction

from ..errors import XrmError
from ..settings import Settings

__all__ = ["APP_ROLE", "AUDIT_OWNER_ROLE", "Database", "database_uri", "json_dumps"]

log = logging.getLogger(__name__)

APP_ROLE = "xrm_app"
"""The role the application runs as when it bootstraps as a superuser (the embedded default)."""
AUDIT_OWNER_ROLE = "xrm_audit_owner"
"""Owns the audit table and its trigger functions; NOLOGIN, so no connection can act as it."""


def _json_default(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return str(value)  # exact; a float would round
    if isinstance(value, uuid.UUID):
        return str(value)
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)  # e.g. a filter Condition in an audit entry
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def json_dumps(value: Any) -> str:
    return json.dumps(value, default=_json_default, ensure_ascii=False)


def _redacted(uri: str) -> str:
    """The URI without its password, for messages."""
    import re

    return re.sub(r"(://[^:/@]*):[^@]*@", r"\1:***@", uri)


def database_uri(settings: Settings) -> str:
    """The URI of the configured database, starting the embedded one if needed."""
    if settings.database_url:
        return settings.database_url
    from .embedded import embedded_database_uri

    return embedded_database_uri(settings.data_dir)


async def _init_connection(connection: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await connection.set_type_codec(
            type_name, encoder=json_dumps, decoder=json.loads, schema="pg_catalog"
        )


class Database:
    """The pool, transactions and the system schema of one PostgreSQL database."""

    def __init__(self, uri: str) -> None:
        self.admin_uri = uri
        """The configured URI: bootstrap (the system schema, roles, grants) connects with it."""
        self.uri = uri
        """What the pool and listeners connect with: the application role APP_ROLE once open() has
        secured the audit trail (see _runtime_uri), else the configured URI."""
        self.engine: PostgresEngine | None = None
        self.server_version: int = 0

    async def open(self, *, min_size: int = 1, max_size: int = 10, bootstrap: bool = True) -> Database:
        # Probe with one plain connection first, so an unreachable or unfit
        # server gets one clear message (Piccolo would only print a warning).
        try:
            probe = await asyncpg.connect(self.admin_uri)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            raise XrmError(f"Cannot connect to the database at {_redacted(self.uri)}: {error}") from None
        try:
            self.server_version = probe.get_server_version().major
            if self.server_version < 15:
                raise XrmError(f"xrm needs PostgreSQL 15 or newer; {_redacted(self.uri)} runs {self.server_version}")
            if bootstrap:
                try:
                    await bootstrap_system_schema(probe)
                except (asyncpg.UndefinedFileError, asyncpg.FeatureNotSupportedError) as error:
                    raise XrmError(
                        f"The pgvector extension is not available on this server ({error}); "
                        "use a PostgreSQL with pgvector, e.g. the pgvector/pgvector image"
                    ) from None
                self.uri = await _runtime_uri(probe, self.admin_uri)
        finally:
            await probe.close()
        # Created only now: Piccolo's engine connects once when constructed.
        self.engine = PostgresEngine(config={"dsn": self.uri})
        await self.engine.start_connection_pool(min_size=min_size, max_size=max_size, init=_init_connection)
        return self

    async def close(self) -> None:
        if self.engine is not None and self.engine.pool is not None:
            await self.engine.close_connection_pool()

    async def __aenter__(self) -> Database:
        return await self.open()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def transaction(self) -> PostgresTransaction:
        """``async with db.transaction() as tx``: tx.connection is asyncpg's.

        Joins the transaction already open in this task, if any.
        """
        assert self.engine is not None, "Database.open() was not awaited"
        return self.engine.transaction()

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """The current transaction's connection, or one from the pool."""
        assert self.engine is not None and self.engine.pool is not None, "Database.open() was not awaited"
        current = self.engine.current_transaction.get()
        if current is not None:
            yield current.connection
            return
        async with self.engine.pool.acquire() as connection:
            yield connection


async def _runtime_uri(probe: asyncpg.Connection, uri: str) -> str:
    """The URI the application should run with, after taking the audit trail out of its reach.

    The audit trail's triggers refuse UPDATE/DELETE/TRUNCATE, but the table's
    owner may disable them and a superuser may skip them (session_replication_role).
    So when xrm bootstraps as a superuser (the embedded database always does),
    the audit table and its trigger functions go to the NOLOGIN role
    AUDIT_OWNER_ROLE, and the pool runs as the plain role APP_ROLE: it owns the
    entity tables (schema changes) and may read and write the system tables,
    but on the audit table it may only SELECT, INSERT and the UPDATE/DELETE the
    triggers allow (redaction, retention). If APP_ROLE cannot log in (a server
    that wants passwords), or xrm does not bootstrap as a superuser, it keeps
    the configured role and says so: docs/audit.md tells how to set the roles
    up by hand on an external server.
    """
    superuser = await probe.fetchval("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
    if not superuser:
        owner = await probe.fetchval("SELECT tableowner FROM pg_tables WHERE schemaname = 'xrm_sys' AND tablename = 'audit_log'")
        if owner == await probe.fetchval("SELECT current_user"):
            log.warning(
                "xrm runs as the owner of xrm_sys.audit_log: the audit trail is append-only by trigger only "
                "(an owner may disable triggers); see docs/audit.md for separate roles"
            )
        return uri
    async with probe.transaction():
        await probe.execute("SELECT pg_advisory_xact_lock(7406001)")
        await probe.execute(_SECURE_AUDIT_TRAIL)
    runtime = _with_user(uri, APP_ROLE)
    try:
        check = await asyncpg.connect(runtime)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
        log.warning(
            "cannot connect as %s (%s): xrm runs as the superuser of %s, and a superuser can bypass the "
            "audit trail's triggers; see docs/audit.md", APP_ROLE, error, _redacted(uri)
        )
        return uri
    await check.close()
    return runtime


def _with_user(uri: str, user: str) -> str:
    """`uri` with `user` and no password (the embedded server trusts local connections)."""
    parts = urllib.parse.urlsplit(uri)
    host = parts.netloc.rsplit("@", 1)[-1] if "@" in parts.netloc else parts.netloc
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{urllib.parse.quote(user)}@{host}"))


# Idempotent (run at every start, as a superuser). Roles are per server, so two
# databases starting at once may race to create them: duplicate_object is fine.
_SECURE_AUDIT_TRAIL = f"""
DO $$ BEGIN
    CREATE ROLE {AUDIT_OWNER_ROLE} NOLOGIN;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;
DO $$ BEGIN
    CREATE ROLE {APP_ROLE} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;
ALTER TABLE xrm_sys.audit_log OWNER TO {AUDIT_OWNER_ROLE};
ALTER FUNCTION xrm_sys.audit_log_is_append_only() OWNER TO {AUDIT_OWNER_ROLE};
ALTER FUNCTION xrm_sys.jsonb_is_redaction_of(jsonb, jsonb) OWNER TO {AUDIT_OWNER_ROLE};
GRANT USAGE ON SCHEMA xrm_sys, xrm_archive, public TO {APP_ROLE};
GRANT CREATE ON SCHEMA public, xrm_archive TO {APP_ROLE};
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES ON ALL TABLES IN SCHEMA xrm_sys TO {APP_ROLE};
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA xrm_sys TO {APP_ROLE};
REVOKE ALL ON xrm_sys.audit_log FROM {APP_ROLE};
GRANT SELECT, INSERT, UPDATE, DELETE ON xrm_sys.audit_log TO {APP_ROLE};
REVOKE ALL ON xrm_sys.audit_log FROM PUBLIC;
DO $$ DECLARE sequence_name text := pg_get_serial_sequence('xrm_sys.audit_log', 'id');
BEGIN
    EXECUTE format('REVOKE UPDATE ON SEQUENCE %s FROM {APP_ROLE}', sequence_name);
END $$;
-- The assistant's index belongs to the application: it adds an HNSW index per entity (xrm.assistant.index).
GRANT USAGE, CREATE ON SCHEMA xrm_index TO {APP_ROLE};
ALTER TABLE xrm_index.record_embedding OWNER TO {APP_ROLE};
-- Entity tables (and archived ones) belong to the application, which changes their schema.
DO $$ DECLARE t record;
BEGIN
    FOR t IN SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname IN ('public', 'xrm_archive') AND c.relkind IN ('r', 'p', 'v', 'm')
               AND c.relowner <> (SELECT oid FROM pg_roles WHERE rolname = '{APP_ROLE}')
    LOOP
        EXECUTE format('ALTER TABLE %I.%I OWNER TO {APP_ROLE}', t.nspname, t.relname);
    END LOOP;
END $$;
"""


async def bootstrap_system_schema(connection: asyncpg.Connection) -> None:
    """Create the system schema (idempotent; serialised by an advisory lock)."""
    files = resources.files("xrm.db")
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock(7406001)")
        await connection.execute(files.joinpath("bootstrap.sql").read_text(encoding="utf-8"))
        if await connection.fetchval(
            "SELECT rolsuper OR pg_has_role(current_user, (SELECT tableowner FROM pg_tables "
            "WHERE schemaname = 'xrm_sys' AND tablename = 'audit_log'), 'USAGE') FROM pg_roles WHERE rolname = current_user"
        ):
            await connection.execute(files.joinpath("audit_trail.sql").read_text(encoding="utf-8"))
        if connection.get_server_version().major < 16:
            # pg_input_is_valid() arrived in PostgreSQL 16; emulate it on 15.
            await connection.execute(_INPUT_IS_VALID_FALLBACK)
        else:
            await connection.execute(_INPUT_IS_VALID_NATIVE)


_INPUT_IS_VALID_NATIVE = """
CREATE OR REPLACE FUNCTION xrm_sys.input_is_valid(value text, type_name text)
RETURNS boolean LANGUAGE sql STABLE AS $$ SELECT pg_input_is_valid(value, type_name) $$;
"""

_INPUT_IS_VALID_FALLBACK = """
CREATE OR REPLACE FUNCTION xrm_sys.input_is_valid(value text, type_name text)
RETURNS boolean LANGUAGE plpgsql STABLE AS $$
BEGIN
  EXECUTE format('SELECT %L::%s', value, type_name);
  RETURN true;
EXCEPTION WHEN others THEN
  RETURN false;
END $$;
"""
