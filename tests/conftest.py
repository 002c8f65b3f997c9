"""Test fixtures: one embedded PostgreSQL per test session, a fresh database per test.

Each test gets its own database cloned from a template that already holds the
system schema (CREATE DATABASE ... TEMPLATE takes a few milliseconds), so tests
are isolated without re-running the bootstrap. With XRM_TEST_DATABASE_URL set,
an external server is used instead of the embedded one.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from xrm.db.database import Database, bootstrap_system_schema
from xrm.registry import Registry

TEMPLATE = "xrm_test_template"
_counter = itertools.count()


def _with_database(uri: str, database: str) -> str:
    if "?" in uri and uri.split("?")[0].rstrip("/").count("/") >= 3:
        base, query = uri.split("?", 1)
        return base.rsplit("/", 1)[0] + "/" + database + "?" + query
    base, _, query = uri.partition("?")
    return base.rsplit("/", 1)[0] + "/" + database + ("?" + query if query else "")


@pytest.fixture(scope="session")
def server_uri() -> Iterator[str]:
    external = os.environ.get("XRM_TEST_DATABASE_URL")
    if external:
        yield external
        return
    from xrm.db.embedded import embedded_database_uri

    with tempfile.TemporaryDirectory(prefix="xrm-test-pg-") as folder:
        uri = embedded_database_uri(Path(folder))
        asyncio.run(_create_template(uri))
        yield uri


async def _create_template(uri: str) -> None:
    connection = await asyncpg.connect(uri)
    try:
        await connection.execute(f"DROP DATABASE IF EXISTS {TEMPLATE}")
        await connection.execute(f"CREATE DATABASE {TEMPLATE}")
    finally:
        await connection.close()
    template = await asyncpg.connect(_with_database(uri, TEMPLATE))
    try:
        await bootstrap_system_schema(template)
    finally:
        await template.close()


@pytest.fixture
def database_uri(server_uri: str) -> Iterator[str]:
    """URI of a fresh database with the system schema, dropped after the test."""
    name = f"xrm_test_{os.getpid()}_{next(_counter)}"

    async def create() -> None:
        connection = await asyncpg.connect(server_uri)
        try:
            await connection.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
        finally:
            await connection.close()

    async def drop() -> None:
        connection = await asyncpg.connect(server_uri)
        try:
            await connection.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await connection.close()

    asyncio.run(create())
    yield _with_database(server_uri, name)
    asyncio.run(drop())


@pytest.fixture
async def db(database_uri: str) -> AsyncIterator[Database]:
    database = Database(database_uri)
    await database.open(min_size=1, max_size=4)
    yield database
    await database.close()


@pytest.fixture
async def registry(db: Database) -> Registry:
    return await Registry().load(db)


@pytest.fixture
def make_entities(db: Database):
    """`await make_entities(doc, ...)`: apply the definitions (one change); return a fresh Registry."""
    from xrm.schema.service import SchemaService

    async def make(*documents):
        await SchemaService(db).apply(list(documents))
        return await Registry().load(db)

    return make
