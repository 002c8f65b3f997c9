"""The Litestar application: health, the REST API, the OpenAPI document, the entry page.

Start-up
opens the database, applies entity_schemas/ (non-destructive changes only) and
listens for schema changes other processes announce, reloading the registry.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from litestar import Litestar, Request, get
from litestar.static_files import create_static_files_router
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Template
from litestar.template.config import TemplateConfig

from .api.admin import admin_handlers
from .api.audit import audit_handlers
from .api.meta import meta_handlers
from .api.openapi import openapi_handlers
from .api.problems import exception_handlers
from .api.records import record_handlers
from .api.transfer import transfer_handlers
from .records.principal import SYSTEM_PRINCIPAL
from .records.service import RecordService
from .registry import SCHEMA_CHANNEL
from .runtime import Platform, open_platform
from .security.policy import SECURITY_CHANNEL
from .settings import Settings

__all__ = ["create_app"]

log = logging.getLogger("xrm")
WEBUI = Path(__file__).resolve().parent.parent / "webui"
TEMPLATES = WEBUI / "templates"


@get("/health", sync_to_thread=False)
def health() -> dict[str, str]:
    return {"status": "ok"}


@get("/")
async def index(request: Request[Any, Any, Any]) -> Template:
    platform: Platform = request.app.state.platform
    language = "de" if request.headers.get("accept-language", "").lower().startswith("de") else "en"
    entities = []
    for entity in platform.registry:
        # The entry page has no login yet; counts go through the service layer
        # with the system principal until the permission model lands.
        count = await RecordService(platform.db, platform.registry, entity.name, SYSTEM_PRINCIPAL).count()
        entities.append({"name": entity.name, "label": entity.definition.label(language, plural=True), "count": count})
    return Template("index.html", context={"entities": entities, "language": language})


@get("/api/docs", include_in_schema=False)
async def api_docs() -> Template:
    """The interactive API browser (vendored Swagger UI over /api/openapi.json)."""
    return Template("api_docs.html")


def create_app(settings: Settings | None = None) -> Litestar:
    contexts: list[Any] = []

    async def start(app: Litestar) -> None:
        context = open_platform(settings)
        platform = await context.__aenter__()
        contexts.append(context)
        app.state.platform = platform
        _, warning = await platform.load_schema_folder()
        if warning:
            log.warning(warning)
        app.state.listener = await _listen_for_schema_changes(platform)

    async def stop(app: Litestar) -> None:
        listener = getattr(app.state, "listener", None)
        if listener is not None:
            await listener.close()
        while contexts:
            await contexts.pop().__aexit__(None, None, None)

    return Litestar(
        route_handlers=[
            health, index, api_docs, create_static_files_router(path="/static", directories=[WEBUI / "static"]),
            *openapi_handlers, *meta_handlers, *admin_handlers, *audit_handlers, *transfer_handlers, *record_handlers],
        exception_handlers=exception_handlers,
        openapi_config=None,  # ours is generated from the registry: /api/openapi.json
        on_startup=[start],
        on_shutdown=[stop],
        template_config=TemplateConfig(directory=TEMPLATES, engine=JinjaTemplateEngine),
    )


async def _listen_for_schema_changes(platform: Platform) -> Any:
    """Reload the registry when any process commits a schema change."""
    import asyncpg

    connection = await asyncpg.connect(platform.db.uri)

    def reload(*_: Any) -> None:
        asyncio.get_running_loop().create_task(platform.registry.load(platform.db))

    def reload_policy(*_: Any) -> None:
        asyncio.get_running_loop().create_task(platform.policy.load(platform.db))

    await connection.add_listener(SCHEMA_CHANNEL, reload)
    # Roles and grants changed (here or in another process, e.g. `xrm role grant`).
    await connection.add_listener(SECURITY_CHANNEL, reload_policy)
    return connection
