"""The web UI as one Litestar router: pages render HTML, errors render HTML pages.

Each view module lists its handlers; this router puts them under one set of
exception handlers, so a missing session sends the browser to the login page
(htmx requests get HX-Redirect) and NotFound / PermissionDenied / other user
errors become readable pages instead of problem+json.
"""

from __future__ import annotations

import logging
from typing import Any

from litestar import Request, Response, Router
from litestar.exceptions import HTTPException
from litestar.response import Redirect, Template

from xrm.errors import NotFound, PermissionDenied, XrmError
from xrm.plugins import get_plugin_manager

from .context import LoginRequired, login_url
from .i18n import pick_language, translator
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


def _error_page(request: Request[Any, Any, Any], error: XrmError) -> Response[Any]:
    t = translator(pick_language(None, request.headers.get("accept-language", "")))
    if isinstance(error, NotFound):
        status, title = 404, t.gettext("Not found")
    elif isinstance(error, PermissionDenied):
        status, title = 403, t.gettext("Not allowed")
    else:
        status, title = 400, t.gettext("That did not work")
    return Template(template_name="ui/error.html", status_code=status,
                    context={"p": None, "_": t.gettext, "language": t.language, "title": title, "detail": error.message})


def _unexpected(request: Request[Any, Any, Any], error: Exception) -> Response[Any]:
    """Anything else: an HTTP error keeps its status; a bug is logged and shown as a plain 500 page."""
    t = translator(pick_language(None, request.headers.get("accept-language", "")))
    if isinstance(error, HTTPException):
        status, detail = error.status_code, str(error.detail)
    else:
        log.exception("web UI request failed: %s %s", request.method, request.url.path)
        status, detail = 500, t.gettext("Something went wrong on our side; the error was logged.")
    return Template(template_name="ui/error.html", status_code=status,
                    context={"p": None, "_": t.gettext, "language": t.language, "title": t.gettext("That did not work"), "detail": detail})


def ui_router() -> Router:
    return Router(
        path="/",
        route_handlers=[*auth_views, *home_views, *board_views, *list_views, *admin_views, *token_views, *import_views,
                        *designer_views, *get_plugin_manager().routes("xrm_ui_routes"), *record_views],
        exception_handlers={LoginRequired: _login, XrmError: _error_page, Exception: _unexpected},
        include_in_schema=False,
    )
