"""What every page needs: the logged-in user, their language, the CSRF token, the navigation.

The web UI authenticates with the session cookie only (docs/security.md, "Web
sessions"); `xrm.api.common.principal_of` resolves it and checks the CSRF
token of every request that may change something, so UI handlers share the
API's one mechanism. Data goes through RecordService with the user's
principal and the platform's policy, as in the API.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from litestar import Request
from litestar.response import Template

from xrm.api.common import platform_of, principal_of
from xrm.auth import AuthenticationRequired
from xrm.records.principal import Principal
from xrm.records.service import RecordService
from xrm.registry import CompiledEntity
from xrm.runtime import Platform
from xrm.sessions import SESSION_COOKIE, csrf_token_for

from .i18n import Translator, pick_language, translator

__all__ = ["LoginRequired", "Page", "page_of"]


class LoginRequired(AuthenticationRequired):
    """No (live) session: the UI sends the browser to the login page."""


@dataclass
class Page:
    request: Request[Any, Any, Any]
    platform: Platform
    principal: Principal
    t: Translator
    csrf_token: str
    nav: list[CompiledEntity] = field(default_factory=list)
    menu: list[Any] = field(default_factory=list)
    """Plugins' menu entries (xrm_menu_entries) for this user."""

    @property
    def language(self) -> str:
        return self.t.language

    @property
    def is_admin(self) -> bool:
        return "admin" in self.principal.roles

    def records(self, entity: str) -> RecordService:
        """The one door, as this user."""
        return RecordService(self.platform.db, self.platform.registry, entity, self.principal, self.platform.policy)

    def may(self, entity: str, action: str) -> bool:
        """Whether any record of the entity may get this action (buttons are shown only then)."""
        return not self.principal.read_only and self.platform.policy.scope(self.principal, entity, action) != "none"

    def label(self, entity: CompiledEntity, plural: bool = False) -> str:
        return entity.definition.label(self.language, plural=plural)

    def render(self, template: str, status_code: int = 200, **context: Any) -> Template:
        return Template(template_name=template, status_code=status_code, context={"p": self, "_": self.t.gettext, "ngettext": self.t.ngettext, **context})


async def page_of(request: Request[Any, Any, Any]) -> Page:
    """The page state of a request; LoginRequired without a live session."""
    if SESSION_COOKIE not in request.cookies:
        raise LoginRequired("Please log in")
    try:
        principal = await principal_of(request)
    except AuthenticationRequired:
        raise LoginRequired("Your session has ended; please log in again") from None
    platform = platform_of(request)
    async with platform.db.connection() as connection:
        preferred = await connection.fetchval("SELECT language FROM xrm_sys.app_user WHERE id = $1", principal.id)
    language = pick_language(preferred, request.headers.get("accept-language", ""))
    nav = [e for e in platform.registry if platform.policy.scope(principal, e.name, "read") != "none"]
    nav.sort(key=lambda e: e.definition.label(language, plural=True).casefold())
    from xrm.plugins import get_plugin_manager

    menu = sorted((entry for _, found in get_plugin_manager().each("xrm_menu_entries", principal=principal, language=language)
                   for entry in found or []), key=lambda entry: (entry.order, entry.label))
    return Page(request, platform, principal, translator(language), csrf_token_for(request.cookies[SESSION_COOKIE]), nav, menu)


def login_url(request: Request[Any, Any, Any]) -> str:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return "/login?next=" + quote(target, safe="")
