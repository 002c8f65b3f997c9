"""Start-up shared by the CLI and the server: settings, database, registry."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

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

    async def load_schema_folder(self) -> tuple[Plan | None, str | None]:
        """Apply entity_schemas/*.json at start, unless that would be destructive.

        Returns the plan applied (or None) and a warning when something was held back.
        """
        folder = self.settings.schema_dir
        if not folder.is_dir() or not any(folder.glob("*.json")):
            return None, None
        documents = load_documents(folder)
        try:
            plan = await self.schema.apply([d for _, d in documents], sources=[s for s, _ in documents])
        except XrmError as error:
            return None, f"entity definitions in {folder} were not applied:\n{error}\nRun `xrm schema plan {folder}` to see why."
        return plan, None


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
    """Entity tables created before the permission model get their owner_id index (once)."""
    from .schema.ddl import DATA_SCHEMA, owner_index_statement

    async with db.connection() as connection:
        indexed = {
            r["tablename"]
            for r in await connection.fetch(
                "SELECT tablename FROM pg_indexes WHERE schemaname = $1 AND indexdef LIKE '%(owner_id)'", DATA_SCHEMA
            )
        }
        for entity in registry:
            if entity.name not in indexed:
                await connection.execute(owner_index_statement(entity.name))
