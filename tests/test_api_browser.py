"""The interactive API browser (/api/docs) in a real Chromium: it loads the
generated spec from the vendored Swagger UI (no CDN) and can send a request."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect, sync_playwright

from conftest import create_token, fresh_database, live_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


@pytest.fixture
def docs_server(server_uri: str, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(base URL, admin token); set up before the browser, whose sync API owns an event loop."""
    with fresh_database(server_uri) as uri:
        token = create_token(uri, "admin", ["admin"])
        with live_server(uri, tmp_path) as base_url:
            yield base_url, token


@pytest.fixture
def page(docs_server: tuple[str, str]) -> Iterator[Page]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser.new_page()
        finally:
            browser.close()


def test_api_browser_shows_the_generated_operations_and_runs_one(docs_server: tuple[str, str], page: Page) -> None:
    base_url, token = docs_server
    outside: list[str] = []
    page.on("request", lambda request: outside.append(request.url) if not request.url.startswith(base_url) else None)
    page.goto(f"{base_url}/api/docs")
    # One tag per entity label; operations from the registry.
    expect(page.locator("#operations-Account-list_account")).to_be_visible(timeout=15_000)
    # Swagger UI renders a long list of tags lazily (only what is on screen): the filter box brings one up.
    tag_filter = page.get_by_placeholder("Filter by tag")
    tag_filter.fill("Deal")
    expect(page.locator("#operations-Deal-create_deal")).to_be_visible()
    assert outside == []  # everything came from this server

    page.get_by_role("button", name="Authorize").first.click()
    page.locator("#auth-bearer-value").fill(token)
    page.get_by_role("button", name="Apply credentials").click()
    page.locator(".auth-btn-wrapper").get_by_role("button", name="Close").click()

    tag_filter.fill("Entity definitions")
    operation = page.locator("#operations-Entity_definitions-list_entities")
    operation.locator(".opblock-summary").first.click()
    operation.get_by_role("button", name="Execute").click()  # "try it out" is on from the start
    body = operation.locator(".responses-wrapper .live-responses-table .response-col_description pre").first
    expect(body).to_contain_text('"name": "account"', timeout=15_000)
