"""The web UI in a real Chromium (Debian package, driven by Playwright): what a user does, end to end.

Screenshots of the main pages go to tests/artifacts/ (kept by CI, ignored by git).
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from typing import Any
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from conftest import create_token, fresh_database, live_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"


@pytest.fixture
def site(server_uri: str, tmp_path: Path) -> Iterator[str]:
    """The app under uvicorn with the shipped entities; users admin (admin) and rita (reads accounts only)."""
    with fresh_database(server_uri) as uri:
        create_token(uri, "admin", ["admin"])
        asyncio.run(_reader(uri))
        with live_server(uri, tmp_path) as base_url:
            yield base_url


async def _reader(uri: str) -> None:
    """Role "reader" (read accounts, nothing else) and its user rita."""
    from xrm.auth import UserService
    from xrm.db.database import Database
    from xrm.security.model import SecurityService

    async with Database(uri) as db:
        security = SecurityService(db)
        await security.create_role("reader")
        await security.grant("reader", "account", "read", "all")
        await UserService(db).create_user("rita", "a-long-password", ["reader"])


@pytest.fixture
def browser(site: str) -> Iterator[Browser]:
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def new_page(browser: Browser, site: str) -> Page:
    page = browser.new_context(viewport={"width": 1280, "height": 900}, locale="en-US").new_page()
    page.on("request", lambda request: OUTSIDE.append(request.url) if not request.url.startswith(site) else None)
    return page


OUTSIDE: list[str] = []
"""Requests to anywhere but the test server (there must be none: no CDN)."""


def log_in(page: Page, base_url: str, name: str) -> None:
    page.goto(f"{base_url}/")
    expect(page).to_have_url(f"{base_url}/login?next=%2F")
    page.get_by_label("User name").fill(name)
    page.get_by_label("Password").fill("a-long-password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("heading", name=f"Welcome, {name}")).to_be_visible()


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def add_field(page: Page, name: str, kind: str) -> None:
    adder = page.get_by_role("group", name="Add a field")
    adder.get_by_label("Field name").fill(name)
    adder.get_by_label("Type").select_option(label=kind)
    adder.get_by_role("button", name="Add field").click()


def field_editor(page: Page, name: str) -> Any:
    """The designer's editor of one field (opened)."""
    item = page.get_by_role("list", name="Fields").get_by_role("listitem").filter(has=page.locator(f"code:text-is('{name}')"))
    details = item.locator("details").first
    if details.get_attribute("open") is None:
        details.locator("summary").click()
    return item


def test_an_admin_designs_an_entity_and_works_with_its_records(site: str, browser: Browser) -> None:
    OUTSIDE.clear()
    page = new_page(browser, site)
    log_in(page, site, "admin")
    shot(page, "home")

    # Design "project" with five field types, through the designer (no code, no file).
    page.locator("header details.dropdown summary").click()
    page.get_by_role("link", name="Entity designer").click()
    page.get_by_role("button", name="New entity").click()
    page.get_by_role("textbox", name="Name", exact=True).fill("project")
    page.get_by_label("Label (English)").first.fill("Project")
    page.get_by_label("Label (German)").first.fill("Projekt")
    for name, kind in [("title", "Text"), ("budget", "Decimal number"), ("phase", "Select (one option)"),
                       ("start", "Date"), ("internal", "Yes/no")]:
        add_field(page, name, kind)
    options = field_editor(page, "phase").get_by_label("Options")
    expect(options).to_have_attribute("aria-invalid", "true")  # a select without options: the draft says so
    options.fill("idea | Idea | Idee\nrunning | Running | Läuft\ndone | Done | Fertig")
    expect(options).not_to_have_attribute("aria-invalid", "true")  # corrected: the old message goes
    field_editor(page, "title").get_by_label("Required").check()
    shot(page, "designer")
    page.get_by_role("button", name="Show migration plan").click()
    expect(page.locator("#plan")).to_contain_text("create entity project")
    shot(page, "designer-plan")
    page.get_by_role("button", name="Apply").click()
    entities = page.get_by_role("navigation", name="Entities")
    expect(entities.get_by_role("link", name="Projects")).to_be_visible()

    # A record through the generated form: first a validation error next to the field, input kept.
    entities.get_by_role("link", name="Projects").click()
    page.get_by_role("button", name="New Project").click()
    page.get_by_label("Budget").fill("12500.50")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("#field-title-error")).to_be_visible()
    expect(page.get_by_label("Budget")).to_have_value("12500.50")
    shot(page, "form-with-errors")
    page.get_by_role("textbox", name="Title (required)").fill("Browser <b>Rollout</b>")
    page.get_by_label("Phase").select_option(label="Idea")
    page.get_by_label("Start").fill("2026-12-01")
    page.get_by_label("Internal").check()
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("heading", name="Browser <b>Rollout</b>")).to_be_visible()  # text, not markup
    expect(page.locator("dl.fields")).to_contain_text("12,500.5")
    shot(page, "detail")

    # Found by the global search and by a filter.
    page.get_by_role("searchbox", name="Search everything").fill("Rollout")
    page.keyboard.press("Enter")
    expect(page.get_by_role("link", name="Browser <b>Rollout</b>")).to_be_visible()
    page.goto(f"{site}/e/project")
    page.get_by_text("Filters and columns").click()
    page.locator('select[name="phase"]').select_option(label="Idea")
    page.get_by_role("button", name="Apply").click()
    expect(page.locator("#results")).to_contain_text("1 record")
    shot(page, "list-filtered")

    # Edited.
    page.locator("#results").get_by_role("link", name="Browser <b>Rollout</b>").click()
    page.get_by_role("button", name="Edit").click()
    page.get_by_label("Budget").fill("13000")
    page.get_by_role("button", name="Save").click()
    expect(page.locator("dl.fields")).to_contain_text("13,000")
    expect(page.locator(".history")).to_contain_text("Budget: 12,500.50 → 13,000")  # the timeline keeps the old value, formatted
    detail_url = page.url

    # Moved on the kanban board (keyboard path: "Move to" and Move).
    page.goto(f"{site}/e/project")
    page.get_by_role("button", name="Board by Phase").click()
    card = page.locator(".board li.card").filter(has_text="Browser <b>Rollout</b>")
    card.get_by_label("Move to").select_option(label="Running")
    card.get_by_role("button", name="Move").click()
    running = page.locator('.board section[data-value="running"]')
    expect(running.locator("li.card")).to_contain_text("Browser <b>Rollout</b>")
    shot(page, "board")
    page.goto(detail_url)
    expect(page.locator("dl.fields")).to_contain_text("Running")

    # Deleted and restored.
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name="Delete").click()
    expect(page.get_by_text("This record is deleted.")).to_be_visible()
    page.get_by_role("button", name="Restore").click()
    expect(page.get_by_text("This record is deleted.")).to_have_count(0)

    # German, at phone width.
    page.set_viewport_size({"width": 390, "height": 844})
    page.locator("header details.dropdown summary").click()
    page.get_by_role("button", name="Deutsch").click()
    expect(page.get_by_role("button", name="Bearbeiten")).to_be_visible()
    expect(page.locator("dl.fields")).to_contain_text("Läuft")
    shot(page, "detail-de-phone")

    # Someone whose roles do not read projects: not in the navigation, not in search, not by URL.
    other = new_page(browser, site)
    log_in(other, site, "rita")
    entities = other.get_by_role("navigation", name="Entities")
    expect(entities.get_by_role("link", name="Accounts")).to_be_visible()
    expect(entities.get_by_role("link", name="Projects")).to_have_count(0)
    response = other.goto(detail_url)
    assert response is not None and response.status == 403
    assert other.goto(f"{site}/e/project") is not None and other.get_by_role("heading", name="Not allowed").is_visible()
    other.goto(f"{site}/search?q=Rollout")
    expect(other.get_by_text("Nothing found.")).to_be_visible()
    assert OUTSIDE == []  # everything came from this server


def test_the_connection_graph_at_phone_width(server_uri: str, tmp_path: Path) -> None:
    """Two rings of connections on a phone: the picture fits, its nodes are links a keyboard reaches, the table says the same."""
    import httpx

    with fresh_database(server_uri) as uri:
        token = create_token(uri, "admin", ["admin"])
        with live_server(uri, tmp_path) as base, sync_playwright() as playwright:
            api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"})
            assert api.post("/api/v1/_connection_roles", json={"name": "partner", "label": {"en": "partner of"}}).status_code == 201
            ids = {name: api.post("/api/v1/account", json={"name": name}).json()["id"] for name in ("Hub", "Near", "Far")}
            for a, b in (("Hub", "Near"), ("Near", "Far")):
                made = api.post(f"/api/v1/account/{ids[a]}/connections", json={"role": "partner", "other_entity": "account", "other_id": ids[b]})
                assert made.status_code == 201, made.text
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = chromium.new_context(viewport={"width": 390, "height": 844}, locale="en-US").new_page()
                outside: list[str] = []
                page.on("request", lambda request: outside.append(request.url) if not request.url.startswith(base) else None)
                log_in(page, base, "admin")
                page.goto(f"{base}/e/account/{ids['Hub']}")
                graph = page.locator("svg.graph")
                expect(graph).to_be_visible()
                box = graph.bounding_box()
                assert box is not None and box["width"] <= 390  # scaled to the phone, no sideways scrolling for it
                far = page.locator(f'svg.graph a[href="/e/account/{ids["Far"]}"]')  # the second ring
                expect(far).to_have_count(1)
                far.focus()
                assert page.evaluate("document.activeElement.getAttribute('href')") == f"/e/account/{ids['Far']}"
                page.locator("details.further-connections summary").click()
                expect(page.locator("details.further-connections table")).to_contain_text("Far")
                far.click()
                expect(page).to_have_url(f"{base}/e/account/{ids['Far']}")
                ARTIFACTS.mkdir(exist_ok=True)
                shot(page, "connection-graph-phone")
                assert outside == []
            finally:
                chromium.close()


def test_the_assistant_chat_at_phone_width_in_german(server_uri: str, tmp_path: Path) -> None:
    """A German user asks in the chat: "Einen Moment …" while it works, the answer appears, its source is a link."""
    import httpx

    with fresh_database(server_uri) as uri:
        token = create_token(uri, "admin", ["admin"])
        with live_server(uri, tmp_path) as base, sync_playwright() as playwright:
            api = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"})
            account = api.post("/api/v1/account", json={"name": "Müller GmbH", "city": "Köln"}).json()
            ticket = api.post("/api/v1/ticket", json={"subject": "Kasse startet nicht", "account": account["id"]}).json()
            api.post(f"/api/v1/ticket/{ticket['id']}/transitions/open").raise_for_status()
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = chromium.new_context(viewport={"width": 390, "height": 844}, locale="de-DE").new_page()
                outside: list[str] = []
                page.on("request", lambda request: outside.append(request.url) if not request.url.startswith(base) else None)
                page.goto(f"{base}/login")
                page.locator("input[name=name]").fill("admin")
                page.locator("input[name=password]").fill("a-long-password")
                page.locator("form button[type=submit]").click()
                page.goto(f"{base}/assistant")
                expect(page.get_by_role("heading", name="Assistent")).to_be_visible()
                page.get_by_label("Ihre Frage").fill("Wie viele offene Tickets hat die Müller GmbH?")
                page.get_by_role("button", name="Fragen").click()
                answer = page.locator(".assistant-answer").last
                expect(answer).to_contain_text("1 Ticket", timeout=30000)
                expect(page.get_by_label("Ihre Frage")).to_have_value("")  # ready for the next question
                source = page.locator(".assistant-citations a").first
                expect(source).to_have_text("Kasse startet nicht")
                box = page.locator("#conversation").bounding_box()
                assert box is not None and box["width"] <= 390
                ARTIFACTS.mkdir(exist_ok=True)
                shot(page, "assistant-chat-phone-de")
                source.click()
                expect(page).to_have_url(re.compile(rf"{base}/e/ticket/[0-9a-f-]+$"))
                assert outside == []
            finally:
                chromium.close()
