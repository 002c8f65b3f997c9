"""Every write door leaves its audit entry: a walk over all of them, not a hand-picked list.

Two walks, on one app with the shipped entities, the CRM pack and a probe
entity (many-to-many link, retention rule), so that every kind of generated
operation exists:

- the REST API: every non-GET operation of /api/openapi.json (per entity, so
  a new entity or a plugin's new operation is walked as soon as the registry
  has it); and every non-GET route handler under /api must be one of them;
- the web UI: every non-GET route handler of the Litestar app outside /api.

For each operation a *recipe* (keyed by the operation's path with the entity
and link names generalised, e.g. ``POST /api/v1/{entity}/{record_id}/shares``)
prepares what it needs — records, roles, teams, tokens, definitions, jobs —
through the API or SQL, builds a valid request (record bodies come from the
entity's ``<entity>.Input`` schema), and the walk sends it. When the answer is
2xx/3xx, at least one audit row must have appeared during that request, with
the acting user's id as principal_id (and, where a door documents an entry of
its own besides the record.* rows — a state-machine transition's
workflow.transition — that one).

An operation without a recipe fails the test by name (add a recipe, or — if
it legitimately changes nothing — an entry with its reason to ALLOWLIST). So
does an operation whose recipe no longer yields a 2xx/3xx. Allowlisted
operations that have a recipe are exercised too, and must still write no
audit row (else the entry is stale).
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pytest

from conftest import ROOT, api_token, csrf, form_controls, fresh_database

PASSWORD = "a-long-password"
SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
_COUNTER = itertools.count(1)

# An entity of our own, so that the link, link-import and retention operations exist.
PROBE = {
    "type": "object",
    "x-xrm": {
        "name": "audit_probe", "label": {"en": "Audit probe", "de": "Audit-Probe"}, "display_field": "name",
        "links": [{"name": "members", "target": "contact", "label": {"en": "Members", "de": "Mitglieder"},
                   "inverse_name": "audit_probes", "inverse_label": {"en": "Audit probes", "de": "Audit-Proben"},
                   "attributes": {"role": {"type": "string", "enum": ["lead", "member"]}}, "required": ["role"]}],
        "retention": {"days": 1, "action": "delete", "after": "closed_on"},
    },
    "required": ["name"],
    "properties": {"name": {"type": "string", "maxLength": 100}, "closed_on": {"type": "string", "format": "date"}},
}

# Operations that legitimately write no audit row, each with the reason. Keep it small.
ALLOWLIST: dict[tuple[str, str], str] = {
    # A migration plan: computes the steps of a definition change, applies nothing (a dry run).
    ("POST", "/api/v1/meta/plan"): "dry run: plans a schema change, changes nothing",
    # Step 1 of the import wizard: the CSV goes to a staging folder of the data dir; no record
    # changes before step 4 (/run, which is walked and audited per record).
    ("POST", "/e/{entity:str}/import"): "staging upload: stores the file for the wizard, changes no data",
    # Step 3 of the import wizard: an import with dry_run=True (everything rolled back).
    ("POST", "/e/{entity:str}/import/{job_id:str}/check"): "dry run of the import: changes no data",
    # The user's own display language: a preference of the screen, no record, permission or personal data.
    ("POST", "/language"): "the user's display language preference: changes no data",
}


# -- the app ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def app(server_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One app for both walks (startup applies ~12 entities; doing it once keeps the file fast)."""
    from litestar.testing import TestClient

    from xrm.app import create_app
    from xrm.settings import Settings

    folder = tmp_path_factory.mktemp("audit-coverage")
    schemas = folder / "schemas"
    schemas.mkdir()
    for source in (ROOT / "entity_schemas").glob("*.json"):
        (schemas / source.name).write_text(source.read_text())
    (schemas / "audit_probe.json").write_text(json.dumps(PROBE))
    with fresh_database(server_uri) as uri:
        # No in-process job worker: nothing may write audit rows in the background during a request.
        settings = Settings(data_dir=folder, database_url=uri, schema_dir=schemas, secret_key=None, worker=False)
        with TestClient(app=create_app(settings), base_url="https://testserver.local") as client:
            yield client


# -- shared helpers ---------------------------------------------------------------------------
@dataclass
class Call:
    """One request of the walk, and what it needs around it."""

    method: str
    path: str
    json: Any = None
    content: bytes | None = None
    data: Any = None
    files: Any = None
    params: dict[str, str] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    bearer: bool = True
    """API: send the admin's token (False: the call authenticates otherwise, e.g. by session cookie)."""
    csrf: bool = True
    """UI: add the session's CSRF token to the form."""
    settle: Callable[[], None] | None = None
    """Waits for work the request started in the background (it is part of the request's effect)."""
    after: Callable[[], None] | None = None
    """Puts back what the call ended (a session, cookies), whatever the outcome."""
    expect: str | None = None
    """An audit action the door documents as its own, besides the record.* rows of the write (docs/*.md)."""


class Unprepared(Exception):
    """A recipe could not set up what its operation needs."""


class Env:
    """What recipes use: the client, the acting admin, record factories, SQL."""

    def __init__(self, client: Any, actor: str) -> None:
        self.client = client
        self.actor = actor
        self.token = api_token(client, actor, ["admin"])
        self.auth = {"Authorization": f"Bearer {self.token}"}
        self.actor_id: uuid.UUID = self.sql_val("SELECT id FROM xrm_sys.app_user WHERE name = $1", actor)
        self.spec = self.ok(client.get("/api/openapi.json", headers=self.auth))
        self.schemas = self.spec["components"]["schemas"]
        self.entities = {e["name"] for e in self.ok(client.get("/api/v1/meta/entities", headers=self.auth))["entities"]}
        self._definitions: dict[str, Any] = {}
        # Someone to share with, assign to, add to teams (created once per app).
        self.other = "bea"
        if self.sql_val("SELECT count(*) FROM xrm_sys.app_user WHERE name = $1", self.other) == 0:
            api_token(client, self.other, ["sales"])
        self.connection_role = f"audit_peer_{actor}"
        self.api("POST", "/api/v1/_connection_roles", 201, json={"name": self.connection_role, "label": {"en": "peer of"}})

    @staticmethod
    def n() -> int:
        """A number not used before in this app (unique names, e-mails)."""
        return next(_COUNTER)

    # -- HTTP and SQL ----------------------------------------------------------------
    @staticmethod
    def ok(response: Any, *statuses: int) -> Any:
        if response.status_code not in (statuses or (200,)):
            raise Unprepared(f"{response.request.method} {response.request.url.path} -> {response.status_code}: {response.text[:300]}")
        return response.json() if response.content and "json" in response.headers.get("content-type", "") else None

    def api(self, method: str, path: str, status: int = 200, **kwargs: Any) -> Any:
        """A preparing request as the admin (not measured)."""
        headers = {**self.auth, **kwargs.pop("headers", {})}
        return self.ok(self.client.request(method, path, headers=headers, follow_redirects=False, **kwargs), status)

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

    def audit_since(self, mark: int) -> list[Any]:
        return self.sql("SELECT id, action, principal_id, principal_name, entity FROM xrm_sys.audit_log WHERE id > $1 ORDER BY id", mark)

    # -- records -----------------------------------------------------------------------
    def definition(self, entity: str) -> dict[str, Any]:
        if entity not in self._definitions:
            self._definitions[entity] = self.api("GET", f"/api/v1/meta/entities/{entity}")["definition"]
        return self._definitions[entity]

    def _value(self, entity: str, name: str, schema: dict[str, Any]) -> Any:
        """A valid value for a field, from its JSON Schema in the spec (references: a new record)."""
        if "anyOf" in schema:
            schema = next(s for s in schema["anyOf"] if s.get("type") != "null")
        kind = schema.get("type")
        if isinstance(kind, list):
            kind = next(k for k in kind if k != "null")
        if "enum" in schema:
            return schema["enum"][0]
        if kind == "string":
            fmt = schema.get("format")
            if fmt == "uuid":
                target = ((self.definition(entity)["properties"].get(name) or {}).get("x-xrm") or {}).get("references")
                if target is None:
                    raise Unprepared(f"{entity}.{name}: a uuid field that is no reference; add a known-good body")
                return self.create(target)["id"]
            if fmt == "date":
                return "2001-02-03"
            if fmt == "date-time":
                return "2001-02-03T04:05:06+00:00"
            if fmt == "email":
                return f"audit{self.n()}@example.org"
            if fmt == "uri":
                return f"https://example.org/{self.n()}"
            if schema.get("pattern"):
                raise Unprepared(f"{entity}.{name}: no value for pattern {schema['pattern']}; add a known-good body")
            return f"Audit {entity} {self.n()}"[: schema.get("maxLength", 100)]
        if kind in ("integer", "number"):
            return schema.get("minimum", 1)
        if kind == "boolean":
            return True
        if kind == "object" and set(schema.get("required", [])) == {"amount", "currency"}:
            return {"amount": 12, "currency": schema["properties"]["currency"]["enum"][0]}
        raise Unprepared(f"{entity}.{name}: no value for schema {json.dumps(schema)[:200]}; add a known-good body")

    def text_field(self, entity: str) -> str:
        """A plain text field of the entity (to change in an update)."""
        schema = self.schemas[f"{entity}.Input"]
        ordered = schema.get("required", []) + list(schema["properties"])
        for name in ordered:
            prop = schema["properties"].get(name, {})
            prop = next((s for s in prop.get("anyOf", []) if s.get("type") != "null"), prop)
            if prop.get("type") == "string" and not ({"enum", "format", "pattern"} & set(prop)) and name != "id":
                return name
        raise Unprepared(f"{entity} has no plain text field to change; add a known-good body")

    def body(self, entity: str, kind: str = "Input", **values: Any) -> dict[str, Any]:
        """A valid record of the entity for a create ("Input") or a PUT ("Replace"): its required fields, and a text field."""
        schema = self.schemas[f"{entity}.{kind}"]
        body = {name: self._value(entity, name, schema["properties"][name]) for name in schema.get("required", [])}
        text = self.text_field(entity)
        body.setdefault(text, f"Audit {entity} {self.n()}")
        return {**body, **values}

    def create(self, entity: str, **values: Any) -> dict[str, Any]:
        return self.api("POST", f"/api/v1/{entity}", 201, json=self.body(entity, **values))  # type: ignore[no-any-return]

    def link_target(self, entity: str, link: str) -> tuple[str, dict[str, Any]]:
        """The entity at the other end of a link (own or inverse name) and valid attributes."""
        for link_def in self.definition(entity).get("x-xrm", {}).get("links", []):
            if link_def["name"] == link:
                return link_def["target"], self._attributes(link_def)
        for other in sorted(self.entities):
            for link_def in self.definition(other).get("x-xrm", {}).get("links", []):
                if link_def["target"] == entity and link_def.get("inverse_name", f"{other}_{link_def['name']}") == link:
                    return other, self._attributes(link_def)
        raise Unprepared(f"{entity} has no link {link!r}")

    def _attributes(self, link_def: dict[str, Any]) -> dict[str, Any]:
        return {name: self._value("", name, link_def["attributes"][name]) for name in link_def.get("required", [])}

    # -- other things -------------------------------------------------------------------
    def role(self) -> str:
        name = f"audit_role_{self.n()}"
        self.api("POST", "/api/v1/admin/roles", 201, json={"name": name})
        return name

    def user(self) -> str:
        name = f"walkuser{self.n()}"
        from xrm.auth import UserService

        self.client.blocking_portal.call(UserService(self.client.app.state.platform.db).create_user, name, PASSWORD, ["sales"])
        return name

    def team(self) -> str:
        name = f"Audit team {self.n()}"
        self.api("POST", "/api/v1/admin/teams", 201, json={"name": name})
        return name

    def automation_body(self, name: str, **changes: Any) -> dict[str, Any]:
        return {"name": name, "entity": "account", "trigger": {"on": "created"}, "run_as": self.other, "enabled": False,
                "actions": [{"type": "set_fields", "values": {"city": "Audit"}}], **changes}

    def automation(self) -> str:
        name = f"audit_auto_{self.n()}"
        self.api("POST", "/api/v1/admin/automations", 201, json=self.automation_body(name))
        return name

    def dead_job(self) -> int:
        return int(self.sql_val(
            "INSERT INTO xrm_sys.job (kind, idempotency_key, state, last_error, finished_at) "
            "VALUES ('audit_probe', $1, 'dead', 'audit coverage test', now()) RETURNING id", f"audit-coverage-{uuid.uuid4()}"))

    def saved_view(self, entity: str, query: str = "") -> tuple[uuid.UUID, str]:
        name = f"Audit view {self.n()}"
        key = self.sql_val("INSERT INTO xrm_sys.saved_view (entity, name, query, owner_id, shared) VALUES ($1, $2, $3, $4, false) "
                           "RETURNING id", entity, name, query, self.actor_id)
        return key, name

    def new_entity(self) -> dict[str, Any]:
        name = f"audit_def_{self.n()}"
        return {"type": "object", "x-xrm": {"name": name, "label": {"en": name}, "display_field": "title"},
                "properties": {"title": {"type": "string", "maxLength": 50}}}

    def connect(self, entity: str, record_id: str) -> str:
        other = self.create("account")
        body = {"role": self.connection_role, "other_entity": "account", "other_id": other["id"]}
        return self.api("POST", f"/api/v1/{entity}/{record_id}/connections", 201, json=body)["id"]  # type: ignore[no-any-return]

    def link(self, entity: str, record_id: str, link: str) -> str:
        target, attributes = self.link_target(entity, link)
        body = {"target": self.create(target)["id"], "attributes": attributes}
        return self.api("POST", f"/api/v1/{entity}/{record_id}/links/{link}", 201, json=body)["id"]  # type: ignore[no-any-return]

    def transition(self, entity: str, record_id: str) -> tuple[str, dict[str, Any], int]:
        """An available transition of the record: (name, values it needs, the record's version)."""
        machine = self.api("GET", f"/api/v1/{entity}/{record_id}/transitions")
        for t in machine["transitions"]:
            if t["available"] or all(b["kind"] == "missing" for b in t["blocked"]):
                schema = self.schemas[f"{entity}.Input"]["properties"]
                return t["name"], {n: self._value(entity, n, schema[n]) for n in t["needs"]}, machine["version"]
        raise Unprepared(f"no transition of a new {entity} is available: {machine['transitions']}")


def walk(env: Env, operations: list[tuple[str, str, Any]], recipes: dict[tuple[str, str], Callable[..., Call]],
         send: Callable[[Call], Any]) -> tuple[list[str], list[str]]:
    """Run each operation; return (what was checked, the problems)."""
    checked, problems = [], []
    for (method, template, context) in operations:
        label = f"{method} {context.get('path', template)}"
        key = (method, template)
        allowed = ALLOWLIST.get(key)
        recipe = recipes.get(key)
        if recipe is None:
            if allowed is None:
                problems.append(f"{label}: no recipe (known-good request) for {method} {template}; add one to the walk, "
                                "or to ALLOWLIST with the reason if it legitimately writes nothing")
            continue
        try:
            call = recipe(env, **context)
        except Unprepared as error:
            problems.append(f"{label}: could not prepare the request: {error}")
            continue
        mark = env.audit_mark()
        try:
            response = send(call)
            if call.settle is not None and response.status_code < 400:
                call.settle()
            rows = env.audit_since(mark)  # before `after`, whose own writes (a new login) are not the call's
        finally:
            if call.after is not None:
                call.after()
        if not 200 <= response.status_code < 400:
            problems.append(f"{label}: the known-good request failed with {response.status_code}: {response.text[:300]}")
            continue
        mine = [r for r in rows if r["principal_id"] == env.actor_id]
        checked.append(label)
        if allowed is not None:
            if mine:
                problems.append(f"{label}: is in ALLOWLIST ({allowed}) but wrote {[r['action'] for r in mine]}: remove the entry")
        elif not rows:
            problems.append(f"{label} -> {response.status_code}: NO audit row")
        elif not mine:
            problems.append(f"{label} -> {response.status_code}: audit rows {[(r['action'], r['principal_name']) for r in rows]} "
                            f"but none with the acting user's id ({env.actor})")
        elif call.expect and call.expect not in {r["action"] for r in mine}:
            problems.append(f"{label} -> {response.status_code}: wrote {[r['action'] for r in mine]} but not its own entry {call.expect!r}")
    return checked, problems


# == the REST API =================================================================================
def _template(path: str, entities: set[str]) -> tuple[str, dict[str, Any]]:
    """/api/v1/contact/{record_id}/links/audit_probes -> /api/v1/{entity}/{record_id}/links/{link}, {entity, link}."""
    parts = path.split("/")
    context: dict[str, Any] = {"path": path}
    if len(parts) > 3 and parts[3] in entities:
        context["entity"] = parts[3]
        parts[3] = "{entity}"
        for i, part in enumerate(parts[:-1]):
            if part in ("links", "_links") and not parts[i + 1].startswith("{"):
                context["link"] = parts[i + 1]
                parts[i + 1] = "{link}"
    return "/".join(parts), context


def _api_recipes() -> dict[tuple[str, str], Callable[..., Call]]:
    r: dict[tuple[str, str], Callable[..., Call]] = {}

    def recipe(method: str, template: str) -> Callable[[Callable[..., Call]], Callable[..., Call]]:
        def register(fn: Callable[..., Call]) -> Callable[..., Call]:
            r[(method, template)] = fn
            return fn

        return register

    E = "/api/v1/{entity}"
    R = E + "/{record_id}"

    # -- records (every entity) --------------------------------------------------------
    @recipe("POST", E)
    def create(env: Env, path: str, entity: str) -> Call:
        return Call("POST", path, json=env.body(entity))

    @recipe("POST", E + "/_bulk")
    def bulk(env: Env, path: str, entity: str) -> Call:
        return Call("POST", path, json={"records": [env.body(entity)]})

    @recipe("PUT", R)
    def replace(env: Env, path: str, entity: str) -> Call:
        return Call("PUT", path.format(record_id=env.create(entity)["id"]), json=env.body(entity, "Replace"))

    @recipe("PATCH", R)
    def update(env: Env, path: str, entity: str) -> Call:
        record = env.create(entity)
        return Call("PATCH", path.format(record_id=record["id"]), json={env.text_field(entity): f"Changed {env.n()}"})

    @recipe("DELETE", R)
    def delete(env: Env, path: str, entity: str) -> Call:
        return Call("DELETE", path.format(record_id=env.create(entity)["id"]))

    @recipe("POST", R + "/restore")
    def restore(env: Env, path: str, entity: str) -> Call:
        record = env.create(entity)
        env.api("DELETE", f"/api/v1/{entity}/{record['id']}")
        return Call("POST", path.format(record_id=record["id"]))

    @recipe("POST", E + "/_import")
    def import_(env: Env, path: str, entity: str) -> Call:
        return Call("POST", path, content=json.dumps(env.body(entity)).encode() + b"\n",
                    headers={"Content-Type": "application/x-ndjson"})

    @recipe("POST", R + "/shares")
    def share(env: Env, path: str, entity: str) -> Call:
        return Call("POST", path.format(record_id=env.create(entity)["id"]), json={"user": env.other, "access": "write"})

    @recipe("DELETE", R + "/shares")
    def unshare(env: Env, path: str, entity: str) -> Call:
        key = env.create(entity)["id"]
        env.api("POST", f"/api/v1/{entity}/{key}/shares", json={"user": env.other})
        return Call("DELETE", path.format(record_id=key), params={"user": env.other})

    @recipe("POST", R + "/assign")
    def assign(env: Env, path: str, entity: str) -> Call:
        return Call("POST", path.format(record_id=env.create(entity)["id"]), json={"user": env.other})

    @recipe("POST", R + "/connections")
    def connect(env: Env, path: str, entity: str) -> Call:
        other = env.create("account")
        return Call("POST", path.format(record_id=env.create(entity)["id"]),
                    json={"role": env.connection_role, "other_entity": "account", "other_id": other["id"], "direction": "forward"})

    @recipe("DELETE", R + "/connections/{link_id}")
    def disconnect(env: Env, path: str, entity: str) -> Call:
        key = env.create(entity)["id"]
        return Call("DELETE", path.format(record_id=key, link_id=env.connect(entity, key)))

    @recipe("POST", R + "/links/{link}")
    def link(env: Env, path: str, entity: str, link: str) -> Call:
        target, attributes = env.link_target(entity, link)
        return Call("POST", path.format(record_id=env.create(entity)["id"]),
                    json={"target": env.create(target)["id"], "attributes": attributes})

    @recipe("DELETE", R + "/links/{link}/{link_id}")
    def unlink(env: Env, path: str, entity: str, link: str) -> Call:
        key = env.create(entity)["id"]
        return Call("DELETE", path.format(record_id=key, link_id=env.link(entity, key, link)))

    @recipe("POST", E + "/_links/{link}")
    def import_links(env: Env, path: str, entity: str, link: str) -> Call:
        target, attributes = env.link_target(entity, link)
        line = {"source": env.create(entity)["id"], "target": env.create(target)["id"], "attributes": attributes}
        return Call("POST", path, content=json.dumps(line).encode() + b"\n", headers={"Content-Type": "application/x-ndjson"})

    @recipe("POST", R + "/transitions/{name}")
    def transition(env: Env, path: str, entity: str) -> Call:
        key = env.create(entity)["id"]
        name, needs, version = env.transition(entity, key)
        # docs/workflows.md: each transition taken writes workflow.transition besides record.updated.
        return Call("POST", path.format(record_id=key, name=name), json=needs, headers={"If-Match": f'"{version}"'},
                    expect="workflow.transition")

    @recipe("POST", R + "/convert")
    def convert(env: Env, path: str, entity: str) -> Call:
        lead = env.create(entity, company=f"Converted {env.n()} AG", email=f"lead{env.n()}@example.org")
        return Call("POST", path.format(record_id=lead["id"]), json={"title": "From the audit walk"})

    @recipe("POST", R + "/refresh-members")
    def refresh_members(env: Env, path: str, entity: str) -> Call:
        env.create("contact")
        _, segment = env.saved_view("contact")
        return Call("POST", path.format(record_id=env.create(entity, segment=segment)["id"]))

    # -- entity definitions --------------------------------------------------------------
    @recipe("POST", "/api/v1/meta/plan")
    def plan(env: Env, path: str) -> Call:
        return Call("POST", path, json={"definitions": [env.new_entity()]})

    @recipe("POST", "/api/v1/meta/apply")
    def apply(env: Env, path: str) -> Call:
        return Call("POST", path, json={"definitions": [env.new_entity()]})

    @recipe("POST", "/api/v1/meta/revert")
    def revert(env: Env, path: str) -> Call:
        env.api("POST", "/api/v1/meta/apply", json={"definitions": [env.new_entity()]})
        return Call("POST", path)

    # -- roles, grants, users' roles, teams -----------------------------------------------
    @recipe("POST", "/api/v1/admin/roles")
    def create_role(env: Env, path: str) -> Call:
        return Call("POST", path, json={"name": f"audit_role_{env.n()}", "description": "walked"})

    @recipe("DELETE", "/api/v1/admin/roles/{role}")
    def delete_role(env: Env, path: str) -> Call:
        return Call("DELETE", path.format(role=env.role()))

    @recipe("POST", "/api/v1/admin/roles/{role}/grants")
    def grant(env: Env, path: str) -> Call:
        return Call("POST", path.format(role=env.role()), json={"entity": "account", "action": "read", "scope": "all"})

    @recipe("DELETE", "/api/v1/admin/roles/{role}/grants")
    def revoke(env: Env, path: str) -> Call:
        role = env.role()
        env.api("POST", f"/api/v1/admin/roles/{role}/grants", json={"entity": "account", "action": "read", "scope": "all"})
        return Call("DELETE", path.format(role=role), params={"entity": "account", "action": "read"})

    @recipe("POST", "/api/v1/admin/roles/{role}/field-grants")
    def grant_field(env: Env, path: str) -> Call:
        return Call("POST", path.format(role=env.role()), json={"entity": "account", "field": "annual_revenue", "access": "read"})

    @recipe("DELETE", "/api/v1/admin/roles/{role}/field-grants")
    def revoke_field(env: Env, path: str) -> Call:
        role = env.role()
        env.api("POST", f"/api/v1/admin/roles/{role}/field-grants", json={"entity": "account", "field": "annual_revenue", "access": "read"})
        return Call("DELETE", path.format(role=role), params={"entity": "account", "field": "annual_revenue"})

    @recipe("POST", "/api/v1/admin/users")
    def create_user(env: Env, path: str) -> Call:
        return Call("POST", path, json={"name": f"apiuser{env.n()}", "password": PASSWORD, "roles": ["sales"]})

    @recipe("PATCH", "/api/v1/admin/users/{user}")
    def disable_user(env: Env, path: str) -> Call:
        return Call("PATCH", path.format(user=env.user()), json={"disabled": True})

    @recipe("POST", "/api/v1/admin/users/{user}/logout-all")
    def end_user_sessions(env: Env, path: str) -> Call:
        user = env.user()
        env.ok(env.client.post("/api/v1/auth/login", json={"name": user, "password": PASSWORD}))  # a session to end
        env.client.cookies.clear()
        return Call("POST", path.format(user=user))

    @recipe("PUT", "/api/v1/admin/users/{user}/roles/{role}")
    def grant_role(env: Env, path: str) -> Call:
        return Call("PUT", path.format(user=env.other, role=env.role()))

    @recipe("DELETE", "/api/v1/admin/users/{user}/roles/{role}")
    def revoke_role(env: Env, path: str) -> Call:
        role = env.role()
        env.api("PUT", f"/api/v1/admin/users/{env.other}/roles/{role}")
        return Call("DELETE", path.format(user=env.other, role=role))

    @recipe("POST", "/api/v1/admin/teams")
    def create_team(env: Env, path: str) -> Call:
        return Call("POST", path, json={"name": f"Audit team {env.n()}"})

    @recipe("PATCH", "/api/v1/admin/teams/{team}")
    def move_team(env: Env, path: str) -> Call:
        return Call("PATCH", path.format(team=env.team()), json={"parent": env.team()})

    @recipe("DELETE", "/api/v1/admin/teams/{team}")
    def delete_team(env: Env, path: str) -> Call:
        return Call("DELETE", path.format(team=env.team()))

    @recipe("PUT", "/api/v1/admin/teams/{team}/members/{user}")
    def add_member(env: Env, path: str) -> Call:
        return Call("PUT", path.format(team=env.team(), user=env.other))

    @recipe("DELETE", "/api/v1/admin/teams/{team}/members/{user}")
    def remove_member(env: Env, path: str) -> Call:
        team = env.team()
        env.api("PUT", f"/api/v1/admin/teams/{team}/members/{env.other}")
        return Call("DELETE", path.format(team=team, user=env.other))

    # -- login and sessions ------------------------------------------------------------------
    @recipe("POST", "/api/v1/auth/login")
    def login(env: Env, path: str) -> Call:
        return Call("POST", path, json={"name": env.actor, "password": PASSWORD}, bearer=False, after=env.client.cookies.clear)

    @recipe("POST", "/api/v1/auth/logout")
    def logout(env: Env, path: str) -> Call:
        session = env.ok(env.client.post("/api/v1/auth/login", json={"name": env.actor, "password": PASSWORD}))
        return Call("POST", path, headers={"X-CSRF-Token": session["csrf_token"]}, bearer=False, after=env.client.cookies.clear)

    @recipe("POST", "/api/v1/auth/logout-all")
    def logout_all(env: Env, path: str) -> Call:
        return Call("POST", path)

    # -- data protection ---------------------------------------------------------------------
    @recipe("POST", "/api/v1/admin/privacy/access")
    def privacy_access(env: Env, path: str) -> Call:
        return Call("POST", path, json={"entity": "contact", "record_id": env.create("contact")["id"]})

    @recipe("POST", "/api/v1/admin/privacy/erase")
    def privacy_erase(env: Env, path: str) -> Call:
        return Call("POST", path, json={"entity": "contact", "record_id": env.create("contact")["id"]})

    @recipe("POST", "/api/v1/admin/privacy/retention")
    def privacy_retention(env: Env, path: str) -> Call:
        env.create("audit_probe", closed_on="2000-01-01")  # long past its 1-day retention
        return Call("POST", path, json={"entity": "audit_probe"})

    # -- automations and jobs ------------------------------------------------------------------
    @recipe("POST", "/api/v1/admin/automations")
    def create_automation(env: Env, path: str) -> Call:
        return Call("POST", path, json=env.automation_body(f"audit_auto_{env.n()}"))

    @recipe("PUT", "/api/v1/admin/automations/{name}")
    def replace_automation(env: Env, path: str) -> Call:
        name = env.automation()
        return Call("PUT", path.format(name=name), json=env.automation_body(name, trigger={"on": "updated"}))

    @recipe("DELETE", "/api/v1/admin/automations/{name}")
    def delete_automation(env: Env, path: str) -> Call:
        return Call("DELETE", path.format(name=env.automation()))

    @recipe("POST", "/api/v1/admin/jobs/{job_id}/retry")
    def retry_job(env: Env, path: str) -> Call:
        return Call("POST", path.format(job_id=env.dead_job()))

    # -- connection roles -------------------------------------------------------------------------
    @recipe("POST", "/api/v1/_connection_roles")
    def create_connection_role(env: Env, path: str) -> Call:
        return Call("POST", path, json={"name": f"audit_role_{env.n()}", "label": {"en": "advisor of"}, "inverse_label": {"en": "advised by"}})

    @recipe("DELETE", "/api/v1/_connection_roles/{name}")
    def delete_connection_role(env: Env, path: str) -> Call:
        name = f"audit_role_{env.n()}"
        env.api("POST", "/api/v1/_connection_roles", 201, json={"name": name, "label": {"en": "partner of"}})
        return Call("DELETE", path.format(name=name))

    # -- the assistant: a question is logged (docs/assistant.md) ---------------------------------
    @recipe("POST", "/api/v1/_assistant/ask")
    def ask_assistant(env: Env, path: str) -> Call:
        return Call("POST", path, json={"question": "How many accounts are there?"}, expect="assistant.asked")

    return r


def _segments_match(handler_path: str, spec_path: str) -> bool:
    a, b = handler_path.strip("/").split("/"), spec_path.strip("/").split("/")
    return len(a) == len(b) and all(x == y or x.startswith("{") or y.startswith("{") for x, y in zip(a, b))


def _write_handlers(client: Any) -> list[tuple[str, str]]:
    """(method, path) of every route handler of the app that may change something."""
    found = []
    for route in client.app.routes:
        for handler in getattr(route, "route_handlers", []):
            for method in sorted(set(getattr(handler, "http_methods", ())) - SAFE_METHODS):
                found.append((method, route.path))
    return sorted(set(found))


def test_every_write_operation_of_the_openapi_document_leaves_an_audit_row_of_the_acting_user(app: Any) -> None:
    env = Env(app, "root")
    operations = []
    for path, item in env.spec["paths"].items():
        for method in item:
            if method.upper() in {"POST", "PUT", "PATCH", "DELETE"}:
                template, context = _template(path, env.entities)
                operations.append((method.upper(), template, context))
    # Every write handler under /api is in the document (else this walk could not see it).
    undocumented = [f"{m} {p}" for m, p in _write_handlers(app) if p.startswith("/api/")
                    and not any(m == om and _segments_match(p, ctx["path"]) for om, _, ctx in operations)]

    started = time.monotonic()
    checked, problems = walk(env, operations, _api_recipes(), lambda call: app.request(
        call.method, call.path, json=call.json, content=call.content, params=call.params, follow_redirects=False,
        headers={**(env.auth if call.bearer else {}), **call.headers}))
    print(f"\nAPI: {len(operations)} write operations, {len(checked)} exercised with audit check, "
          f"{len(problems)} problems, {time.monotonic() - started:.1f}s")
    problems += [f"{u}: a write handler missing from /api/openapi.json (the walk cannot see it)" for u in undocumented]
    assert len(operations) > 150 and len(checked) > 150
    assert not problems, f"{len(problems)} write operation(s) of the API without their audit row:\n" + "\n".join(problems)


# == the web UI =======================================================================================
def _form_of(html: str, form_id: str) -> list[tuple[str, str]]:
    fields = form_controls(html, form_id)
    if not fields:
        raise Unprepared(f"no form #{form_id} on the page")
    return fields


class Ui(Env):
    """The UI walk's state: a logged-in admin session (its CSRF token) besides the API token."""

    def __init__(self, client: Any, actor: str) -> None:
        super().__init__(client, actor)
        self.log_in()

    def log_in(self) -> None:
        self.client.cookies.clear()
        response = self.client.post("/login", data={"name": self.actor, "password": PASSWORD, "next": "/"}, follow_redirects=False)
        assert response.status_code == 303, response.text
        self.refresh_csrf()

    def refresh_csrf(self) -> None:
        self.csrf = csrf(self.client.get("/").text)

    def upload(self, entity: str) -> str:
        """Step 1 of the import wizard: the job id."""
        response = self.client.post(f"/e/{entity}/import", data={"csrf_token": self.csrf}, follow_redirects=False,
                                    files={"file": ("walk.csv", f"name\nImported {self.n()} AG\n".encode(), "text/csv")})
        if response.status_code != 303:
            raise Unprepared(f"upload: {response.status_code} {response.text[:200]}")
        return response.headers["location"].rstrip("/").split("/")[-1]  # /e/{entity}/import/{job_id}

    def mapped(self, entity: str) -> str:
        """Steps 1-3: uploaded, mapped (column 0 -> name) and checked."""
        job_id = self.upload(entity)
        response = self.client.post(f"/e/{entity}/import/{job_id}/check", data={"csrf_token": self.csrf, "map.0": "name"})
        if response.status_code != 200:
            raise Unprepared(f"import check: {response.status_code} {response.text[:200]}")
        return job_id


def _ui_recipes() -> dict[tuple[str, str], Callable[..., Call]]:
    r: dict[tuple[str, str], Callable[..., Call]] = {}

    def recipe(path: str, method: str = "POST") -> Callable[[Callable[..., Call]], Callable[..., Call]]:
        def register(fn: Callable[..., Call]) -> Callable[..., Call]:
            r[(method, path)] = fn
            return fn

        return register

    # -- session --------------------------------------------------------------------------
    @recipe("/login")
    def login(ui: Ui) -> Call:
        return Call("POST", "/login", data={"name": ui.actor, "password": PASSWORD, "next": "/"}, csrf=False, after=ui.refresh_csrf)

    @recipe("/logout")
    def logout(ui: Ui) -> Call:
        return Call("POST", "/logout", after=ui.log_in)

    @recipe("/language")
    def language(ui: Ui) -> Call:
        return Call("POST", "/language", data={"language": "en", "next": "/"})

    # -- records ----------------------------------------------------------------------------
    @recipe("/e/{entity:str}/new")
    def create(ui: Ui) -> Call:
        return Call("POST", "/e/account/new", data={"name": f"UI account {ui.n()}"})

    @recipe("/e/{entity:str}/{record_id:uuid}/edit")
    def edit(ui: Ui) -> Call:
        record = ui.create("account")
        return Call("POST", f"/e/account/{record['id']}/edit", data={"name": f"Edited {ui.n()}", "version": str(record["version"])})

    @recipe("/e/{entity:str}/{record_id:uuid}/delete")
    def delete(ui: Ui) -> Call:
        return Call("POST", f"/e/account/{ui.create('account')['id']}/delete")

    @recipe("/e/{entity:str}/{record_id:uuid}/restore")
    def restore(ui: Ui) -> Call:
        key = ui.create("account")["id"]
        ui.api("DELETE", f"/api/v1/account/{key}")
        return Call("POST", f"/e/account/{key}/restore")

    @recipe("/e/{entity:str}/{record_id:uuid}/move")
    def move(ui: Ui) -> Call:
        deal = ui.create("deal")
        return Call("POST", f"/e/deal/{deal['id']}/move", data={"field": "stage", "value": "qualification", "version": str(deal["version"])})

    @recipe("/e/{entity:str}/bulk")
    def bulk(ui: Ui) -> Call:
        return Call("POST", "/e/account/bulk", data={"action": "delete", "ids": [ui.create("account")["id"]], "back": ""})

    @recipe("/e/{entity:str}/{record_id:uuid}/transitions/{name:str}")
    def transition(ui: Ui) -> Call:
        key = ui.create("ticket")["id"]
        name, needs, version = ui.transition("ticket", key)
        return Call("POST", f"/e/ticket/{key}/transitions/{name}", data={**needs, "version": str(version)}, expect="workflow.transition")

    @recipe("/e/{entity:str}/{record_id:uuid}/convert")
    def convert(ui: Ui) -> Call:
        lead = ui.create("lead", company=f"UI converted {ui.n()} AG")
        return Call("POST", f"/e/lead/{lead['id']}/convert", data={"title": "From the UI walk"})

    @recipe("/e/{entity:str}/{record_id:uuid}/refresh-members")
    def refresh(ui: Ui) -> Call:
        ui.create("contact")
        _, segment = ui.saved_view("contact")
        return Call("POST", f"/e/campaign/{ui.create('campaign', segment=segment)['id']}/refresh-members")

    # -- saved views --------------------------------------------------------------------------
    @recipe("/e/{entity:str}/views")
    def save_view(ui: Ui) -> Call:
        return Call("POST", "/e/account/views", data={"name": f"UI view {ui.n()}", "query": "q=audit", "shared": "on"})

    @recipe("/e/{entity:str}/views/{view_id:uuid}/delete")
    def delete_view(ui: Ui) -> Call:
        key, _ = ui.saved_view("account", "q=audit")
        return Call("POST", f"/e/account/views/{key}/delete")

    # -- import wizard ----------------------------------------------------------------------------
    @recipe("/e/{entity:str}/import")
    def upload(ui: Ui) -> Call:
        return Call("POST", "/e/account/import", files={"file": ("walk.csv", b"name\nWalk AG\n", "text/csv")})

    @recipe("/e/{entity:str}/import/{job_id:str}/check")
    def check(ui: Ui) -> Call:
        return Call("POST", f"/e/account/import/{ui.upload('account')}/check", data={"map.0": "name"})

    @recipe("/e/{entity:str}/import/{job_id:str}/run")
    def run(ui: Ui) -> Call:
        from xrm.webui.views_import import _jobs

        job_id = ui.mapped("account")

        def settle() -> None:  # the import runs in a task the request starts; its rows are the request's effect
            deadline = time.monotonic() + 20
            while not _jobs.get(job_id, {}).get("done"):
                assert time.monotonic() < deadline, "the UI import did not finish"
                time.sleep(0.02)

        return Call("POST", f"/e/account/import/{job_id}/run", settle=settle)

    # -- relationships --------------------------------------------------------------------------------
    @recipe("/r/{entity:str}/{record_id:uuid}/links/{link:str}")
    def add_link(ui: Ui) -> Call:
        project, contact = ui.create("audit_probe"), ui.create("contact")
        return Call("POST", f"/r/audit_probe/{project['id']}/links/members", data={"target": contact["id"], "attr__role": "member"})

    @recipe("/r/{entity:str}/{record_id:uuid}/links/{link:str}/{link_id:uuid}/remove")
    def remove_link(ui: Ui) -> Call:
        key = ui.create("audit_probe")["id"]
        return Call("POST", f"/r/audit_probe/{key}/links/members/{ui.link('audit_probe', key, 'members')}/remove")

    @recipe("/r/{entity:str}/{record_id:uuid}/connections")
    def add_connection(ui: Ui) -> Call:
        key, other = ui.create("contact")["id"], ui.create("account")["id"]
        return Call("POST", f"/r/contact/{key}/connections", data={"choice": f"{ui.connection_role}|forward|account", "other_id": other})

    @recipe("/r/{entity:str}/{record_id:uuid}/connections/{link_id:uuid}/remove")
    def remove_connection(ui: Ui) -> Call:
        key = ui.create("contact")["id"]
        return Call("POST", f"/r/contact/{key}/connections/{ui.connect('contact', key)}/remove")

    @recipe("/admin/connection-roles")
    def create_connection_role(ui: Ui) -> Call:
        return Call("POST", "/admin/connection-roles", data={"name": f"ui_role_{ui.n()}", "label_en": "mentor of", "inverse_label_en": "mentored by"})

    @recipe("/admin/connection-roles/{name:str}/delete")
    def delete_connection_role(ui: Ui) -> Call:
        name = f"ui_role_{ui.n()}"
        ui.api("POST", "/api/v1/_connection_roles", 201, json={"name": name, "label": {"en": "partner of"}})
        return Call("POST", f"/admin/connection-roles/{name}/delete")

    # -- users, roles, teams, tokens ---------------------------------------------------------------------
    @recipe("/admin/users/create")
    def create_user(ui: Ui) -> Call:
        return Call("POST", "/admin/users/create", data={"name": f"uiuser{ui.n()}", "password": PASSWORD, "roles": ["sales"]})

    @recipe("/admin/users/grant-role")
    def grant_role(ui: Ui) -> Call:
        return Call("POST", "/admin/users/grant-role", data={"user": ui.other, "role": ui.role()})

    @recipe("/admin/users/revoke-role")
    def revoke_role(ui: Ui) -> Call:
        role = ui.role()
        ui.api("PUT", f"/api/v1/admin/users/{ui.other}/roles/{role}")
        return Call("POST", "/admin/users/revoke-role", data={"user": ui.other, "role": role})

    @recipe("/admin/users/unlock")
    def unlock(ui: Ui) -> Call:
        return Call("POST", "/admin/users/unlock", data={"user": ui.other})

    @recipe("/admin/teams/create")
    def create_team(ui: Ui) -> Call:
        return Call("POST", "/admin/teams/create", data={"name": f"UI team {ui.n()}"})

    @recipe("/admin/teams/move")
    def move_team(ui: Ui) -> Call:
        return Call("POST", "/admin/teams/move", data={"team": ui.team(), "parent": ui.team()})

    @recipe("/admin/teams/delete")
    def delete_team(ui: Ui) -> Call:
        return Call("POST", "/admin/teams/delete", data={"team": ui.team()})

    @recipe("/admin/teams/add-member")
    def add_member(ui: Ui) -> Call:
        return Call("POST", "/admin/teams/add-member", data={"team": ui.team(), "user": ui.other})

    @recipe("/admin/teams/remove-member")
    def remove_member(ui: Ui) -> Call:
        team = ui.team()
        ui.api("PUT", f"/api/v1/admin/teams/{team}/members/{ui.other}")
        return Call("POST", "/admin/teams/remove-member", data={"team": team, "user": ui.other})

    @recipe("/admin/roles/create")
    def create_role(ui: Ui) -> Call:
        return Call("POST", "/admin/roles/create", data={"name": f"ui_role_{ui.n()}", "description": "walked"})

    @recipe("/admin/roles/delete")
    def delete_role(ui: Ui) -> Call:
        return Call("POST", "/admin/roles/delete", data={"role": ui.role()})

    @recipe("/admin/roles/grants")
    def save_grants(ui: Ui) -> Call:
        return Call("POST", "/admin/roles/grants", data={"role": ui.role(), "grant.account.read": "all"})

    @recipe("/admin/roles/field-grants")
    def save_field_grants(ui: Ui) -> Call:
        return Call("POST", "/admin/roles/field-grants", data={"role": ui.role(), "field.account.annual_revenue": "read"})

    @recipe("/account/tokens/create")
    def create_token(ui: Ui) -> Call:
        return Call("POST", "/account/tokens/create", data={"label": f"walk {ui.n()}"})

    @recipe("/account/tokens/revoke")
    def revoke_token(ui: Ui) -> Call:
        from xrm.auth import UserService

        users = UserService(ui.client.app.state.platform.db)
        _, info = ui.client.blocking_portal.call(users.create_token, ui.actor, f"to revoke {ui.n()}")
        return Call("POST", "/account/tokens/revoke", data={"token_id": str(info.id)})

    # -- automations -----------------------------------------------------------------------------------------
    @recipe("/admin/automations/create")
    def create_automation(ui: Ui) -> Call:
        return Call("POST", "/admin/automations/create", data={
            "name": f"ui_auto_{ui.n()}", "entity": "account", "run_as": ui.other, "trigger": '{"on": "created"}', "condition": "[]",
            "actions": '[{"type": "set_fields", "values": {"city": "Audit"}}]'})

    @recipe("/admin/automations/toggle")
    def toggle_automation(ui: Ui) -> Call:
        return Call("POST", "/admin/automations/toggle", data={"name": ui.automation(), "enabled": "true"})

    @recipe("/admin/automations/delete")
    def delete_automation(ui: Ui) -> Call:
        return Call("POST", "/admin/automations/delete", data={"name": ui.automation()})

    @recipe("/admin/jobs/retry")
    def retry_job(ui: Ui) -> Call:
        return Call("POST", "/admin/jobs/retry", data={"job": str(ui.dead_job())})

    @recipe("/notifications/dismiss")
    def dismiss_notification(ui: Ui) -> Call:
        note = ui.sql_val("INSERT INTO xrm_sys.notification (user_id, title) VALUES ($1, 'audit coverage') RETURNING id", ui.actor_id)
        return Call("POST", "/notifications/dismiss", data={"id": str(note)})

    @recipe("/assistant/ask")
    def ask_assistant(ui: Ui) -> Call:
        return Call("POST", "/assistant/ask", data={"question": "How many accounts are there?"}, expect="assistant.asked")

    # -- the entity designer: its one POST, with the button that changes something (apply) ----------------------
    @recipe("/admin/designer/draft")
    def designer_apply(ui: Ui) -> Call:
        def click(pairs: list[tuple[str, str]], action: str, **changes: str) -> Any:
            data = [(k, v) for k, v in pairs if k not in changes] + list(changes.items()) + [("action", action)]
            response = ui.client.post("/admin/designer/draft", content=urlencode(data), follow_redirects=False,
                                      headers={"Content-Type": "application/x-www-form-urlencoded"})
            if response.status_code != 200:
                raise Unprepared(f"designer {action}: {response.status_code} {response.text[:300]}")
            return response

        page = ui.client.get("/admin/designer/audit_probe/edit")
        if page.status_code != 200:
            raise Unprepared(f"designer page: {page.status_code}")
        added = click(_form_of(page.text, "designer"), "add", new_field_name=f"walked_{ui.n()}", new_field_type="text")
        planned = click(_form_of(added.text, "designer"), "plan")
        pairs = _form_of(planned.text, "designer")
        return Call("POST", "/admin/designer/draft", content=urlencode(pairs + [("action", "apply")]), csrf=False,
                    headers={"Content-Type": "application/x-www-form-urlencoded"})

    return r


def test_every_write_route_of_the_web_ui_leaves_an_audit_row_of_the_acting_user(app: Any) -> None:
    ui = Ui(app, "admin")
    operations = [(method, path, {}) for method, path in _write_handlers(app) if not path.startswith("/api/")]

    def send(call: Call) -> Any:
        data = call.data
        if call.csrf and call.content is None:
            data = {**(data or {}), "csrf_token": ui.csrf}
        return app.request(call.method, call.path, data=data, files=call.files, content=call.content,
                           headers=call.headers, follow_redirects=False)

    started = time.monotonic()
    checked, problems = walk(ui, operations, _ui_recipes(), send)
    print(f"\nUI: {len(operations)} write routes, {len(checked)} exercised, {len(problems)} problems, "
          f"{time.monotonic() - started:.1f}s")
    assert len(operations) > 40 and len(checked) > 40
    assert not problems, f"{len(problems)} write route(s) of the web UI without their audit row:\n" + "\n".join(problems)


