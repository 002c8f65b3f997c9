"""What a user of the web UI notices, against the real app and database: CSRF on every write, detail pages,
logout, form widgets for every field type, and record values that never become markup.

One app (module scope: start-up applies ~15 entities) with the shipped entities, the CRM pack and two probe
entities of this file: `widget_probe` has one field of each of the 15 field types (labels, help texts, some
required); `csrf_probe` has a many-to-many link, so that the link routes exist and can be reached.

- CSRF: every route handler of the Litestar app (web UI, /api, plugins' routes) with a method other than
  GET/HEAD/OPTIONS is found by walking `app.routes` (a route added later is walked too), its path parameters
  filled with ids of real objects (a 404 for a made-up id would hide a missing check), and sent with the
  admin's session cookie and no / a wrong / another session's CSRF token. Each must answer 403 "CSRF token
  missing or invalid" and change nothing: no audit row, and the same content in every table. Only the two
  logins are exempt, because docs/security.md and docs/api.md say why (they check Sec-Fetch-Site/Origin):
  for them a cross-site login is refused instead.
- Detail pages: related-record panels (contacts and deals of an account) and the reference back; Edit and
  Delete only for users who may, and the direct POSTs refused for the others.
- Logout through the UI's own logout form ends the session: the old cookie opens nothing any more.
- Forms: the widget, label, required marker and help text of every field type; a submitted form stores
  typed values (read back through RecordService).
- Escaping: HTML in record values is text on the list, detail, board, search results, history and lookup.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import itertools
import json
import re
import uuid
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import pytest

from conftest import ROOT, api_token, csrf, fresh_database

PASSWORD = "a-long-password"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
CSRF_REFUSAL = "CSRF token missing or invalid"
_COUNTER = itertools.count(1)

# Every field type once (tests/test_field_types.py, docs/entity-definitions.md), with labels and help texts.
WIDGET_PROBE = {
    "type": "object",
    "x-xrm": {"name": "widget_probe", "label": {"en": "Widget probe", "de": "Widget-Probe"}, "display_field": "title"},
    "required": ["title", "employees", "price", "status", "colours", "company"],
    "properties": {
        "title": {"type": "string", "maxLength": 40,
                  "x-xrm": {"label": {"en": "Title", "de": "Titel"}, "help": {"en": "What names the probe", "de": "Name der Probe"}}},
        "notes": {"x-xrm": {"type": "long_text", "label": {"en": "Notes", "de": "Notizen"}, "help": {"en": "Anything longer"}}},
        "employees": {"type": "integer", "minimum": 0, "x-xrm": {"label": {"en": "Employees", "de": "Mitarbeiter"}}},
        "rate": {"type": "number", "x-xrm": {"precision": 6, "scale": 2, "label": {"en": "Rate", "de": "Satz"},
                                             "help": {"en": "Two decimals"}}},
        "price": {"x-xrm": {"type": "currency", "currencies": ["EUR", "USD", "CHF"], "label": {"en": "Price", "de": "Preis"}}},
        "active": {"type": "boolean", "x-xrm": {"label": {"en": "Active", "de": "Aktiv"}, "help": {"en": "Still in use"}}},
        "founded": {"type": "string", "format": "date", "x-xrm": {"label": {"en": "Founded", "de": "Gegründet"}}},
        "last_contact": {"type": "string", "format": "date-time", "x-xrm": {"label": {"en": "Last contact", "de": "Letzter Kontakt"}}},
        "status": {"type": "string", "enum": ["lead", "customer", "lost"],
                   "x-xrm": {"label": {"en": "Status", "de": "Status"}, "help": {"en": "Where it stands"},
                             "option_labels": {"lead": {"en": "Lead"}, "customer": {"en": "Customer"}, "lost": {"en": "Lost"}}}},
        "colours": {"type": "array", "items": {"enum": ["red", "green", "blue"]},
                    "x-xrm": {"label": {"en": "Colours", "de": "Farben"}, "help": {"en": "Pick any"},
                              "option_labels": {"red": {"en": "Red"}, "green": {"en": "Green"}, "blue": {"en": "Blue"}}}},
        "email": {"type": "string", "format": "email", "x-xrm": {"label": {"en": "E-mail", "de": "E-Mail"}}},
        "phone": {"x-xrm": {"type": "phone", "label": {"en": "Phone", "de": "Telefon"}}},
        "website": {"type": "string", "format": "uri", "x-xrm": {"label": {"en": "Website", "de": "Webseite"}}},
        "company": {"x-xrm": {"type": "reference", "references": "account", "label": {"en": "Company", "de": "Firma"},
                              "help": {"en": "Type to find the account"}}},
        "extra": {"type": "object", "x-xrm": {"label": {"en": "Extra data", "de": "Zusatzdaten"}}},
    },
}

# A many-to-many link, so the link routes (/r/.../links/{link}, /api/v1/.../links/{link}, _links) can be reached.
CSRF_PROBE = {
    "type": "object",
    "x-xrm": {
        "name": "csrf_probe", "label": {"en": "CSRF probe"}, "display_field": "name",
        "links": [{"name": "members", "target": "contact", "label": {"en": "Members"}, "inverse_name": "csrf_probes",
                   "inverse_label": {"en": "CSRF probes"}, "attributes": {"role": {"type": "string", "enum": ["lead", "member"]}},
                   "required": ["role"]}],
    },
    "required": ["name"],
    "properties": {"name": {"type": "string", "maxLength": 100}},
}


# -- the app ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def app(server_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from litestar.testing import TestClient

    from xrm.app import create_app
    from xrm.settings import Settings

    folder = tmp_path_factory.mktemp("webui-coverage")
    schemas = folder / "schemas"
    schemas.mkdir()
    for source in (ROOT / "entity_schemas").glob("*.json"):
        (schemas / source.name).write_text(source.read_text())
    (schemas / "widget_probe.json").write_text(json.dumps(WIDGET_PROBE))
    (schemas / "csrf_probe.json").write_text(json.dumps(CSRF_PROBE))
    with fresh_database(server_uri) as uri:
        # No in-process job worker: nothing may change the database in the background while a test compares it.
        settings = Settings(data_dir=folder, database_url=uri, schema_dir=schemas, secret_key=None, worker=False)
        with TestClient(app=create_app(settings), base_url="https://testserver.local") as client:
            yield client


class Site:
    """Helpers on the module's app: SQL, API calls as the admin (bearer token), users, UI logins."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.token = api_token(client, "admin", ["admin"])
        self.auth = {"Authorization": f"Bearer {self.token}"}
        for name, roles in (("bea", ["sales"]),):
            self.user(name, roles)

    @staticmethod
    def n() -> int:
        return next(_COUNTER)

    def sql(self, query: str, *args: Any) -> list[Any]:
        async def run() -> list[Any]:
            async with self.client.app.state.platform.db.connection() as connection:
                return list(await connection.fetch(query, *args))

        return self.client.blocking_portal.call(run)  # type: ignore[no-any-return]

    def sql_val(self, query: str, *args: Any) -> Any:
        rows = self.sql(query, *args)
        return rows[0][0] if rows else None

    def audit_mark(self) -> int:
        return int(self.sql_val("SELECT coalesce(max(id), 0) FROM xrm_sys.audit_log"))

    def audit_since(self, mark: int) -> list[str]:
        return [f"{r['action']} {r['entity'] or ''}".strip()
                for r in self.sql("SELECT action, entity FROM xrm_sys.audit_log WHERE id > $1 ORDER BY id", mark)]

    def api(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        """A preparing request as the admin, by token (never the cookie)."""
        response = self.client.request(method, path, headers={**self.auth, **kwargs.pop("headers", {})}, follow_redirects=False,
                                       **kwargs)
        assert response.status_code == status, f"{method} {path}: {response.status_code} {response.text[:500]}"
        return response.json() if "json" in response.headers.get("content-type", "") else None

    def create(self, entity: str, **values: Any) -> dict[str, Any]:
        return self.api("POST", f"/api/v1/{entity}", 201, json=values)  # type: ignore[no-any-return]

    def user(self, name: str, roles: list[str]) -> None:
        from xrm.auth import UserService

        if not self.sql_val("SELECT count(*) FROM xrm_sys.app_user WHERE name = $1", name):
            self.client.blocking_portal.call(UserService(self.client.app.state.platform.db).create_user, name, PASSWORD, roles)

    def role(self, name: str, grants: list[tuple[str, str]], scope: dict[tuple[str, str], str] | None = None) -> str:
        """A role with these (entity, action) grants, scope all unless `scope` says otherwise."""
        security = self.client.app.state.platform.security()
        if not self.sql_val("SELECT count(*) FROM xrm_sys.role WHERE name = $1", name):
            self.client.blocking_portal.call(security.create_role, name)
            for entity, action in grants:
                self.client.blocking_portal.call(security.grant, name, entity, action, (scope or {}).get((entity, action), "all"))
        return name

    def log_in(self, name: str) -> str:
        """A fresh UI session of `name` in the client's cookie jar; its CSRF token (from the page's hidden input)."""
        self.client.cookies.clear()
        response = self.client.post("/login", data={"name": name, "password": PASSWORD, "next": "/"}, follow_redirects=False)
        assert response.status_code == 303, response.text
        return csrf(self.client.get("/").text)

    def page(self, path: str, status: int = 200) -> str:
        response = self.client.get(path, follow_redirects=False)
        assert response.status_code == status, f"GET {path}: {response.status_code} {response.text[:500]}"
        return response.text  # type: ignore[no-any-return]

    def post_form(self, path: str, data: Any, token: str) -> Any:
        body = list(data.items()) if isinstance(data, dict) else list(data)
        return self.client.post(path, data=form_data(body + [("csrf_token", token)]), follow_redirects=False)

    def record(self, entity: str, record_id: Any) -> dict[str, Any] | None:
        """The stored record as RecordService returns it (typed values), deleted ones too; None if absent."""
        from xrm.records.principal import SYSTEM_PRINCIPAL
        from xrm.records.service import RecordService

        platform = self.client.app.state.platform
        service = RecordService(platform.db, platform.registry, entity, SYSTEM_PRINCIPAL)
        found = self.client.blocking_portal.call(lambda: service.list(where=[("id", "eq", str(record_id))], include_deleted=True, limit=1))
        return found.records[0] if found.records else None


@pytest.fixture(scope="module")
def site(app: Any) -> Site:
    return Site(app)


# -- a small HTML tree (the standard library's parser) -----------------------------------------------------
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class Node:
    def __init__(self, tag: str, attrs: dict[str, str], parent: Node | None) -> None:
        self.tag, self.attrs, self.parent = tag, attrs, parent
        self.children: list[Node | str] = []

    def iter(self) -> Iterator[Node]:
        yield self
        for child in self.children:
            if isinstance(child, Node):
                yield from child.iter()

    def find_all(self, tag: str | None = None, **attrs: str) -> list[Node]:
        return [n for n in self.iter() if (tag is None or n.tag == tag)
                and all(n.attrs.get(k.rstrip("_").replace("_", "-")) == v for k, v in attrs.items())]

    def find(self, tag: str | None = None, **attrs: str) -> Node | None:
        found = self.find_all(tag, **attrs)
        return found[0] if found else None

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def words(self) -> str:
        return " ".join(self.text().split())

    def __repr__(self) -> str:
        return f"<{self.tag} {self.attrs}>"


class _Tree(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("#document", {}, None)
        self.current = self.root

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: (v if v is not None else "") for k, v in attrs}, self.current)
        self.current.children.append(node)
        if tag not in VOID:
            self.current = node

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.current.children.append(Node(tag, {k: (v if v is not None else "") for k, v in attrs}, self.current))

    def handle_endtag(self, tag: str) -> None:
        node: Node | None = self.current
        while node is not None and node.tag != tag:
            node = node.parent
        if node is not None and node.parent is not None:
            self.current = node.parent

    def handle_data(self, data: str) -> None:
        self.current.children.append(data)


def form_data(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """Form pairs as httpx wants them (a repeated name: a list)."""
    data: dict[str, Any] = {}
    for key, value in pairs:
        data.setdefault(key, []).append(value)
    return {k: v[0] if len(v) == 1 else v for k, v in data.items()}


def tree(html: str) -> Node:
    parser = _Tree()
    parser.feed(html)
    parser.close()
    return parser.root


# == 1. CSRF on every state-changing route ===================================================================
# The logins are the only write routes without the CSRF token, because there is no session (token) yet; the docs
# say what protects them instead. Each entry: where the docs say it (file, a sentence the file must contain).
LOGIN_ROUTES: dict[tuple[str, str], list[tuple[str, str]]] = {
    ("POST", "/login"): [
        ("docs/security.md", "**Login CSRF** (another site logging the victim in as the attacker): the\n  login is refused (`403`)"),
        ("docs/security.md", "`Sec-Fetch-Site` other than `same-origin`/`none`, or, from\n  browsers without it, an `Origin` "
                             "whose host is not the request's `Host`"),
    ],
    ("POST", "/api/v1/auth/login"): [
        ("docs/api.md", "A login a browser sends from another site (`Sec-Fetch-Site`, or `Origin`\n  not matching `Host`) is `403`."),
        ("docs/security.md", "**Login CSRF** (another site logging the victim in as the attacker): the\n  login is refused (`403`)"),
    ],
}

_PARAMETER = re.compile(r"^\{(\w+)(?::\w+)?\}$")


def write_routes(client: Any) -> list[tuple[str, str]]:
    """(method, path template) of every route handler of the app that may change something."""
    found = set()
    for route in client.app.routes:
        for handler in getattr(route, "route_handlers", []):
            for method in set(getattr(handler, "http_methods", ())) - SAFE_METHODS:
                found.add((method, route.path))
    return sorted(found, key=lambda item: (item[1], item[0]))


class Objects:
    """Real objects for every kind of path parameter: each write route is reached with ids that exist."""

    def __init__(self, site: Site, admin_csrf: str) -> None:
        s = self.site = site
        n = s.n()
        self.account = s.create("account", name=f"CSRF target {n} AG", city="Kept")
        self.contact = s.create("contact", full_name=f"CSRF contact {n}", account=self.account["id"])
        self.records = {
            "account": self.account,
            "contact": self.contact,
            "deal": s.create("deal", title=f"CSRF deal {n}", stage="prospecting", account=self.account["id"]),
            "lead": s.create("lead", name=f"CSRF lead {n}", company=f"CSRF lead {n} GmbH", status="new"),
            "campaign": s.create("campaign", name=f"CSRF campaign {n}", status="planned"),
            "ticket": s.create("ticket", subject=f"CSRF ticket {n}", priority="normal", status="new"),
            "csrf_probe": s.create("csrf_probe", name=f"CSRF probe {n}"),
        }
        probe = self.records["csrf_probe"]["id"]
        self.link_id = s.api("POST", f"/api/v1/csrf_probe/{probe}/links/members", 201,
                             json={"target": self.contact["id"], "attributes": {"role": "member"}})["id"]
        self.connection_role = f"csrf_peer_{n}"
        s.api("POST", "/api/v1/_connection_roles", 201, json={"name": self.connection_role, "label": {"en": "peer of"}})
        self.connection_id = s.api("POST", f"/api/v1/account/{self.account['id']}/connections", 201,
                                   json={"role": self.connection_role, "other_entity": "contact", "other_id": self.contact["id"]})["id"]
        self.role = f"csrf_role_{n}"
        s.api("POST", "/api/v1/admin/roles", 201, json={"name": self.role})
        self.team = f"CSRF team {n}"
        s.api("POST", "/api/v1/admin/teams", 201, json={"name": self.team})
        self.automation = f"csrf_auto_{n}"
        s.api("POST", "/api/v1/admin/automations", 201, json={
            "name": self.automation, "entity": "account", "trigger": {"on": "created"}, "run_as": "bea", "enabled": False,
            "actions": [{"type": "set_fields", "values": {"city": "Forged"}}]})
        self.dead_job = int(s.sql_val(
            "INSERT INTO xrm_sys.job (kind, idempotency_key, state, last_error, finished_at) "
            "VALUES ('csrf_probe', $1, 'dead', 'csrf coverage test', now()) RETURNING id", f"csrf-coverage-{uuid.uuid4()}"))
        admin_id = s.sql_val("SELECT id FROM xrm_sys.app_user WHERE name = 'admin'")
        self.view_id = s.sql_val("INSERT INTO xrm_sys.saved_view (entity, name, query, owner_id, shared) "
                                 "VALUES ('account', $1, 'q=kept', $2, true) RETURNING id", f"CSRF view {n}", admin_id)
        # Step 1 of the import wizard (with the right token): a real job id for /check and /run.
        upload = s.client.post("/e/account/import", data={"csrf_token": admin_csrf}, follow_redirects=False,
                               files={"file": ("csrf.csv", b"name\nForged import AG\n", "text/csv")})
        assert upload.status_code == 303, upload.text[:500]
        self.import_job = upload.headers["location"].rstrip("/").split("/")[-1]

    @staticmethod
    def entity_of(template: str) -> str:
        """The entity a route with {entity} is meant for (plugin routes act on certain entities only)."""
        if template.endswith("/convert"):
            return "lead"
        if template.endswith("/refresh-members"):
            return "campaign"
        if "/transitions/" in template:
            return "ticket"
        if "/links/" in template or "/_links/" in template:
            return "csrf_probe"
        if template.endswith("/move"):
            return "deal"
        return "account"

    def value(self, template: str, name: str, before: str) -> str | None:
        entity = self.entity_of(template)
        fillers: dict[str, Any] = {
            "entity": entity,
            "record_id": self.records[entity]["id"],
            "link": "members",
            "view_id": self.view_id,
            "role": self.role,
            "user": "bea",
            "team": self.team,
        }
        if name == "link_id":
            return self.connection_id if before == "connections" else self.link_id
        if name == "job_id":
            return str(self.dead_job) if before == "jobs" else self.import_job
        if name == "name":
            return {"transitions": "open", "connection-roles": self.connection_role, "_connection_roles": self.connection_role,
                    "automations": self.automation}.get(before)
        found = fillers.get(name)
        return None if found is None else str(found)

    def path(self, template: str) -> str:
        parts, before = [], ""
        for part in template.split("/"):
            match = _PARAMETER.match(part)
            if match:
                value = self.value(template, match.group(1), before)
                if value is None:
                    raise LookupError(f"no real value for the path parameter {part} of {template}: add one to Objects.value")
                parts.append(value)
            else:
                parts.append(part)
                before = part
        return "/".join(parts)

    def form(self) -> list[tuple[str, str]]:
        """A form that would change something on most UI write routes if the token were not checked."""
        a = self.account
        return [("name", "Forged"), ("title", "Forged"), ("full_name", "Forged"), ("version", str(a["version"])), ("label", "Forged"),
                ("field", "stage"), ("value", "won"), ("action", "delete"), ("ids", a["id"]), ("back", ""), ("user", "bea"),
                ("role", self.role), ("team", self.team), ("parent", self.team), ("language", "de"), ("next", "/"),
                ("target", self.contact["id"]), ("attr__role", "lead"), ("choice", f"{self.connection_role}|forward|contact"),
                ("other_id", self.contact["id"]), ("query", "q=forged"), ("shared", "on"), ("map.0", "name"),
                ("label_en", "forged"), ("description", "forged"), ("grant.account.read", "own"), ("job", str(self.dead_job)),
                ("enabled", "true"), ("password", PASSWORD), ("roles", "admin"), ("entity", "account"), ("trigger", '{"on": "created"}'),
                ("run_as", "bea"), ("actions", "[]"), ("condition", "[]"), ("token_id", str(uuid.uuid4()))]

    def body(self) -> dict[str, Any]:
        """A JSON body that would change something on many API write routes if the token were not checked."""
        return {"name": f"Forged {self.site.n()}", "title": "Forged", "user": "bea", "role": self.connection_role,
                "other_entity": "contact", "other_id": self.contact["id"], "target": self.contact["id"],
                "attributes": {"role": "lead"}, "entity": "account", "action": "read", "scope": "all", "disabled": True,
                "records": [{"name": f"Forged bulk {self.site.n()}"}], "record_id": self.contact["id"],
                "password": PASSWORD, "roles": ["admin"], "label": {"en": "forged"}}


def fingerprint(site: Site) -> dict[str, str]:
    """A hash of every table's content (records, users, roles, grants, sessions, jobs, ...), to compare before and after."""
    tables = site.sql("SELECT table_schema, table_name FROM information_schema.tables "
                      "WHERE table_schema IN ('public', 'xrm_sys') AND table_type = 'BASE TABLE' ORDER BY 1, 2")
    parts = []
    for row in tables:
        name = f'"{row["table_schema"]}"."{row["table_name"]}"'
        if row["table_name"] == "web_session":  # last_seen_at follows use; what matters is which sessions exist and live
            parts.append(f"SELECT '{name}', md5(coalesce(string_agg(encode(id, 'hex') || ':' || coalesce(revoked_at::text, ''), ',' "
                         f"ORDER BY id), '')) FROM {name}")
        else:
            parts.append(f"SELECT '{name}', md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM {name} t")
    return {r[0]: r[1] for r in site.sql(" UNION ALL ".join(parts))}


def test_every_state_changing_route_refuses_a_cookie_request_without_the_right_csrf_token(app: Any, site: Site) -> None:
    from xrm.sessions import SessionService, csrf_token_for

    token = site.log_in("admin")
    objects = Objects(site, token)
    # A valid CSRF token of another live session of the same admin: it must not fit this session.
    platform = app.app.state.platform
    admin_id = site.sql_val("SELECT id FROM xrm_sys.app_user WHERE name = 'admin'")
    other_session, _ = app.blocking_portal.call(SessionService(platform.db, platform.settings).create, admin_id, "other tab")
    other_token = csrf_token_for(other_session)
    wrong = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")

    routes = write_routes(app)
    assert set(LOGIN_ROUTES) <= set(routes), "a login route listed as exempt no longer exists: update LOGIN_ROUTES"
    for (method, path), sources in LOGIN_ROUTES.items():
        for file, sentence in sources:
            text = " ".join((ROOT / file).read_text().split())
            assert " ".join(sentence.split()) in text, f"{method} {path} is exempt from the CSRF token only because {file} says why"

    def session_alive() -> bool:
        cookie = app.cookies.get("xrm_session") or ""
        return bool(site.sql_val("SELECT count(*) FROM xrm_sys.web_session WHERE id = $1 AND revoked_at IS NULL",
                                 hashlib.sha256(cookie.encode()).digest()))

    assert session_alive()
    before = fingerprint(site)
    problems, checked = [], []
    for method, template in routes:
        if (method, template) in LOGIN_ROUTES:
            continue
        try:
            path = objects.path(template)
        except LookupError as error:
            problems.append(str(error))
            continue
        is_api = template.startswith("/api/")
        variants: list[tuple[str, dict[str, Any]]] = []
        if is_api:  # an API client sends JSON and the token as a header
            body = objects.body()
            variants += [("no token", {"json": body}),
                         ("wrong token", {"json": body, "headers": {"X-CSRF-Token": wrong}}),
                         ("another session's token", {"json": body, "headers": {"X-CSRF-Token": other_token}}),
                         ("wrong token in a form", {"data": {"csrf_token": wrong, "name": "Forged"}})]
        else:  # the UI: forms carry the token as a field, htmx as a header
            form = objects.form()
            variants += [("no token", {"data": form_data(form)}),
                         ("wrong token", {"data": form_data(form + [("csrf_token", wrong)])}),
                         ("another session's token", {"data": form_data(form + [("csrf_token", other_token)])}),
                         ("wrong token as htmx header", {"data": form_data(form), "headers": {"X-CSRF-Token": wrong, "HX-Request": "true"}})]
        for label, kwargs in variants:
            mark = site.audit_mark()
            response = app.request(method, path, follow_redirects=False, **kwargs)
            written = site.audit_since(mark)
            where = f"{method} {template} ({path}) with {label}"
            if response.status_code != 403 or CSRF_REFUSAL not in response.text:
                problems.append(f"{where}: answered {response.status_code}, not the 403 {CSRF_REFUSAL!r}: {response.text[:200]!r}")
            if written:
                problems.append(f"{where}: wrote audit rows {written}")
            if "xrm_session=" in response.headers.get("set-cookie", ""):
                problems.append(f"{where}: changed the session cookie ({response.headers['set-cookie'][:80]})")
            if not session_alive():
                problems.append(f"{where}: ended the session")
                token = site.log_in("admin")  # go on with a new one, so the rest of the walk still means something
        checked.append(f"{method} {template}")

    after = fingerprint(site)
    changed = sorted(table for table in before.keys() | after.keys() if before.get(table) != after.get(table))
    if changed:
        problems.append(f"refused requests changed the content of {changed}")
    print(f"\nCSRF: {len(routes)} write routes, {len(checked)} walked ({len(LOGIN_ROUTES)} logins exempt), {len(problems)} problems")
    assert len(checked) > 80 and any(c.startswith("POST /r/") for c in checked) and any("/transitions/" in c for c in checked)
    assert not problems, f"{len(problems)} CSRF problem(s):\n" + "\n".join(problems)
    # The admin's session survived every forged logout / logout-all / user change, and still works with the right token.
    assert site.client.get("/", follow_redirects=False).status_code == 200, "a refused request ended the session"
    me = app.get("/api/v1/auth/me")
    assert me.status_code == 200 and me.json()["auth"] == "session" and me.json()["csrf_token"] == token
    # The walk was on objects that exist: with the right token one of the same requests works.
    ok = site.post_form(f"/e/account/{objects.account['id']}/edit", {"name": objects.account["name"], "city": "Changed",
                                                                     "version": str(objects.account["version"])}, token)
    assert ok.status_code == 303, ok.text[:500]
    assert site.record("account", objects.account["id"])["city"] == "Changed"


@pytest.mark.parametrize("route", sorted(LOGIN_ROUTES), ids=lambda r: r[1])
def test_a_login_from_another_site_is_refused(app: Any, site: Site, route: tuple[str, str]) -> None:
    _, path = route
    site.user("lotte", ["sales"])

    def attempt(headers: dict[str, str]) -> Any:
        app.cookies.clear()
        if path == "/login":
            return app.post(path, data={"name": "lotte", "password": PASSWORD, "next": "/"}, headers=headers, follow_redirects=False)
        return app.post(path, json={"name": "lotte", "password": PASSWORD}, headers=headers)

    sessions = "SELECT count(*) FROM xrm_sys.web_session s JOIN xrm_sys.app_user u ON u.id = s.user_id WHERE u.name = 'lotte'"
    for headers in ({"Origin": "https://evil.example"}, {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                    {"Origin": "https://testserver.local.evil.example"}, {"Origin": "null"},
                    {"Sec-Fetch-Site": "cross-site", "Origin": "https://testserver.local"}):
        count, mark = site.sql_val(sessions), site.audit_mark()
        response = attempt(headers)
        assert response.status_code == 403, (headers, response.status_code, response.text[:300])
        assert "xrm_session=" not in response.headers.get("set-cookie", ""), headers
        assert site.sql_val(sessions) == count, f"{headers}: a refused login created a session"
        assert site.audit_since(mark) == [], headers
    # The same login from the site itself (or from no browser at all) works.
    for headers in ({"Origin": "https://testserver.local"}, {"Sec-Fetch-Site": "same-origin"}, {}):
        response = attempt(headers)
        assert response.status_code == (303 if path == "/login" else 200), (headers, response.text[:300])
        assert "xrm_session=" in response.headers.get("set-cookie", "")
    app.cookies.clear()


# == 2. Detail pages: related records both ways, buttons by permission =======================================
def _related_panels(doc: Node) -> dict[str, Node]:
    """The related-record panels of a detail page by their heading (without the count badge)."""
    panels = {}
    for section in doc.find_all("section", class_="related"):
        heading = section.find("h2")
        assert heading is not None
        panels[" ".join(c for c in heading.children if isinstance(c, str)).strip()] = section
    return panels


def _links(node: Node) -> set[tuple[str, str]]:
    return {(a.attrs.get("href", ""), a.words()) for a in node.find_all("a")}


def _toolbar(doc: Node, entity: str, record_id: str) -> dict[str, bool]:
    """Which record buttons the page offers: Edit (a link), Delete and Restore (forms that post)."""
    toolbar = doc.find("div", class_="toolbar")
    assert toolbar is not None
    forms = {f.attrs.get("action"): f.words() for f in toolbar.find_all("form") if f.attrs.get("method") == "post"}
    base = f"/e/{entity}/{record_id}"
    return {
        "edit": (f"{base}/edit", "Edit") in _links(toolbar),
        "delete": forms.get(f"{base}/delete") == "Delete",
        "restore": forms.get(f"{base}/restore") == "Restore",
    }


def test_a_detail_page_shows_the_records_that_reference_it_and_the_ones_it_references(app: Any, site: Site) -> None:
    n = site.n()
    account = site.create("account", name=f"Nordwind {n} AG")
    other = site.create("account", name=f"Suedwind {n} AG")
    child = site.create("account", name=f"Nordwind {n} Tochter", parent_account=account["id"])
    ada = site.create("contact", full_name=f"Ada {n}", account=account["id"])
    bob = site.create("contact", full_name=f"Bob {n}", account=account["id"])
    site.create("contact", full_name=f"Zed {n}", account=other["id"])
    deal = site.create("deal", title=f"Rollout {n}", stage="prospecting", account=account["id"], contact=ada["id"])
    site.log_in("admin")

    doc = tree(site.page(f"/e/account/{account['id']}"))
    panels = _related_panels(doc)
    assert set(panels) == {"Contacts (Account)", "Deals (Account)", "Accounts (Parent account)"}, panels
    contacts = panels["Contacts (Account)"]
    assert contacts.find("small", class_="badge").words() == "2"
    listed = {link for link in _links(contacts) if link[0].startswith("/e/contact/") and not link[0].startswith("/e/contact/new")}
    assert listed == {(f"/e/contact/{ada['id']}", f"Ada {n}"), (f"/e/contact/{bob['id']}", f"Bob {n}")}  # not Zed of another account
    assert (f"/e/contact?account={account['id']}", "Show all") in _links(contacts)
    assert (f"/e/contact/new?account={account['id']}", "Add") in _links(contacts)
    assert (f"/e/deal/{deal['id']}", f"Rollout {n}") in _links(panels["Deals (Account)"])
    assert (f"/e/account/{child['id']}", f"Nordwind {n} Tochter") in _links(panels["Accounts (Parent account)"])
    assert f"Zed {n}" not in doc.words() and f"Suedwind {n}" not in doc.words()

    # "Show all" is the list filtered on the reference; "Add" is a new contact with the account filled in.
    shown = tree(site.page(f"/e/contact?account={account['id']}")).words()
    assert f"Ada {n}" in shown and f"Bob {n}" in shown and f"Zed {n}" not in shown
    new = tree(site.page(f"/e/contact/new?account={account['id']}"))
    assert new.find("input", type="hidden", name="account").attrs["value"] == account["id"]
    assert new.find("input", id="field-account").attrs["value"] == f"Nordwind {n} AG"

    # The other direction: a reference is a link to the record it names.
    def field_value(doc: Node, label: str) -> Node:
        for dt_node in doc.find_all("dt"):
            if dt_node.words() == label:
                siblings = [c for c in dt_node.parent.children if isinstance(c, Node)]
                return siblings[siblings.index(dt_node) + 1]
        raise AssertionError(f"no field {label!r} on the page")

    contact_page = tree(site.page(f"/e/contact/{ada['id']}"))
    assert _links(field_value(contact_page, "Account")) == {(f"/e/account/{account['id']}", f"Nordwind {n} AG")}
    assert _related_panels(contact_page).keys() == {"Deals (Contact)"}
    deal_page = tree(site.page(f"/e/deal/{deal['id']}"))
    assert _links(field_value(deal_page, "Account")) == {(f"/e/account/{account['id']}", f"Nordwind {n} AG")}
    assert _links(field_value(deal_page, "Contact")) == {(f"/e/contact/{ada['id']}", f"Ada {n}")}
    child_page = tree(site.page(f"/e/account/{child['id']}"))
    assert _links(field_value(child_page, "Parent account")) == {(f"/e/account/{account['id']}", f"Nordwind {n} AG")}


def test_edit_and_delete_appear_only_for_users_who_may_and_the_direct_posts_are_refused_for_the_others(app: Any, site: Site) -> None:
    readable = [("account", "read"), ("contact", "read"), ("deal", "read")]
    site.user("rita", [site.role("ui_viewer", readable)])
    site.user("eddi", [site.role("ui_editor", [*readable, ("account", "update")])])
    n = site.n()
    account = site.create("account", name=f"Buttons {n} AG", city="Before")
    site.create("contact", full_name=f"Carla {n}", account=account["id"])
    gone = site.create("account", name=f"Deleted {n} AG")
    site.api("DELETE", f"/api/v1/account/{gone['id']}")
    key = account["id"]

    site.log_in("admin")
    assert _toolbar(tree(site.page(f"/e/account/{key}")), "account", key) == {"edit": True, "delete": True, "restore": False}
    assert _toolbar(tree(site.page(f"/e/account/{gone['id']}")), "account", gone["id"]) == {"edit": False, "delete": False, "restore": True}

    def refused(token: str, path: str, data: dict[str, str]) -> None:
        mark, before = site.audit_mark(), site.record("account", path.split("/")[3])
        response = site.post_form(path, data, token)
        assert response.status_code == 403, (path, response.status_code, response.text[:300])
        assert "Not allowed" in response.text
        assert site.audit_since(mark) == [] and site.record("account", path.split("/")[3]) == before, f"{path} changed something"

    # A user who may update but not delete: Edit, no Delete; the delete POST is refused.
    token = site.log_in("eddi")
    doc = tree(site.page(f"/e/account/{key}"))
    assert _toolbar(doc, "account", key) == {"edit": True, "delete": False, "restore": False}
    assert "Add" not in {text for _, text in _links(_related_panels(doc)["Contacts (Account)"])}  # may not create contacts
    refused(token, f"/e/account/{key}/delete", {})
    edited = site.post_form(f"/e/account/{key}/edit", {"name": account["name"], "city": "By Eddi", "version": str(account["version"])}, token)
    assert edited.status_code == 303 and site.record("account", key)["city"] == "By Eddi"

    # A user who may update and delete their own accounts only: the buttons on theirs, not on someone else's.
    own = {("account", "update"): "own", ("account", "delete"): "own"}
    site.user("oona", [site.role("ui_owner", [*readable, ("account", "create"), ("account", "update"), ("account", "delete")], own)])
    token = site.log_in("oona")
    created = site.post_form("/e/account/new", {"name": f"Oona's {n} AG"}, token)
    assert created.status_code == 303, created.text[:500]
    mine = created.headers["location"].rsplit("/", 1)[-1]
    assert _toolbar(tree(site.page(f"/e/account/{mine}")), "account", mine) == {"edit": True, "delete": True, "restore": False}
    assert _toolbar(tree(site.page(f"/e/account/{key}")), "account", key) == {"edit": False, "delete": False, "restore": False}
    site.page(f"/e/account/{key}/edit", 403)
    refused(token, f"/e/account/{key}/edit", {"name": "Taken over", "version": str(site.record("account", key)["version"])})
    refused(token, f"/e/account/{key}/delete", {})

    # A read-only user: neither button, no "Add", the edit form and every direct POST refused.
    token = site.log_in("rita")
    doc = tree(site.page(f"/e/account/{key}"))
    assert _toolbar(doc, "account", key) == {"edit": False, "delete": False, "restore": False}
    assert f"Carla {n}" in _related_panels(doc)["Contacts (Account)"].words()
    assert "Add" not in {text for _, text in _links(_related_panels(doc)["Contacts (Account)"])}
    site.page(f"/e/account/{key}/edit", 403)
    version = str(site.record("account", key)["version"])
    refused(token, f"/e/account/{key}/edit", {"name": "Hijacked", "city": "By Rita", "version": version})
    refused(token, f"/e/account/{key}/delete", {})
    refused(token, f"/e/account/{gone['id']}/restore", {})
    assert site.record("account", gone["id"])["deleted_at"] is not None
    assert site.post_form("/e/account/new", {"name": f"By Rita {n}"}, token).status_code == 403
    assert site.sql_val("SELECT count(*) FROM public.account WHERE name = $1", f"By Rita {n}") == 0


# == 3. Logout ================================================================================================
def test_logging_out_with_the_ui_logout_form_ends_the_session(app: Any, site: Site) -> None:
    from xrm.sessions import SessionService

    site.user("olga", ["sales"])
    token = site.log_in("olga")
    old = app.cookies.get("xrm_session")
    assert old
    # Another browser of the same user: logging out here does not end that one (docs/api.md: "ends this session").
    platform = app.app.state.platform
    olga_id = site.sql_val("SELECT id FROM xrm_sys.app_user WHERE name = 'olga'")
    sessions = SessionService(platform.db, platform.settings)
    elsewhere, _ = app.blocking_portal.call(sessions.create, olga_id, "other browser")

    home = tree(site.page("/e/account"))
    form = next(f for f in home.find_all("form") if f.attrs.get("action") == "/logout")
    assert form.attrs.get("method") == "post" and form.find("button").words() == "Log out"
    fields = {i.attrs["name"]: i.attrs.get("value", "") for i in form.find_all("input") if i.attrs.get("name")}
    assert fields == {"csrf_token": token}
    mark = site.audit_mark()
    response = app.post(form.attrs["action"], data=fields, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login"
    cookie = response.headers.get("set-cookie", "")
    assert cookie.startswith("xrm_session=") and ("max-age=0" in cookie.lower() or "expires=thu, 01 jan 1970" in cookie.lower()), cookie
    assert site.audit_since(mark) == ["auth.logout"]
    assert not app.cookies.get("xrm_session")
    assert app.get("/", follow_redirects=False).headers["location"].startswith("/login")

    # The old cookie, wherever a copy of it is, opens nothing any more.
    app.cookies.clear()
    with_old = {"Cookie": f"xrm_session={old}"}
    for path in ("/", "/e/account", "/search?q=x", "/account/tokens"):
        page = app.get(path, headers=with_old, follow_redirects=False)
        assert page.status_code == 303 and page.headers["location"].startswith("/login"), (path, page.status_code)
    assert app.get("/api/v1/auth/me", headers=with_old).status_code == 401
    assert app.get("/api/v1/account", headers=with_old).status_code == 401
    mark = site.audit_mark()
    forged = app.post("/e/account/new", data={"csrf_token": token, "name": "After logout AG"}, headers=with_old, follow_redirects=False)
    assert forged.status_code == 303 and forged.headers["location"].startswith("/login")
    assert app.post("/api/v1/account", json={"name": "After logout API AG"}, headers={**with_old, "X-CSRF-Token": token}).status_code == 401
    assert site.audit_since(mark) == []
    assert site.sql_val("SELECT count(*) FROM public.account WHERE name LIKE 'After logout%'") == 0
    assert site.sql_val("SELECT revoked_at IS NOT NULL FROM xrm_sys.web_session WHERE id = $1", hashlib.sha256(old.encode()).digest())
    # Logging in again gives a new session; the other browser's session is still alive.
    assert app.blocking_portal.call(sessions.resolve, elsewhere) is not None
    assert app.blocking_portal.call(sessions.resolve, old) is None
    site.log_in("olga")
    assert app.cookies.get("xrm_session") != old
    app.cookies.clear()



# == 4. Forms: one widget per field type ======================================================================
# field -> (tag, attributes the control must have); the control is the element the field's label points at.
WIDGETS: dict[str, tuple[str, dict[str, str]]] = {
    "title": ("input", {"type": "text", "name": "title", "maxlength": "40"}),
    "notes": ("textarea", {"name": "notes", "maxlength": "100000"}),
    "employees": ("input", {"type": "number", "name": "employees", "step": "1", "min": "0"}),
    "rate": ("input", {"type": "number", "name": "rate", "step": "0.01"}),
    "price": ("input", {"type": "number", "name": "price", "step": "0.01"}),
    "active": ("input", {"type": "checkbox", "role": "switch", "name": "active", "value": "true"}),
    "founded": ("input", {"type": "date", "name": "founded"}),
    "last_contact": ("input", {"type": "datetime-local", "name": "last_contact"}),
    "status": ("select", {"name": "status"}),
    "email": ("input", {"type": "email", "name": "email"}),
    "phone": ("input", {"type": "tel", "name": "phone"}),
    "website": ("input", {"type": "url", "name": "website"}),
    "company": ("input", {"type": "search", "name": "company__search", "hx-get": "/e/account/lookup?field=company"}),
    "extra": ("textarea", {"name": "extra", "spellcheck": "false"}),
}
LABELS = {name: spec["x-xrm"]["label"]["en"] for name, spec in WIDGET_PROBE["properties"].items()}
HELP = {name: spec["x-xrm"]["help"]["en"] for name, spec in WIDGET_PROBE["properties"].items() if "help" in spec["x-xrm"]}
REQUIRED = set(WIDGET_PROBE["required"])


def _record_form(html: str) -> Node:
    form = next((f for f in tree(html).find_all("form") if f.attrs.get("method") == "post"
                 and re.fullmatch(r"/e/widget_probe/(new|[0-9a-f-]{36}/edit)", f.attrs.get("action", ""))), None)
    assert form is not None, "no record form on the page"
    return form


def test_the_new_record_form_has_the_right_labelled_widget_for_every_field_type(app: Any, site: Site) -> None:
    from xrm.schema.field_types import FIELD_TYPES

    site.log_in("admin")
    form = _record_form(site.page("/e/widget_probe/new"))
    registry = app.app.state.platform.registry
    types = {name: f.type.name for name, f in registry.get("widget_probe").fields.items()}
    assert sorted(types.values()) == sorted(FIELD_TYPES), "the probe entity must have one field of every field type"

    by_id = {node.attrs["id"]: node for node in form.iter() if "id" in node.attrs}
    labels = {label.attrs["for"]: label for label in form.find_all("label") if "for" in label.attrs}
    problems = []
    # Every label points at a control of the form (label for= matches an input's id).
    for target, label in labels.items():
        if target not in by_id or by_id[target].tag not in ("input", "select", "textarea"):
            problems.append(f"label {label.words()!r} points at {target!r}, which is no control of the form")
    for name, (tag, attributes) in WIDGETS.items():
        control = by_id.get(f"field-{name}")
        kind = types[name]
        if control is None or control.tag != tag or any(control.attrs.get(k) != v for k, v in attributes.items()):
            problems.append(f"{name} ({kind}): expected <{tag} {attributes}>, found {control!r}")
            continue
        label = labels.get(f"field-{name}")
        text = label.words() if label else ""
        if not text.startswith(LABELS[name]):
            problems.append(f"{name} ({kind}): no <label for=field-{name}> named {LABELS[name]!r} (found {text!r})")
        marked = "*" in text and "(required)" in text
        if marked != (name in REQUIRED):
            problems.append(f"{name} ({kind}): required marker {'missing' if name in REQUIRED else 'on an optional field'}: {text!r}")
        if name in REQUIRED and kind in ("text", "integer", "select") and "required" not in control.attrs:
            problems.append(f"{name} ({kind}): the control lacks the required attribute")
        if name in HELP:
            help_node = by_id.get(f"field-{name}-help")
            if help_node is None or help_node.words() != HELP[name]:
                problems.append(f"{name} ({kind}): help text {HELP[name]!r} missing (found {help_node!r})")
            elif f"field-{name}-help" not in control.attrs.get("aria-describedby", "").split():
                problems.append(f"{name} ({kind}): the control is not described by its help text")
        elif f"field-{name}-help" in by_id:
            problems.append(f"{name} ({kind}): a help text that the definition does not have")
    assert not problems, "\n".join(problems)

    # The controls of the widgets beyond the one input.
    status = by_id["field-status"]
    options = [(o.attrs["value"], o.words()) for o in status.find_all("option")]
    assert options == [("", "—"), ("lead", "Lead"), ("customer", "Customer"), ("lost", "Lost")]
    assert "required" in status.attrs
    currency = form.find("select", name="price__currency")
    assert currency is not None and currency.attrs.get("aria-label") == "Currency"
    assert [o.attrs["value"] for o in currency.find_all("option")] == ["EUR", "USD", "CHF"]
    assert form.find("input", type="hidden", name="company") is not None  # the chosen record's id goes here
    assert form.find("input", type="hidden", name="active__present") is not None
    fieldset = next(f for f in form.find_all("fieldset") if f.find("input", name="colours"))
    assert fieldset.find("legend").words().startswith("Colours")
    assert "field-colours-help" in fieldset.attrs.get("aria-describedby", "").split()
    assert by_id["field-colours-help"].words() == HELP["colours"]
    boxes = [(box.attrs["value"], box.parent.words()) for box in fieldset.find_all("input", type="checkbox")]
    assert boxes == [("red", "Red"), ("green", "Green"), ("blue", "Blue")]
    assert all(box.parent.tag == "label" for box in fieldset.find_all("input", type="checkbox"))  # each box has its label
    # The switch is inside its label, and every control that is not hidden is labelled.
    assert by_id["field-active"].parent is labels["field-active"]
    for control in form.iter():
        if control.tag in ("input", "select", "textarea") and control.attrs.get("type") != "hidden":
            labelled = (control.attrs.get("id") in labels or control.attrs.get("aria-label")
                        or (control.parent is not None and control.parent.tag == "label"))
            assert labelled, f"an unlabelled control: {control!r}"


def test_a_submitted_form_stores_typed_values_for_every_field_type(app: Any, site: Site) -> None:
    n = site.n()
    company = site.create("account", name=f"Form target {n} AG")
    token = site.log_in("admin")
    sent = {
        "title": f"Probe {n}", "notes": "line 1\nline 2 – ü", "employees": "42", "rate": "12.5", "price": "99.90",
        "price__currency": "CHF", "active__present": "1", "active": "true", "founded": "2024-02-29",
        "last_contact": "2024-05-06T07:08", "status": "customer", "colours__present": "1", "colours": ["red", "blue"],
        "email": "ada@example.org", "phone": "+49 30 1234567", "website": "https://example.org/x?y=1",
        "company": company["id"], "company__search": company["name"], "extra": '{"a": [1, 2.5], "b": null, "ü": "ä"}',
    }
    response = app.post("/e/widget_probe/new", data={**sent, "csrf_token": token}, follow_redirects=False)
    assert response.status_code == 303, response.text[:3000]
    key = response.headers["location"].rsplit("/", 1)[-1]
    stored = site.record("widget_probe", key)
    expected = {
        "title": f"Probe {n}", "notes": "line 1\nline 2 – ü", "employees": 42, "rate": decimal.Decimal("12.50"),
        "price": {"amount": decimal.Decimal("99.90"), "currency": "CHF"}, "active": True, "founded": dt.date(2024, 2, 29),
        "last_contact": dt.datetime(2024, 5, 6, 7, 8, tzinfo=dt.timezone.utc), "status": "customer", "colours": ["red", "blue"],
        "email": "ada@example.org", "phone": "+49 30 1234567", "website": "https://example.org/x?y=1",
        "company": uuid.UUID(company["id"]), "extra": {"a": [1, 2.5], "b": None, "ü": "ä"},
    }
    for name, value in expected.items():
        assert stored[name] == value, f"{name}: stored {stored[name]!r}, expected {value!r}"
        assert isinstance(stored[name], type(value)) and isinstance(stored[name], bool) == isinstance(value, bool), \
            f"{name}: stored a {type(stored[name]).__name__}, expected a {type(value).__name__}"
    assert str(stored["rate"]) == "12.50" and str(stored["price"]["amount"]) == "99.90"  # exact, no float noise
    assert stored["last_contact"].utcoffset() == dt.timedelta(0)  # the form's times are UTC
    # The API says the same.
    api = site.api("GET", f"/api/v1/widget_probe/{key}")
    assert api["employees"] == 42 and api["active"] is True and api["founded"] == "2024-02-29" and api["colours"] == ["red", "blue"]
    assert api["price"]["currency"] == "CHF" and decimal.Decimal(str(api["price"]["amount"])) == decimal.Decimal("99.90")
    assert api["last_contact"].startswith("2024-05-06T07:08:00") and api["company"] == company["id"]

    # The edit form shows every stored value back in its widget.
    form = _record_form(site.page(f"/e/widget_probe/{key}/edit"))
    value = {i.attrs["name"]: i.attrs.get("value") for i in form.find_all("input") if i.attrs.get("type") != "checkbox" and "name" in i.attrs}
    assert value["title"] == f"Probe {n}" and value["employees"] == "42" and value["founded"] == "2024-02-29"
    assert value["last_contact"] == "2024-05-06T07:08" and value["price"] == "99.90" and value["company"] == company["id"]
    assert value["company__search"] == company["name"] and value["email"] == "ada@example.org" and value["phone"] == "+49 30 1234567"
    assert form.find("textarea", name="notes").text() == "line 1\nline 2 – ü"
    assert json.loads(form.find("textarea", name="extra").text()) == {"a": [1, 2.5], "b": None, "ü": "ä"}
    assert "checked" in form.find("input", name="active").attrs
    assert {b.attrs["value"] for b in form.find_all("input", name="colours") if "checked" in b.attrs} == {"red", "blue"}
    assert [o.attrs["value"] for o in form.find("select", name="status").find_all("option") if "selected" in o.attrs] == ["customer"]
    assert [o.attrs["value"] for o in form.find("select", name="price__currency").find_all("option") if "selected" in o.attrs] == ["CHF"]

    # An unticked switch stores false, the boxes ticked now replace the old ones, emptied optional inputs store no value.
    edit = {**sent, "version": value["version"], "notes": "", "rate": "", "founded": "", "extra": "", "colours": ["green"]}
    del edit["active"]
    response = app.post(f"/e/widget_probe/{key}/edit", data={**edit, "csrf_token": token}, follow_redirects=False)
    assert response.status_code == 303, response.text[:3000]
    stored = site.record("widget_probe", key)
    assert stored["active"] is False and stored["colours"] == ["green"]
    assert stored["notes"] is None and stored["rate"] is None and stored["founded"] is None and stored["extra"] is None


# == 5. HTML in record values is text everywhere ==============================================================
PAYLOAD = "<script>alert(1)</script><img src=x onerror=alert(2)>"
ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;"


def _markup_problems(where: str, html: str, must_show: list[str], doc_part: str | None = None) -> list[str]:
    """What is wrong with a page that shows record values containing PAYLOAD: raw markup, or the value missing."""
    problems = []
    if "<script>alert" in html or "<img src=x" in html:
        problems.append(f"{where}: the value's markup is in the page unescaped")
    if "&lt;script&gt;alert(1)" not in html:
        problems.append(f"{where}: the escaped value does not appear")
    doc = tree(html)
    for node in doc.iter():
        if node.tag == "script" and (not node.attrs.get("src", "").startswith("/static/") or node.text().strip()):
            problems.append(f"{where}: a script element that is not the app's own: {node!r} {node.text()[:60]!r}")
        if node.tag == "img" or any(name.startswith("on") for name in node.attrs):
            problems.append(f"{where}: an element from the value: {node!r}")
    text = doc.text()
    for shown in must_show:
        if shown not in text:
            problems.append(f"{where}: {shown!r} is not shown as text")
    return problems


def test_html_in_record_values_is_shown_as_text_on_list_detail_board_search_and_history(app: Any, site: Site) -> None:
    n = site.n()
    word = f"Evilcorp{n}"
    account = site.create("account", name=f"{word} {PAYLOAD}", city=PAYLOAD, notes=f"old {PAYLOAD}")
    contact = site.create("contact", full_name=f"{word} Eve {PAYLOAD}", job_title=PAYLOAD, account=account["id"])
    deal = site.create("deal", title=f"{word} deal {PAYLOAD}", stage="negotiation", account=account["id"], contact=contact["id"],
                       details={"note": PAYLOAD}, amount={"amount": 5000, "currency": "EUR"})  # "win" needs an amount
    site.api("PATCH", f"/api/v1/account/{account['id']}", json={"notes": f"new {PAYLOAD}", "city": f"{PAYLOAD} city"})
    token = site.log_in("admin")
    name, person, title = account["name"], contact["full_name"], deal["title"]

    problems: list[str] = []
    pages = {
        "account list (search)": (f"/e/account?q={word}", [name, PAYLOAD + " city"]),
        "contact list (reference column)": (f"/e/contact?q={word}&columns=job_title,account", [person, name, PAYLOAD]),
        "deal list": (f"/e/deal?q={word}&columns=account,contact,details", [title, name, person]),
        "account detail (fields, related panels)": (f"/e/account/{account['id']}", [name, person, title, f"new {PAYLOAD}"]),
        "contact detail (reference link)": (f"/e/contact/{contact['id']}", [person, name, PAYLOAD]),
        "deal detail (json field)": (f"/e/deal/{deal['id']}", [title, name, person]),
        "deal board by stage": (f"/e/deal/board/stage?q={word}", [title, name]),
        "search results": (f"/search?q={word}", [name, person, title]),
        "search echoing the query": (f"/search?q={PAYLOAD}", [PAYLOAD]),
        "reference lookup": (f"/e/account/lookup?field=account&account__search={word}", [name]),
        "edit form": (f"/e/account/{account['id']}/edit", [f"new {PAYLOAD}"]),
    }
    for where, (path, shown) in pages.items():
        response = app.get(path)
        assert response.status_code == 200, (where, response.status_code, response.text[:300])
        problems += _markup_problems(where, response.text, shown)

    # The history: old and new values of the change, as text.
    history = tree(site.page(f"/e/account/{account['id']}")).find("section", class_="history")
    assert history is not None
    changes = {(li.find("del").text(), li.find("ins").text()) for li in history.find_all("li") if li.find("del") is not None}
    for change in ((f"old {PAYLOAD}", f"new {PAYLOAD}"), (PAYLOAD, f"{PAYLOAD} city")):
        if change not in changes:
            problems.append(f"history: the change {change} is not shown as text (shown: {sorted(changes)})")
    # The board card, the moved card and its announcement (htmx), and the message of a refused move.
    board = tree(site.page(f"/e/deal/board/stage?q={word}"))
    card = board.find("li", id=f"card-{deal['id']}")
    if card is None or card.find("a", class_="card-title") is None or card.find("a", class_="card-title").text() != title:
        problems.append(f"board: the card's title is not the deal's title as text: {card!r}")
    version = str(site.record("deal", deal["id"])["version"])
    moved = app.post(f"/e/deal/{deal['id']}/move", headers={"HX-Request": "true"},
                     data={"csrf_token": token, "field": "stage", "value": "won", "version": version, "board_query": f"q={word}"})
    assert moved.status_code == 200, moved.text[:500]
    problems += _markup_problems("moved board card", moved.text, [title, f"{title} moved to Won."])
    stale = app.post(f"/e/deal/{deal['id']}/move", data={"csrf_token": token, "field": "stage", "value": "lost", "version": "1"})
    assert stale.status_code == 409
    problems += _markup_problems("refused move (no htmx)", stale.text, [f"{title}: Not moved"])
    assert not problems, "\n".join(problems)


def test_a_script_url_is_refused_for_a_url_field(app: Any, site: Site) -> None:
    """docs/entity-definitions.md: a url field holds `http(s)://...` - a javascript: link on the detail page would run script."""
    token = site.log_in("admin")
    for url in ("javascript:alert(1)", "JavaScript:alert(document.cookie)", "data:text/html,<script>alert(1)</script>"):
        response = app.post("/e/account/new", data={"csrf_token": token, "name": f"URL probe {site.n()}", "website": url})
        assert response.status_code == 422, (url, response.status_code)
        assert tree(response.text).find("input", name="website").attrs.get("aria-invalid") == "true", url


# == product bugs found by this file (each its own test, so the rest stays green) ==================================
def test_a_required_multiselect_is_announced_as_required_like_every_other_required_field(app: Any, site: Site) -> None:
    """docs/webui.md, Forms: "Required fields are marked (and announced to screen readers)"."""
    site.log_in("admin")
    form = _record_form(site.page("/e/widget_probe/new"))
    announced = {}
    for name in sorted(REQUIRED):
        label = form.find("label", for_=f"field-{name}")
        if name == "colours":
            label = next(f for f in form.find_all("fieldset") if f.find("input", name="colours")).find("legend")
        hidden = [n.words() for n in label.find_all(class_="visually-hidden")]
        announced[name] = "(required)" in hidden
    missing = [name for name, ok in announced.items() if not ok]
    assert not missing, f"required fields without the screen-reader text '(required)': {missing}"
