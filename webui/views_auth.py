"""Log in, log out, switch language: the session pages of the web UI."""

from __future__ import annotations

from typing import Any

from litestar import Request, Response, get, post
from litestar.response import Redirect, Template

from xrm.api.auth import require_same_origin, session_cookie
from xrm.api.common import platform_of
from xrm.audit import AuditLog
from xrm.auth import LoginLocked, UserService
from xrm.errors import PermissionDenied
from xrm.sessions import SESSION_COOKIE, SessionService

from .context import page_of
from .i18n import pick_language, translator

__all__ = ["auth_views"]


def _safe_next(target: str | None) -> str:
    """Only paths on this site: `next=//evil.example` or `https://…` would be an open redirect."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target


def _login_page(request: Request[Any, Any, Any], status: int = 200, **context: Any) -> Template:
    language = pick_language(None, request.headers.get("accept-language", ""))
    t = translator(language)
    return Template(template_name="ui/login.html", status_code=status,
                    context={"_": t.gettext, "language": language, "next": "/", **context})


@get("/login")
async def login_form(request: Request[Any, Any, Any]) -> Template:
    return _login_page(request, next=_safe_next(request.query_params.get("next")))


@post("/login", status_code=200)
async def login(request: Request[Any, Any, Any]) -> Response[Any] | Template:
    form = await request.form()
    name, password = str(form.get("name") or ""), str(form.get("password") or "")
    target = _safe_next(str(form.get("next") or ""))
    t = translator(pick_language(None, request.headers.get("accept-language", "")))
    try:
        require_same_origin(request)
    except PermissionDenied:
        return _login_page(request, 403, next=target, name=name, error=t.gettext("This login form was sent from another site."))
    platform = platform_of(request)
    try:
        principal = await UserService(platform.db, platform.settings).authenticate(
            name, password, address=request.client.host if request.client else None
        )
    except LoginLocked as locked:
        until = t.datetime(locked.until)
        return _login_page(request, 429, next=target, name=name,
                           error=t.gettext("Too many failed logins: this name is locked until %(until)s.", until=until))
    if principal is None:
        return _login_page(request, 401, next=target, name=name, error=t.gettext("Wrong user name or password."))
    sessions = SessionService(platform.db, platform.settings)
    if request.cookies.get(SESSION_COOKIE):
        await sessions.revoke(request.cookies[SESSION_COOKIE])  # never continue a session someone may have planted
    token, _ = await sessions.create(principal.id, request.headers.get("user-agent", ""))
    response: Response[Any] = Redirect(target, status_code=303)
    response.set_cookie(session_cookie(request, token))
    return response


@post("/logout", status_code=303)
async def logout(request: Request[Any, Any, Any]) -> Response[Any]:
    page = await page_of(request)  # checks the CSRF token: no one can log a user out from another site
    await SessionService(page.platform.db, page.platform.settings).revoke(request.cookies[SESSION_COOKIE])
    await AuditLog(page.platform.db).write_now(page.principal, "auth.logout")
    response: Response[Any] = Redirect("/login", status_code=303)
    response.set_cookie(session_cookie(request, "", delete=True))
    return response


@post("/language", status_code=303)
async def choose_language(request: Request[Any, Any, Any]) -> Response[Any]:
    page = await page_of(request)
    form = await request.form()
    language = form.get("language")
    if language in ("en", "de"):
        async with page.platform.db.connection() as connection:
            await connection.execute("UPDATE xrm_sys.app_user SET language = $2 WHERE id = $1", page.principal.id, language)
    return Redirect(_safe_next(str(form.get("next") or "")), status_code=303)


auth_views = [login_form, login, logout, choose_language]
