"""Built-in plugin "relationships": many-to-many links with attributes, hierarchies with roll-ups,
any-to-any connections with named roles, and delete behaviours of reference fields.

Everything arrives through the public hooks (docs/plugins.md); docs/relationships.md
describes the definition keywords, the API, the UI and the rules.
"""

from __future__ import annotations

from typing import Any

from xrm.plugins import Expansion, MenuEntry, RelationshipType, hookimpl

from . import model

__all__: list[str] = []


@hookimpl
def xrm_capabilities() -> dict[str, Any]:
    return {"reads": ["*"], "writes": ["*"], "network": False,
            "description": "Many-to-many links with attributes, hierarchies with roll-ups, connections with roles, delete behaviours"}


@hookimpl
def xrm_definition_vocabulary() -> dict[str, Any]:
    return model.vocabulary()


@hookimpl
def xrm_check_definition(definition: Any, known_entities: Any) -> list[Any]:
    return model.check_definition(definition, known_entities)


@hookimpl
def xrm_relationship_types() -> list[RelationshipType]:
    return [
        RelationshipType("lookup", {"en": "Many-to-one reference", "de": "Verweis (n:1)"}, description="a reference field"),
        RelationshipType("link", {"en": "Many-to-many link", "de": "Verknüpfung (n:m)"}, description="x-xrm links, with attributes"),
        RelationshipType("hierarchy", {"en": "Hierarchy", "de": "Hierarchie"}, description="x-xrm hierarchy: parent/child, roll-ups"),
        RelationshipType("connection", {"en": "Connection", "de": "Beziehung"}, description="any-to-any, with roles and validity dates"),
    ]


@hookimpl
def xrm_import_targets(registry: Any) -> list[Any]:
    """`_connections` and `<entity>.<link>` for xrm import, POST /api/v1/{name}/_import and the import wizard."""
    from .transfer import import_targets

    return import_targets(registry)


@hookimpl
def xrm_startup(platform: Any) -> Any:
    """Other plugins' relationship types become connection roles (created or updated, marked as theirs)."""
    from .store import sync_plugin_roles

    return sync_plugin_roles(platform.db, platform.registry)


@hookimpl
def xrm_record_expansions(entity: str, registry: Any) -> list[Expansion]:
    """`?expand=connections` and `?expand=<link name>` (own and inverse links) on the entity's records."""
    from .store import EXPAND_LIMIT, Door, Relationships

    def relationships(service: Any) -> Relationships:
        # The caller's RecordService carries the db, registry, policy and principal: the same door, the same rights.
        return Relationships(Door(service.db, service.registry, service.policy), service.principal)

    def links_loader(name: str) -> Any:
        return lambda service, ids: relationships(service).expand_links(service.name, name, ids)

    expansions = [Expansion("connections", lambda service, ids: relationships(service).expand_connections(service.name, ids),
                            f"Connections, both directions, with the other record (at most {EXPAND_LIMIT} per record)")]
    seen = {"connections"}
    for inverse in (False, True):  # own link names win over inverse names (as resolve_link decides)
        for link in model.link_definitions(registry):
            if (link.target if inverse else link.source) != entity:
                continue
            name = link.inverse_name if inverse else link.name
            if name in seen:
                continue
            seen.add(name)
            other = link.source if inverse else link.target
            expansions.append(Expansion(name, links_loader(name),
                                        f"{link.label('en', inverse=inverse)}: linked {other} records with the link's attributes (at most {EXPAND_LIMIT} per record)"))
    return expansions


@hookimpl
def xrm_redact(connection: Any, record_ids: list[Any], needles: list[str], purged: bool) -> Any:
    """Erasure and retention: links of records deleted for good go; link attributes lose erased values."""

    async def redact() -> int:
        from xrm.privacy.redaction import like_patterns, redact_text

        changed = 0
        if purged and record_ids:
            status = await connection.execute(
                "DELETE FROM xrm_sys.record_link WHERE source_id = ANY($1::uuid[]) OR target_id = ANY($1::uuid[])", record_ids)
            changed += int(status.split()[-1])
        patterns = like_patterns(needles)
        if patterns:
            rows = await connection.fetch(
                "SELECT id, attributes FROM xrm_sys.record_link WHERE lower(attributes::text) LIKE ANY($1::text[])", patterns)
            await connection.executemany("UPDATE xrm_sys.record_link SET attributes = $2 WHERE id = $1",
                                         [(row["id"], redact_text(row["attributes"], needles)) for row in rows])
            changed += len(rows)
        return changed

    return redact()


@hookimpl
def xrm_after_write(entity: str, action: str, record: Any, previous: Any, principal: Any, connection: Any,
                    db: Any, registry: Any) -> Any:
    from .writes import after_write

    return after_write(entity, action, record, previous, principal, connection, db, registry)


@hookimpl
def xrm_api_routes() -> list[Any]:
    from .api import api_routes

    return api_routes


@hookimpl
def xrm_openapi(registry: Any) -> dict[str, Any]:
    from .api import openapi

    return openapi(registry)


@hookimpl
def xrm_ui_routes() -> list[Any]:
    from .ui import ui_routes

    return ui_routes


@hookimpl
def xrm_detail_panels(entity: str, record: Any, principal: Any, language: str, platform: Any) -> Any:
    from .ui import detail_panels

    return detail_panels(entity, record, principal, language, platform)


@hookimpl
def xrm_menu_entries(principal: Any, language: str) -> list[MenuEntry]:
    if "admin" not in principal.roles:
        return []
    return [MenuEntry("Verbindungsrollen" if language == "de" else "Connection roles", "/admin/connection-roles", order=90)]
