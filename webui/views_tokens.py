"""API tokens of the logged-in user: list, create (shown once), revoke. Admins see and may revoke every token.

Only a hash of a token is stored (xrm.auth); the value appears exactly once,
in the response to the POST that created it (not cached: no-store), and is
never logged, audited or put into a URL.
"""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Request, get, post
from litestar.response import Template
from xrm.auth import UserService
from xrm.errors import NotFound, XrmError

from .context import Page, page_of
from .views_admin import describe_error

__all__ = ["token_views"]

LABEL_MAX = 200
_NO_STORE = {"Cache-Control": "no-store"}


def _users(page: Page) -> UserService:
    return UserService(page.platform.db, page.platform.settings, actor=page.principal)


async def _tokens_page(page: Page, *, status: int = 200, message: str = "", error: str = "",
                       new_token: str | None = None, new_info: Any = None) -> Template:
    users = _users(page)
    mine = await users.list_tokens(page.principal.name)
    others = [t for t in await users.list_tokens(None) if t.user != page.principal.name] if page.is_admin else []
    response = page.render("ui/tokens.html", status_code=status, mine=list(reversed(mine)), others=list(reversed(others)),
                           new_token=new_token, new_info=new_info, flash=[message] if message else [], error=error)
    response.headers.update(_NO_STORE)
    return response


@get("/account/tokens")
async def tokens_page(request: Request[Any, Any, Any]) -> Template:
    return await _tokens_page(await page_of(request))


@post("/account/tokens/create", status_code=200)
async def create_token(request: Request[Any, Any, Any]) -> Template:
    page = await page_of(request)
    form = await request.form()
    label = form.get("label")
    label = label.strip()[:LABEL_MAX].replace("\x00", "") if isinstance(label, str) else ""
    read_only = form.get("read_only") in ("1", "true", "on")
    try:
        token, info = await _users(page).create_token(page.principal.name, label, read_only=read_only)
    except XrmError as error:
        return await _tokens_page(page, status=422, error=describe_error(error))
    return await _tokens_page(page, new_token=token, new_info=info)


@post("/account/tokens/revoke", status_code=200)
async def revoke_token(request: Request[Any, Any, Any]) -> Template:
    """A user revokes their own tokens; an admin anyone's. Someone else's token is "not found" (no oracle)."""
    page = await page_of(request)
    raw = (await request.form()).get("token_id")
    try:
        token_id = uuid.UUID(raw if isinstance(raw, str) else "")
    except ValueError:
        token_id = None
    users = _users(page)
    tokens = await users.list_tokens(None if page.is_admin else page.principal.name)
    found = next((t for t in tokens if t.id == token_id), None)
    if found is None:
        raise NotFound(page.t.gettext("No such token."))
    if found.revoked_at is None:
        await users.revoke_token(found.id)
    return await _tokens_page(page, message=page.t.gettext("The token %(label)s is revoked.", label=found.label or str(found.id)[:8]))


token_views = [tokens_page, create_token, revoke_token]
