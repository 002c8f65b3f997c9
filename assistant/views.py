"""Web UI: /assistant, the chat panel (every user), and the admins' review of questions asked (/admin/assistant).

The question form posts with htmx and shows "Thinking …" while the server
works; the answer is appended to the conversation (kept per user in
xrm_sys.assistant_message), each cited record a link to its page. Without
JavaScript the form posts normally and the whole page comes back.
"""

from __future__ import annotations

from typing import Any

from litestar import Request, get, post
from litestar.response import Template

from xrm.audit import AuditLog
from xrm.errors import PermissionDenied, ValidationFailed
from xrm.webui.context import page_of

from .embedding import get_embedder
from .service import AssistantService, conversation

__all__ = ["ui_handlers"]


@get("/assistant")
async def assistant_page(request: Request[Any, Any, Any]) -> Template:
    page = await page_of(request)
    return page.render("ui/assistant/chat.html", messages=await conversation(page.platform.db, page.principal.id), error="")


@post("/assistant/ask", status_code=200)
async def ask(request: Request[Any, Any, Any]) -> Template:
    page = await page_of(request)
    form = await request.form()
    question = form.get("question") if isinstance(form.get("question"), str) else ""
    service = AssistantService(page.platform.db, page.platform.registry, page.principal, page.platform.policy,
                               embedder_factory=get_embedder)
    fragment = request.headers.get("hx-request") == "true"
    try:
        answer = await service.ask(question.replace("\x00", ""))
    except ValidationFailed:
        error = page.t.gettext("Please type a question (at most 2,000 characters).")
        if fragment:  # htmx swaps only 2xx answers: the error goes into its box out of band
            return page.render("ui/assistant/_error.html", error=error)
        return page.render("ui/assistant/chat.html", status_code=422, error=error,
                           messages=await conversation(page.platform.db, page.principal.id))
    message = {"question": answer.question, "answer": answer.as_json()}
    if fragment:
        return page.render("ui/assistant/_message.html", m=message)
    return page.render("ui/assistant/chat.html", messages=await conversation(page.platform.db, page.principal.id), error="")


@get("/admin/assistant")
async def review_page(request: Request[Any, Any, Any]) -> Template:
    """Admins review what was asked, by whom, and which records the assistant saw on their behalf."""
    page = await page_of(request)
    if not page.is_admin:
        raise PermissionDenied(page.t.gettext("Only administrators may review the assistant's questions."))
    entries = await AuditLog(page.platform.db).search(action="assistant.asked", limit=200)
    return page.render("ui/assistant/review.html", entries=entries)


ui_handlers = [assistant_page, ask, review_page]
