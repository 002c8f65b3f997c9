"""The web UI as one Litestar router: pages render HTML, errors render HTML pages.

Each view module lists its handlers; this router puts them under one set of
exception handlers, so a missing session sends the browser to the login page
(htmx requests get HX-Redirect) and NotFound / PermissionDenied / other user
errors become readable pages instead of problem+json.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from litestar import Request, Response, Router
from litestar.exceptions import HTTPException
from litestar.response import Redirect, Template
from litestar.types import Receive, Scope, Send

from xrm.api.common import platform_of, session_of
from xrm.errors import NotFound, PermissionDenied, XrmError
from xrm.plugins import get_plugin_manager
from xrm.sessions import SESSION_COOKIE

from .context import LoginRequired, login_url
from .display import entity_label
from .i18n import N_, Translator, pick_language, translator
from .views_admin import admin_views
from .views_auth import auth_views
from .views_board import board_views
from .views_designer import designer_views
from .views_home import home_views
from .views_import import import_views
from .views_lists import list_views
from .views_records import record_views
from .views_tokens import token_views

__all__ = ["ui_router"]

log = logging.getLogger("xrm")


def _login(request: Request[Any, Any, Any], _: Exception) -> Response[Any]:
    target = login_url(request)
    if request.headers.get("hx-request"):
        return Response(content=b"", status_code=200, headers={"HX-Redirect": target})
    return Redirect(target, status_code=303)


class _ErrorPage(Template):
    """The error page, in the language of the user whose session made the request (else the browser's).

    Exception handlers are synchronous and the saved language is in the database, so the page
    looks it up when it is sent; `content(t)` gives the title and the detail in that language.
    """

    def __init__(self, status_code: int, content: Callable[[Translator], tuple[str, str]], *, by_session: bool = True) -> None:
        super().__init__(template_name="ui/error.html", status_code=status_code)
        self._content = content
        self._by_session = by_session

    def to_asgi_response(self, app: Any, request: Request[Any, Any, Any], **options: Any) -> Any:
        page = self

        async def send_page(scope: Scope, receive: Receive, send: Send) -> None:
            saved = await _saved_language(request) if page._by_session else None
            t = translator(pick_language(saved, request.headers.get("accept-language", "")))
            title, detail = page._content(t)
            page.context = {"p": None, "_": t.gettext, "language": t.language, "title": title, "detail": detail}
            await Template.to_asgi_response(page, None, request, **options)(scope, receive, send)

        return send_page


async def _saved_language(request: Request[Any, Any, Any]) -> str | None:
    """The language the logged-in user chose (None without a live session)."""
    if SESSION_COOKIE not in request.cookies:
        return None
    try:
        found = await session_of(request)  # resolved once per request: the page's own lookup is reused
        if found is None:
            return None
        async with platform_of(request).db.connection() as connection:
            language = await connection.fetchval("SELECT language FROM xrm_sys.app_user WHERE id = $1", found[0].id)
    except Exception:  # noqa: BLE001 - the error page shows in any case, in the browser's language then
        log.warning("error page: the user's language could not be read", exc_info=True)
        return None
    return language if isinstance(language, str) else None


def _error_page(request: Request[Any, Any, Any], error: XrmError) -> Response[Any]:
    if isinstance(error, NotFound):
        status, title = 404, N_("Not found")
    elif isinstance(error, PermissionDenied):
        status, title = 403, N_("Not allowed")
    else:
        status, title = 400, N_("That did not work")

    def content(t: Translator) -> tuple[str, str]:
        registry = platform_of(request).registry

        def label(name: str) -> str:
            return entity_label(registry.get(name).definition, t.language) if name in registry else name

        return t.gettext(title), t.problem(error.message, entity_label=label)  # the platform's message, in the language

    return _ErrorPage(status, content)


def _unexpected(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    """Anything else: an HTTP error keeps its status; a bug is logged and shown as a plain 500 page."""
    if isinstance(error, HTTPException):
        status, detail = error.status_code, str(error.detail)
    else:
        log.exception("web UI request failed: %s %s", request.method, request.url.path)
        status, detail = 500, N_("Something went wrong on our side; the error was logged.")
    # A bug's page does not ask the database (it may be the database that failed): the browser's language.
    return _ErrorPage(status, lambda t: (t.gettext("That did not work"), t.gettext(detail) if status == 500 else detail),
                      by_session=status != 500)


def ui_router() -> Router:
    return Router(
        path="/",
        route_handlers=[*auth_views, *home_views, *board_views, *list_views, *admin_views, *token_views, *import_views,
                        *designer_views, *get_plugin_manager().routes("xrm_ui_routes"), *record_views],
        exception_handlers={LoginRequired: _login, XrmError: _error_page, Exception: _unexpected},
        include_in_schema=False,
    )
