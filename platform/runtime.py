"""Start-up shared by the CLI and the server: settings, database, registry."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from .db.database import Database, database_uri
from .errors import XrmError
from .records.principal import SYSTEM_PRINCIPAL, Principal
from .registry import Registry
from .schema.files import load_documents
from .schema.service import Plan, SchemaService
from .security.model import SecurityService
from .security.policy import RolePolicy
from .settings import Settings

__all__ = ["Platform", "open_platform"]

log = logging.getLogger("xrm")


@dataclass
class Platform:
    settings: Settings
    db: Database
    registry: Registry
    policy: RolePolicy
    """The role/team/sharing policy every API request's RecordService uses (xrm.security)."""

    @property
    def schema(self) -> SchemaService:
        return SchemaService(self.db, self.registry)

    def security(self, actor: Principal = SYSTEM_PRINCIPAL) -> SecurityService:
        """Roles, teams, shares and the explainer; changes reload self.policy."""
        return SecurityService(self.db, self.policy, self.registry, actor)

    async def emit(self, topic: str, payload: Mapping[str, Any] | None = None, *, entity: str | None = None,
                   record_id: Any = None, principal: Principal | None = None) -> int:
        """Write an outbox event (xrm.events.emit): in the transaction open in this task, else committed at once."""
        from .events import emit

        async with self.db.connection() as connection:
            return await emit(connection, topic, payload, entity=entity, record_id=record_id, principal=principal)

    async def load_schema_folder(self) -> tuple[Plan | None, str | None]:
        """Apply entity_schemas/*.json and the plugins' definitions (xrm_entity_definitions) at start, unless destructive.

        One schema change for both, so a plugin's entity may reference one of
        the folder's. Returns the plan applied (or None) and a warning when
        something was held back.
        """
        from .plugins import get_plugin_manager

        folder = self.settings.schema_dir
        documents: list[tuple[str, Any]] = []
        if folder.is_dir() and any(folder.glob("*.json")):
            documents = [(str(source), document) for source, document in load_documents(folder)]
        from_plugins = get_plugin_manager().entity_definitions()
        documents += from_plugins
        # A definition file is applied when it is new or changed since it was last applied here, not at
        # every start: an admin's later change of that entity (designer, API, CLI) must survive a restart.
        digests = {id(d): _digest(d) for _, d in documents}
        async with self.db.connection() as connection:
            applied = {r["entity"]: r["digest"] for r in await connection.fetch("SELECT entity, digest FROM xrm_sys.startup_definition")}
        documents = [(s, d) for s, d in documents if applied.get(_entity_name(d)) != digests[id(d)] or _entity_name(d) not in self.registry]
        from_plugins = [(s, d) for s, d in from_plugins if any(d is kept for _, kept in documents)]
        if not documents:
            return None, None
        try:
            plan = await self.schema.apply([d for _, d in documents], sources=[s for s, _ in documents])
            await self._remember_applied(documents, digests)
        except XrmError as error:
            warning = f"entity definitions in {folder} were not applied:\n{error}\nRun `xrm schema plan {folder}` to see why."
            if not from_plugins:
                return None, warning
            # A plugin's definition must not hold back the folder's own: try those alone.
            warning = f"entity definitions in {folder} and from plugins ({', '.join(sorted({s for s, _ in from_plugins}))}) were not applied:\n{error}"
            own = documents[: len(documents) - len(from_plugins)]
            if own:
                try:
                    plan = await self.schema.apply([d for _, d in own], sources=[s for s, _ in own])
                    await self._remember_applied(own, digests)
                    return plan, warning
                except XrmError:
                    pass
            return None, warning
        return plan, None

    async def _remember_applied(self, documents: list[tuple[str, Any]], digests: dict[int, str]) -> None:
        async with self.db.connection() as connection:
            await connection.executemany(
                "INSERT INTO xrm_sys.startup_definition (entity, digest, source) VALUES ($1, $2, $3) "
                "ON CONFLICT (entity) DO UPDATE SET digest = EXCLUDED.digest, source = EXCLUDED.source, applied_at = now()",
                [(_entity_name(d), digests[id(d)], s) for s, d in documents if _entity_name(d)],
            )


    async def start_plugins(self) -> None:
        """Call every plugin's xrm_startup(platform=...), awaiting the coroutines they return."""
        from .plugins import await_me_maybe, get_plugin_manager

        for result in get_plugin_manager().hook.xrm_startup(platform=self):
            await await_me_maybe(result)

    async def stop_plugins(self) -> None:
        """Call every plugin's xrm_shutdown(platform=...); an error is logged and the others still run."""
        from .plugins import await_me_maybe, get_plugin_manager

        for name, call in get_plugin_manager().each_call("xrm_shutdown", platform=self):
            try:
                await await_me_maybe(call())
            except Exception:  # noqa: BLE001 - one plugin must not keep the others from stopping
                log.exception("plugin %s failed to shut down", name)


@asynccontextmanager
async def open_platform(settings: Settings | None = None, *, pool_size: int = 10) -> AsyncIterator[Platform]:
    settings = settings or Settings.from_env()
    db = Database(database_uri(settings))
    await db.open(max_size=pool_size)
    try:
        registry = await Registry().load(db)
        policy = await RolePolicy().load(db)
        await _ensure_owner_indexes(db, registry)
        yield Platform(settings, db, registry, policy)
    finally:
        await db.close()


async def _ensure_owner_indexes(db: Database, registry: Registry) -> None:
    """Every entity table has its (owner_id, created_at, id) index, once (ddl.owner_index_statement).

    Tables from before the permission model had none, tables from before
    per-owner pages one on (owner_id) alone: build the new one, then drop the
    old (CREATE INDEX blocks writes to the table while it runs, once).
    """
    from .identifiers import quote_ident
    from .schema.ddl import DATA_SCHEMA, object_name, owner_index_statement

    async with db.connection() as connection:
        indexed = {
            r["tablename"]
            for r in await connection.fetch(
                "SELECT tablename FROM pg_indexes WHERE schemaname = $1 AND indexdef LIKE '%(owner_id, created_at, id)'",
                DATA_SCHEMA,
            )
        }
        for entity in registry:
            if entity.name not in indexed:
                log.warning("building the owner index of %s", entity.name)
                async with connection.transaction():
                    await connection.execute(owner_index_statement(entity.name))
                    old = quote_ident(object_name(entity.name, "owner"))
                    await connection.execute(f"DROP INDEX IF EXISTS {quote_ident(DATA_SCHEMA)}.{old}")
        # Reference fields from before they had an index of their own (ddl.reference_index_statement).
        from .schema.ddl import reference_index_name, reference_index_statement

        names = {r["name"] for r in await connection.fetch(
            "SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = $1 AND c.relkind = 'i'", DATA_SCHEMA)}
        for entity in registry:
            for f in entity.fields.values():
                if f.references and reference_index_name(entity.name, f.name) not in names:
                    log.warning("building the index of the reference %s.%s", entity.name, f.name)
                    await connection.execute(reference_index_statement(entity.name, f))
        await _upgrade_declared_indexes(connection, registry)


async def _upgrade_declared_indexes(connection: Any, registry: Registry) -> None:
    """Declared non-unique indexes of the old shape (fields only) become (fields, created_at, id), once.

    One catalog query answers "is there any?" so a normal start pays nothing
    more; the rebuild itself (schema.evolution.index_upgrades) blocks writes
    to the table while it runs, once per install.
    """
    from .schema.ddl import DATA_SCHEMA
    from .schema.evolution import index_upgrades

    old_shape = await connection.fetchval(
        "SELECT count(*) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = $1 AND NOT i.indisunique AND c.relname ~ '__ix_[0-9]+$'",
        DATA_SCHEMA,
    )
    if not old_shape:
        return
    for change in await index_upgrades(connection, [entity.definition for entity in registry]):
        log.warning("%s", change.step.summary)
        async with connection.transaction():
            for _, statement in change.operations:
                await connection.execute(statement)


def _entity_name(document: Any) -> str | None:
    try:
        return str(document["x-xrm"]["name"])
    except (KeyError, TypeError):
        return None


def _digest(document: Any) -> str:
    """The content of a definition, independent of key order and formatting."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(document, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()
