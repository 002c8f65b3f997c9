"""The Litestar application: health, the REST API, the OpenAPI document, the entry page.

Start-up
opens the database, applies entity_schemas/ and the plugins' entity
definitions (non-destructive changes only), calls the plugins' xrm_startup and
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
from .api.auth import auth_handlers
from .api.meta import meta_handlers
from .api.openapi import openapi_handlers
from .api.privacy import privacy_handlers
from .api.problems import exception_handlers
from .api.records import record_handlers
from .api.transfer import transfer_handlers
from .registry import SCHEMA_CHANNEL
from .runtime import Platform, open_platform
from .plugins import get_plugin_manager
from .security.policy import SECURITY_CHANNEL
from .settings import Settings
from .webui.routes import ui_router

__all__ = ["create_app"]

log = logging.getLogger("xrm")
WEBUI = Path(__file__).resolve().parent.parent / "webui"
TEMPLATES = WEBUI / "templates"


@get("/health", sync_to_thread=False)
def health() -> dict[str, str]:
    return {"status": "ok"}


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
        await platform.start_plugins()
        app.state.listener = await _listen_for_schema_changes(platform)

    async def stop(app: Litestar) -> None:
        listener = getattr(app.state, "listener", None)
        if listener is not None:
            await listener.close()
        platform = getattr(app.state, "platform", None)
        if platform is not None:
            await platform.stop_plugins()
        while contexts:
            await contexts.pop().__aexit__(None, None, None)

    return Litestar(
        route_handlers=[
            health, api_docs, ui_router(), create_static_files_router(path="/static", directories=[WEBUI / "static"]),
            *openapi_handlers, *auth_handlers, *meta_handlers, *admin_handlers, *privacy_handlers, *audit_handlers,
            # Plugin endpoints before the generic /api/v1/{entity} routes they might otherwise shadow.
            *get_plugin_manager().routes("xrm_api_routes"), *transfer_handlers, *record_handlers],
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
