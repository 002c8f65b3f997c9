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
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

import asyncpg
from piccolo.engine.postgres import PostgresEngine, PostgresTransaction

from ..errors import XrmError
from ..settings import Settings

__all__ = ["Database", "database_uri", "json_dumps"]


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
        self.uri = uri
        self.engine: PostgresEngine | None = None
        self.server_version: int = 0

    async def open(self, *, min_size: int = 1, max_size: int = 10, bootstrap: bool = True) -> Database:
        # Probe with one plain connection first, so an unreachable or unfit
        # server gets one clear message (Piccolo would only print a warning).
        try:
            probe = await asyncpg.connect(self.uri)
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


async def bootstrap_system_schema(connection: asyncpg.Connection) -> None:
    """Create the system schema (idempotent; serialised by an advisory lock)."""
    sql = resources.files("xrm.db").joinpath("bootstrap.sql").read_text(encoding="utf-8")
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock(7406001)")
        await connection.execute(sql)
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
