"""Web UI of the relationships plugin: detail-page panels, the graph, the tree page, link/connection forms, connection roles.

Templates live in webui/templates/ui/relationships/ and their German in
webui/locale/de/LC_MESSAGES/relationships.po, like every UI string.
Every POST carries the session's CSRF token (checked by page_of through
principal_of) and goes through Relationships, i.e. the one door's rules.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import uuid
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from litestar import Request, Response, get, post
from litestar.params import FromPath
from litestar.response import Redirect, Template
from markupsafe import Markup, escape

from xrm.errors import NotFound, PermissionDenied, ValidationFailed, XrmError
from xrm.plugins import Panel
from xrm.webui.context import page_of
from xrm.webui.i18n import translator

from .model import hierarchy_of
from .store import Relationships, display_of

__all__ = ["detail_panels", "ui_routes"]

TEMPLATES = Path(__import__("xrm.webui", fromlist=["__file__"]).__file__).resolve().parent / "templates"
GRAPH_LIMIT = 24


@cache
def _environment() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True)


def _render(template: str, language: str, **context: Any) -> Markup:
    t = translator(language)
    return Markup(_environment().get_template(template).render(_=t.gettext, ngettext=t.ngettext, **context))


def _shown_value(t: Any, value: Any) -> str:
    if value is None or value == "":
        return "—"
    if isinstance(value, bool):
        return t.gettext("Yes") if value else t.gettext("No")
    if isinstance(value, (int, decimal.Decimal)):
        return t.number(value)
    if isinstance(value, float):
        return t.number(decimal.Decimal(repr(value)))
    if isinstance(value, dt.datetime):
        return t.datetime(value)
    if isinstance(value, dt.date):
        return t.date(value)
    if isinstance(value, list):
        return " + ".join(t.money(item["amount"], item["currency"]) for item in value if item.get("amount") is not None) or "—"
    if isinstance(value, str) and len(value) == 10:
        try:
            return t.date(dt.date.fromisoformat(value))
        except ValueError:
            pass
    return str(value)


def rollups_shown(rel: Relationships, entity: str, computed: list[dict[str, Any]], language: str) -> list[dict[str, str]]:
    t = translator(language)
    compiled = rel.registry.get(entity)
    hierarchy = hierarchy_of(compiled.definition)
    by_name = {r.name: r for r in hierarchy.rollups} if hierarchy else {}
    shown = []
    for item in computed:
        rollup = by_name.get(item["name"])
        f = compiled.fields.get(item["field"]) if item["field"] else None
        label = rollup.label(language, f.label(language) if f else None) if rollup else item["name"]
        if rollup and not rollup.labels:
            words = {"sum": t.gettext("Total"), "count": t.gettext("Count"), "avg": t.gettext("Average"),
                     "min": t.gettext("Lowest"), "max": t.gettext("Highest")}
            label = f"{words[rollup.aggregate]}: {f.label(language)}" if f else t.gettext("Records below")
        shown.append({"label": label, "shown": _shown_value(t, item["value"])})
    return shown


# -- the graph ---------------------------------------------------------------------------
SECOND_PER_NODE = 4
"""Connections of each connected record the graph's second ring shows at most."""
SECOND_LIMIT = 24
"""Records in the second ring at most."""


async def second_ring(rel: Relationships, entity: str, record_id: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The connections of the connected records (readable ends only, bounded): one query per entity of the first ring.

    Each item: {"via": (entity, id) of the first-ring record, "connection": as `connections` gives it}; connections
    already drawn (to this record, or between two first-ring records seen twice) come once.
    """
    by_entity: dict[str, list[Any]] = {}
    for row in rows[:GRAPH_LIMIT]:
        by_entity.setdefault(row["other"]["entity"], []).append(row["other"]["id"])
    drawn = {row["id"] for row in rows}
    found: list[dict[str, Any]] = []
    for other_entity, ids in by_entity.items():
        if rel.records(other_entity).policy_scope("read") == "none":
            continue
        for here_id, items in (await rel.expand_connections(other_entity, ids, limit=SECOND_PER_NODE, with_records=False)).items():
            for item in items:
                if item["id"] in drawn:
                    continue
                drawn.add(item["id"])
                found.append({"via": (other_entity, here_id), "connection": item})
    return found


def graph_svg(center: str, edges: list[dict[str, Any]], entity_labels: dict[str, str], second: list[dict[str, Any]] | None = None,
              center_key: tuple[str, Any] | None = None) -> Markup:
    """`second`: [{"via": {"entity", "id"}, "connection": {..., "label": text}}] as detail_panels shows them.

    A small network picture: this record in the middle, each connected record around it, their own connections on
    a second ring; edges labelled with the role (seen from the inner end), ended ones dashed.

    Nodes are links to the records (so the picture is walked record by record), focusable, with hover titles;
    every text is escaped. The list and the table next to it say the same in text.
    """
    shown = edges[:GRAPH_LIMIT]
    second = second or []
    width = height = 600 if second else 420
    cx, cy = width / 2, height / 2
    inner = 140 if second else 150
    outer = 255
    parts = [Markup('<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {} {}" role="img" aria-labelledby="graph-title" '
                    'width="100%" style="max-width:{}px" class="graph">').format(width, height, width),
             Markup('<title id="graph-title">{}</title>').format(center)]
    positions: dict[tuple[str, str], tuple[float, float, float]] = {}
    if center_key is not None:
        positions[(center_key[0], str(center_key[1]))] = (cx, cy, 0.0)
    first = []
    for index, edge in enumerate(shown):
        key = (edge["other"]["entity"], str(edge["other"]["id"]))
        angle = 2 * math.pi * index / max(len(shown), 1) - math.pi / 2
        if key not in positions:
            positions[key] = (cx + inner * math.cos(angle), cy + inner * math.sin(angle), angle)
        first.append((positions[key], edge))
    # The second ring: each new record fanned out around the first-ring record it hangs off.
    outer_nodes: list[tuple[tuple[str, str], dict[str, Any], dict[str, Any]]] = []
    chords = []
    children: dict[tuple[str, str], list[tuple[tuple[str, str], dict[str, Any]]]] = {}
    for item in second:
        via = (item["via"]["entity"], str(item["via"]["id"]))
        other = item["connection"]["other"]
        key = (other["entity"], str(other["id"]))
        if via not in positions:
            continue
        if key in positions:
            chords.append((via, key, item["connection"]))
        elif len(outer_nodes) < SECOND_LIMIT and key not in {k for k, _, _ in outer_nodes}:
            outer_nodes.append((key, other, item["connection"]))
            children.setdefault(via, []).append((key, item["connection"]))
        else:
            chords.append((via, key, item["connection"]))
    spread = 2 * math.pi / max(len(shown), 1) * 0.8
    for via, kids in children.items():
        base = positions[via][2]
        for position, (key, _) in enumerate(kids):
            offset = 0 if len(kids) == 1 else spread * (position / (len(kids) - 1) - 0.5)
            angle = base + offset
            positions[key] = (cx + outer * math.cos(angle), cy + outer * math.sin(angle), angle)
    via_of = {key: via for via, kids in children.items() for key, _ in kids}

    def line(a: tuple[float, float, float], b: tuple[float, float, float], active: bool, css: str) -> Markup:
        return Markup('<line x1="{:.0f}" y1="{:.0f}" x2="{:.0f}" y2="{:.0f}" class="{}" stroke="#8899aa" stroke-width="1.5"{}/>').format(
            a[0], a[1], b[0], b[1], css, Markup(' stroke-dasharray="4 3"') if not active else Markup(""))

    for (x, y, _), edge in first:
        parts.append(line((cx, cy, 0), (x, y, 0), edge.get("active", True), "edge"))
        parts.append(Markup('<text x="{:.0f}" y="{:.0f}" font-size="11" text-anchor="middle" fill="#445566">{}</text>').format(
            (cx + x) / 2, (cy + y) / 2 - 3, _short(edge["label"], 24)))
    for key, _, connection in outer_nodes:
        parts.append(line(positions[via_of[key]], positions[key], connection.get("active", True), "edge second"))
    for a, b, connection in chords:
        if a in positions and b in positions:
            parts.append(line(positions[a], positions[b], connection.get("active", True), "edge chord"))
    parts.append(Markup('<g class="node center"><circle cx="{:.0f}" cy="{:.0f}" r="30" fill="#1e6fd9"/>'
                        '<text x="{:.0f}" y="{:.0f}" font-size="12" text-anchor="middle" fill="#ffffff">{}</text></g>').format(
        cx, cy, cx, cy + 4, _short(center, 14)))
    drawn: set[tuple[str, str]] = set()
    for (x, y, _), edge in first:
        other = edge["other"]
        key = (other["entity"], str(other["id"]))
        if key in drawn:
            continue
        drawn.add(key)
        title = f"{other['display']} ({entity_labels.get(other['entity'], other['entity'])}) — {edge['label']}"
        parts.append(Markup('<a href="/e/{}/{}"><title>{}</title><g class="node"><circle cx="{:.0f}" cy="{:.0f}" r="22" fill="#e8f0fb" stroke="#1e6fd9"/>'
                            '<text x="{:.0f}" y="{:.0f}" font-size="11" text-anchor="middle" fill="#1e3a5f">{}</text></g></a>').format(
            other["entity"], other["id"], title, x, y, x, y + 36, _short(other["display"], 22)))
    for key, other, connection in outer_nodes:
        x, y, _ = positions[key]
        title = f"{other['display']} ({entity_labels.get(other['entity'], other['entity'])}) — {connection['label']}"
        parts.append(Markup('<a href="/e/{}/{}"><title>{}</title><g class="node outer"><circle cx="{:.0f}" cy="{:.0f}" r="14" fill="#f4f6f9" stroke="#8899aa"/>'
                            '<text x="{:.0f}" y="{:.0f}" font-size="10" text-anchor="middle" fill="#445566">{}</text></g></a>').format(
            other["entity"], other["id"], title, x, y, x, y + 26, _short(other["display"], 18)))
    parts.append(Markup("</svg>"))
    return Markup("").join(parts)


def _short(text: str, length: int) -> str:
    text = str(text)
    return text if len(text) <= length else text[: length - 1] + "…"


# -- panels ---------------------------------------------------------------------------------
async def detail_panels(entity: str, record: dict[str, Any], principal: Any, language: str, platform: Any) -> list[Panel]:
    if record.get("deleted_at") or entity not in platform.registry:
        return []
    rel = Relationships(platform, principal)
    t = translator(language)
    record_id = record["id"]
    service = rel.records(entity)
    may_change = "update" in await service.allowed_actions(record_id, ("update",))
    panels: list[Panel] = []
    labels = {e.name: e.definition.label(language) for e in platform.registry}
    # Many-to-many links, each its own panel.
    for link, inverse in rel.links_for(entity):
        other_entity = link.source if inverse else link.target
        if other_entity not in platform.registry or service.policy_scope("read") == "none":
            continue
        if rel.records(other_entity).policy_scope("read") == "none":
            continue
        name = link.inverse_name if inverse else link.name
        rows = await rel.list_links(entity, record_id, name)
        attributes = []
        for attr, schema in link.attributes.items():
            kind = schema.get("type")
            attributes.append({
                "name": attr, "label": link.attribute_label(attr, language), "required": attr in (link.spec.get("required") or []),
                "options": schema.get("enum"),
                "input": "checkbox" if kind == "boolean" else "number" if kind in ("integer", "number") else
                         "date" if schema.get("format") == "date" else "email" if schema.get("format") == "email" else "text",
            })
        for row in rows:
            row["shown"] = {a["name"]: _shown_value(t, row["attributes"].get(a["name"])) for a in attributes}
        html = _render("ui/relationships/links.html", language, entity=entity, record_id=record_id, name=name, rows=rows,
                       attributes=attributes, other_entity=other_entity, other_label=labels[other_entity],
                       may_change=may_change)
        panels.append(Panel(f"{link.label(language, inverse=inverse)} ({len(rows)})", html, order=50))
    # Connections, with the graph.
    rows = await rel.connections(entity, record_id)
    for row in rows:
        row["label"] = row["label"].get(language) or row["label"]["en"]
        row["entity_label"] = labels.get(row["other"]["entity"], row["other"]["entity"])
        row["valid_from"] = t.date(row["valid_from"]) if row["valid_from"] else None
        row["valid_until"] = t.date(row["valid_until"]) if row["valid_until"] else None
    name = display_of(platform.registry.get(entity), record)
    choices = await _choices(rel, entity, language) if may_change else []
    second = await second_ring(rel, entity, record_id, rows) if rows else []
    first_names = {(row["other"]["entity"], str(row["other"]["id"])): row["other"]["display"] for row in rows}
    further = []
    for item in second:
        connection = item["connection"]
        label = connection["label"].get(language) or connection["label"]["en"]
        connection = {**connection, "label": label, "entity_label": labels.get(connection["other"]["entity"], connection["other"]["entity"])}
        via_entity, via_id = item["via"]
        further.append({"via": {"entity": via_entity, "id": via_id, "display": first_names.get((via_entity, str(via_id)), "")},
                        "connection": connection})
    html = _render("ui/relationships/connections.html", language, entity=entity, record_id=record_id, rows=rows, name=name,
                   graph=graph_svg(name, rows, labels, further, (entity, record_id)) if rows else "", further=further,
                   choices=choices, may_change=may_change, p_is_admin="admin" in principal.roles)
    if rows or choices or "admin" in principal.roles:
        panels.append(Panel(f"{t.gettext('Connections')} ({len(rows)})", html, order=60))
    # Hierarchy.
    hierarchy = hierarchy_of(platform.registry.get(entity).definition)
    if hierarchy is not None:
        tree = await rel.tree(entity, record_id)
        html = _render("ui/relationships/hierarchy.html", language, entity=entity, record_id=record_id, name=name,
                       ancestors=tree["ancestors"], below=tree["count"] - 1,
                       rollups=rollups_shown(rel, entity, tree["rollups"], language))
        panels.append(Panel(t.gettext("Hierarchy"), html, order=40))
    return panels


async def _choices(rel: Relationships, entity: str, language: str) -> list[tuple[str, str]]:
    """(value "role|direction|entity", label "advisor of → Account") for the add-connection form."""
    choices = []
    readable = [e for e in rel.registry if rel.records(e.name).policy_scope("read") != "none"]
    for role in await rel.roles():
        for direction, here_key, there_key, label_key in (("forward", "source_entities", "target_entities", "label"),
                                                          ("reverse", "target_entities", "source_entities", "inverse_label")):
            if role[here_key] and entity not in role[here_key]:
                continue
            if direction == "reverse" and role["label"] == role["inverse_label"] and not role["source_entities"] and not role["target_entities"]:
                continue  # a symmetric role: one direction is enough
            label = role[label_key].get(language) or role[label_key]["en"]
            for other in readable:
                if role[there_key] and other.name not in role[there_key]:
                    continue
                choices.append((f"{role['name']}|{direction}|{other.name}", f"{label} → {other.definition.label(language)}"))
    return choices


# -- routes ---------------------------------------------------------------------------------
def _refusal(page: Any, error: ValidationFailed) -> XrmError:
    return XrmError("; ".join(p.message for p in error.problems) or error.message)


@post("/r/{entity:str}/{record_id:uuid}/links/{link:str}", status_code=303)
async def add_link(request: Request[Any, Any, Any], entity: FromPath[str], record_id: FromPath[uuid.UUID], link: FromPath[str]) -> Response[Any]:
    page = await page_of(request)
    rel = Relationships(page.platform, page.principal)
    definition, _ = rel.link(entity, link)
    form = await request.form()
    attributes: dict[str, Any] = {}
    for name, schema in definition.attributes.items():
        raw = form.get(f"attr__{name}")
        if schema.get("type") == "boolean":
            attributes[name] = raw == "true"
            continue
        if raw is None or str(raw).strip() == "":
            continue
        raw = str(raw).strip()
        try:
            attributes[name] = int(raw) if schema["type"] == "integer" else float(raw.replace(",", ".")) if schema["type"] == "number" else raw
        except ValueError:
            attributes[name] = raw  # the validator names the problem
    try:
        await rel.create_link(entity, record_id, link, {"target": form.get("target") or "", "attributes": attributes})
    except ValidationFailed as error:
        raise _refusal(page, error) from None
    return Redirect(f"/e/{entity}/{record_id}", status_code=303)


@post("/r/{entity:str}/{record_id:uuid}/links/{link:str}/{link_id:uuid}/remove", status_code=303)
async def remove_link(request: Request[Any, Any, Any], entity: FromPath[str], record_id: FromPath[uuid.UUID], link: FromPath[str],
                      link_id: FromPath[uuid.UUID]) -> Response[Any]:
    page = await page_of(request)
    await Relationships(page.platform, page.principal).remove(entity, record_id, link_id, kind="link", name=link)
    return Redirect(f"/e/{entity}/{record_id}", status_code=303)


@post("/r/{entity:str}/{record_id:uuid}/connections", status_code=303)
async def add_connection(request: Request[Any, Any, Any], entity: FromPath[str], record_id: FromPath[uuid.UUID]) -> Response[Any]:
    page = await page_of(request)
    form = await request.form()
    role, direction, other = (str(form.get("choice") or "").split("|") + ["", "", ""])[:3]
    body = {"role": role, "direction": direction or "forward", "other_entity": other, "other_id": form.get("other_id") or "",
            "valid_from": form.get("valid_from") or None, "valid_until": form.get("valid_until") or None}
    try:
        await Relationships(page.platform, page.principal).connect(entity, record_id, body)
    except ValidationFailed as error:
        raise _refusal(page, error) from None
    return Redirect(f"/e/{entity}/{record_id}", status_code=303)


@post("/r/{entity:str}/{record_id:uuid}/connections/{link_id:uuid}/remove", status_code=303)
async def remove_connection(request: Request[Any, Any, Any], entity: FromPath[str], record_id: FromPath[uuid.UUID],
                            link_id: FromPath[uuid.UUID]) -> Response[Any]:
    page = await page_of(request)
    await Relationships(page.platform, page.principal).remove(entity, record_id, link_id, kind="connection")
    return Redirect(f"/e/{entity}/{record_id}", status_code=303)


@get("/r/lookup")
async def connection_lookup(request: Request[Any, Any, Any]) -> Template:
    """Search-as-you-type for the add-connection form: the entity comes from the chosen role option."""
    page = await page_of(request)
    parts = (request.query_params.get("choice") or "").split("|")
    entity = parts[2] if len(parts) == 3 else ""
    compiled = page.platform.registry.get(entity)
    text = (request.query_params.get("other_id__search") or "").strip()[:200].replace("\x00", "")
    name = compiled.definition.display_field
    service = page.records(entity)
    if text and name:
        found = await service.list(where=[(name, "contains", text)], order_by=[name], limit=10)
    else:
        found = await service.list(search=text or None, limit=10)
    return page.render("ui/_lookup.html", entity=compiled, field="other_id", records=found.records, display=display_of, text=text)


@get("/r/{entity:str}/{record_id:uuid}/tree")
async def tree_page(request: Request[Any, Any, Any], entity: FromPath[str], record_id: FromPath[uuid.UUID]) -> Template:
    page = await page_of(request)
    rel = Relationships(page.platform, page.principal)
    compiled = page.platform.registry.get(entity)
    tree = await rel.tree(entity, record_id)
    return page.render("ui/relationships/tree.html", entity=compiled, current_entity=entity, current=tree["root"]["id"],
                       name=tree["root"]["display"], tree=tree, rollups=rollups_shown(rel, entity, tree["rollups"], page.language))


@get("/admin/connection-roles")
async def roles_page(request: Request[Any, Any, Any]) -> Template:
    page = await page_of(request)
    if not page.is_admin:
        raise PermissionDenied(page.t.gettext("Only admins manage connection roles."))
    return page.render("ui/relationships/roles.html", roles=await Relationships(page.platform, page.principal).roles(),
                       entities=list(page.platform.registry), error=None)


@post("/admin/connection-roles", status_code=303)
async def create_role(request: Request[Any, Any, Any]) -> Response[Any] | Template:
    page = await page_of(request)
    rel = Relationships(page.platform, page.principal)
    form = await request.form()

    def label(prefix: str) -> dict[str, str] | None:
        values = {lang: str(form.get(f"{prefix}_{lang}") or "").strip() for lang in ("en", "de")}
        return {k: v for k, v in values.items() if v} or None

    body = {"name": str(form.get("name") or "").strip(), "label": label("label") or {"en": ""}}
    if label("inverse_label"):
        body["inverse_label"] = label("inverse_label")
    for key in ("source_entities", "target_entities"):
        chosen = [str(v) for v in form.getall(key, []) if v]
        if chosen:
            body[key] = chosen
    try:
        await rel.create_role(body)
    except ValidationFailed as error:
        return page.render("ui/relationships/roles.html", status_code=422, roles=await rel.roles(), entities=list(page.platform.registry),
                           error="; ".join(f"{p.pointer.strip('/')}: {p.message}" for p in error.problems))
    return Redirect("/admin/connection-roles", status_code=303)


@post("/admin/connection-roles/{name:str}/delete", status_code=303)
async def delete_role(request: Request[Any, Any, Any], name: FromPath[str]) -> Response[Any] | Template:
    page = await page_of(request)
    rel = Relationships(page.platform, page.principal)
    try:
        await rel.delete_role(name)
    except ValidationFailed as error:
        return page.render("ui/relationships/roles.html", status_code=422, roles=await rel.roles(), entities=list(page.platform.registry),
                           error="; ".join(p.message for p in error.problems))
    return Redirect("/admin/connection-roles", status_code=303)


ui_routes = [add_link, remove_link, add_connection, remove_connection, connection_lookup, tree_page, roles_page, create_role, delete_role]
