"""The start page and the global search."""

from __future__ import annotations

from typing import Any

from litestar import Request, get
from litestar.response import Template

from .context import page_of
from .display import display_name

__all__ = ["home_views"]

SEARCH_LIMIT = 10
"""Hits per entity on the search page."""
COUNT_LIMIT = 10_000
"""The start page counts up to this many records per entity (then shows "more than 10,000")."""


@get("/")
async def home(request: Request[Any, Any, Any]) -> Template:
    page = await page_of(request)
    counts = [(entity, await page.records(entity.name).count(limit=COUNT_LIMIT)) for entity in page.nav]
    return page.render("ui/home.html", counts=counts, limit=COUNT_LIMIT)


@get("/search")
async def search(request: Request[Any, Any, Any]) -> Template:
    """Full-text search over every entity the user may read, through the one door (permission-aware)."""
    page = await page_of(request)
    query = (request.query_params.get("q") or "").strip()[:200].replace("\x00", "")
    results = []
    if query:
        for entity in page.nav:
            found = await page.records(entity.name).list(search=query, limit=SEARCH_LIMIT, with_total=True, total_limit=COUNT_LIMIT)
            if found.records:
                results.append((entity, found))
    return page.render("ui/search.html", query=query, results=results, display=display_name)


home_views = [home, search]
