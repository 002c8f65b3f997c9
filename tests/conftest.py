"""Test fixtures: one embedded PostgreSQL per test session, a fresh database per test.

Each test gets its own database cloned from a template that already holds the
system schema (CREATE DATABASE ... TEMPLATE takes a few milliseconds), so tests
are isolated without re-running the bootstrap. With XRM_TEST_DATABASE_URL set,
an external server is used instead of the embedded one.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import re
import tempfile
from collections.abc import AsyncIterator, Iterator
from typing import Any
from html.parser import HTMLParser
from pathlib import Path

import asyncpg
import pytest

from xrm.db.database import Database, bootstrap_system_schema
from xrm.registry import Registry

ROOT = Path(__file__).resolve().parent.parent
# The assistant's index follower (xrm.assistant.plugin) would embed every record the
# tests create, in every app they start; the tests of the index turn it on themselves.
os.environ.setdefault("XRM_ASSISTANT_INDEX", "false")
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


@contextlib.contextmanager
def fresh_database(server_uri: str) -> Iterator[str]:
    """URI of a new database with the system schema, dropped (even if in use) on exit."""
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
    try:
        yield _with_database(server_uri, name)
    finally:
        asyncio.run(drop())


@pytest.fixture
def database_uri(server_uri: str) -> Iterator[str]:
    """URI of a fresh database with the system schema, dropped after the test."""
    with fresh_database(server_uri) as uri:
        yield uri


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


@contextlib.contextmanager
def live_server(database_uri: str, data_dir: Path) -> Iterator[str]:
    """The real app under uvicorn on a free loopback port (a thread); yields its base URL."""
    import socket
    import threading
    import time

    import uvicorn

    from xrm.app import create_app
    from xrm.settings import Settings

    settings = Settings(data_dir=data_dir, database_url=database_uri, schema_dir=ROOT / "entity_schemas", secret_key=None)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def create_token(database_uri: str, user: str, roles: list[str]) -> str:
    """A new user with these roles and an API token for it (straight through UserService)."""
    from xrm.auth import UserService

    async def make() -> str:
        database = Database(database_uri)
        await database.open(min_size=1, max_size=1)
        try:
            users = UserService(database)
            await users.create_user(user, "a-long-password", roles)
            token, _ = await users.create_token(user)
            return token
        finally:
            await database.close()

    return asyncio.run(make())


# -- the REST API in-process (Litestar's TestClient, lifespan included) ----------
@pytest.fixture
def api(database_uri: str, tmp_path: Path) -> Iterator[Any]:
    """The app on a fresh database with the shipped entity_schemas/ applied."""
    from litestar.testing import TestClient

    from xrm.app import create_app
    from xrm.settings import Settings

    settings = Settings(data_dir=tmp_path, database_url=database_uri, schema_dir=ROOT / "entity_schemas", secret_key=None)
    with TestClient(app=create_app(settings)) as client:
        yield client


def api_token(client: Any, name: str, roles: list[str]) -> str:
    """A new user with these roles and an API token for it, on the client's running app."""
    from xrm.auth import UserService

    users = UserService(client.app.state.platform.db)

    async def make() -> str:
        await users.create_user(name, "a-long-password", roles)
        token, _ = await users.create_token(name)
        return token

    return client.blocking_portal.call(make)  # type: ignore[no-any-return]


def bearer(client: Any, name: str, roles: list[str]) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_token(client, name, roles)}"}


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def problem(response: Any, status: int) -> dict[str, Any]:
    """The RFC 9457 body of an error response, after checking its status and shape."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status and body["title"] and body["detail"]
    return body  # type: ignore[no-any-return]


@pytest.fixture
def xrm_cli(database_uri: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """`xrm_cli("role", "list", code=0)`: run the CLI on the test database; returns its output."""
    from click.testing import CliRunner

    from xrm.cli import main

    monkeypatch.setenv("XRM_DATABASE_URL", database_uri)
    monkeypatch.setenv("XRM_SCHEMA_DIR", str(ROOT / "entity_schemas"))
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(main, list(args))
        assert result.exit_code == code, result.output
        return result.output

    return run


# -- web UI (tests/test_webui*.py) ----------------------------------------------
def make_user(client: Any, name: str, roles: list[str]) -> None:
    from xrm.auth import UserService

    users = UserService(client.app.state.platform.db)
    client.blocking_portal.call(users.create_user, name, "a-long-password", roles)


def log_in(client: Any, name: str) -> str:
    """Log in through the form; returns the session's CSRF token (from a page's hidden input)."""
    response = client.post("/login", data={"name": name, "password": "a-long-password", "next": "/"}, follow_redirects=False)
    assert response.status_code == 303, response.text
    return csrf(client.get("/").text)


def csrf(html: str) -> str:
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)  # type: ignore[union-attr]


@pytest.fixture
def ui(database_uri: str, tmp_path: Path) -> Iterator[Any]:
    """The app on a fresh database, reached over https (the session cookie is Secure off localhost)."""
    from xrm.app import create_app
    from xrm.settings import Settings

    settings = Settings(data_dir=tmp_path, database_url=database_uri, schema_dir=ROOT / "entity_schemas", secret_key=None)
    from litestar.testing import TestClient

    with TestClient(app=create_app(settings), base_url="https://testserver.local") as client:
        yield client


@pytest.fixture
def ui_admin(ui: Any) -> str:
    """An admin logged in to `ui`; the session's CSRF token."""
    make_user(ui, "admin", ["admin"])
    return log_in(ui, "admin")


# -- HTML forms as a browser submits them -------------------------------------------
class BrowserForm(HTMLParser):
    """The controls of one form (by id) as a browser submits them, buttons excepted."""

    def __init__(self, form_id: str) -> None:
        super().__init__()
        self.form_id, self.inside, self.fields = form_id, False, []
        self.textarea: list[str] | None = None
        self.select: dict[str, Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: (v or "") for k, v in attrs}
        if tag == "form":
            self.inside = a.get("id") == self.form_id
        if not self.inside or "disabled" in a:
            return
        if tag == "input" and a.get("name") and a.get("type", "text") not in ("submit", "button", "reset"):
            if a.get("type") not in ("checkbox", "radio") or "checked" in a:
                self.fields.append((a["name"], a.get("value", "on" if a.get("type") in ("checkbox", "radio") else "")))
        elif tag == "textarea":
            self.textarea = [a["name"], ""]
        elif tag == "select":
            self.select = {"name": a["name"], "first": None, "selected": None}
        elif tag == "option" and self.select is not None:
            self.select["first"] = self.select["first"] if self.select["first"] is not None else a.get("value", "")
            if "selected" in a:
                self.select["selected"] = a.get("value", "")

    def handle_data(self, data: str) -> None:
        if self.textarea is not None:
            self.textarea[1] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self.inside = False
        elif tag == "textarea" and self.textarea is not None:
            self.fields.append((self.textarea[0], self.textarea[1].removeprefix("\n")))
            self.textarea = None
        elif tag == "select" and self.select is not None:
            chosen = self.select["selected"] if self.select["selected"] is not None else self.select["first"]
            if chosen is not None:
                self.fields.append((self.select["name"], chosen))
            self.select = None


def form_controls(html: str, form_id: str) -> list[tuple[str, str]]:
    """(name, value) of every control of the form with this id, in order, as a browser would submit it."""
    parser = BrowserForm(form_id)
    parser.feed(html)
    return parser.fields  # type: ignore[no-any-return]
