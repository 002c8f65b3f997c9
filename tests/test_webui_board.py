"""The Kanban board of the web UI over HTTP: columns and cards, moving cards (htmx and plain forms), permissions, CSRF."""

from __future__ import annotations

import re
from typing import Any

import pytest
from litestar.testing import TestClient

from conftest import log_in, make_user, ok

BOARD = "/e/deal/board/stage"
STAGES = ["prospecting", "qualification", "negotiation", "won", "lost"]


def new_deal(ui: TestClient, token: str, title: str, stage: str, **values: str) -> str:
    response = ui.post("/e/deal/new", data={"csrf_token": token, "title": title, "stage": stage, **values}, follow_redirects=False)
    assert response.status_code == 303, response.text
    return response.headers["location"].rsplit("/", 1)[1]  # type: ignore[no-any-return]


def columns(html: str) -> dict[str, str]:
    """The board's columns: key -> the column's HTML."""
    parts = re.split(r'<section class="board-column"', html)[1:]
    return {re.search(r'data-column="([^"]+)"', part).group(1): part for part in parts}  # type: ignore[union-attr]


def count(column_html: str) -> int:
    return int(re.search(r'<span aria-hidden="true">(\d+)</span>', column_html).group(1))  # type: ignore[union-attr]


def version(html: str, record_id: str) -> str:
    card = html[html.index(f'id="card-{record_id}"'):]
    return re.search(r'name="version" value="(\d+)"', card).group(1)  # type: ignore[union-attr]


def stage_of(ui: TestClient, record_id: str) -> str:
    async def read() -> Any:
        async with ui.app.state.platform.db.connection() as connection:
            return await connection.fetchval(f"SELECT stage FROM {ui.app.state.platform.registry.get('deal').table} WHERE id = $1::uuid", record_id)

    return ui.blocking_portal.call(read)  # type: ignore[no-any-return]


def test_board_shows_one_column_per_option_with_the_matching_cards(ui: TestClient, ui_admin: str) -> None:
    alpha = new_deal(ui, ui_admin, "Alpha", "prospecting", amount="1000", amount__currency="EUR")
    new_deal(ui, ui_admin, "Beta", "won")
    new_deal(ui, ui_admin, "Gamma", "won")
    page = ui.get(BOARD)
    assert page.status_code == 200
    board = columns(page.text)
    assert list(board) == ["0", "1", "2", "3", "4", "none"]  # the options in definition order, then "no value"
    assert ">Prospecting <" in board["0"] and ">Won <" in board["3"] and "No value" in board["none"]
    assert "Alpha" in board["0"] and "Alpha" not in board["3"] and "1,000.00 EUR" in board["0"]  # a useful field on the card
    assert "Beta" in board["3"] and "Gamma" in board["3"] and count(board["3"]) == 2 and count(board["1"]) == 0
    assert f'href="/e/deal/{alpha}"' in board["0"]
    # The list's filter language applies: search and field filters.
    searched = columns(ui.get(BOARD + "?q=Gamma").text)
    assert "Gamma" in searched["3"] and "Beta" not in searched["3"] and count(searched["3"]) == 1
    assert "Alpha" not in columns(ui.get(BOARD + "?amount[gte]=5000").text)["0"]
    assert "This filter cannot be applied" in ui.get(BOARD + "?amount[gte]=lots").text
    # German labels from the definition.
    ui.post("/language", data={"csrf_token": ui_admin, "language": "de", "next": "/"})
    german = ui.get(BOARD).text
    assert ">Akquise <" in german and ">Gewonnen <" in german and "Kein Wert" in german
    # Only single-select fields make a board.
    assert ui.get("/e/deal/board/title").status_code == 404


def test_columns_load_more_cards(ui: TestClient, ui_admin: str) -> None:
    for i in range(23):
        new_deal(ui, ui_admin, f"Deal {i:02}", "qualification")
    page = ui.get(BOARD).text
    column = columns(page)["1"]
    assert count(column) == 23 and column.count('class="card"') == 20 and "Load more" in column
    more = re.search(r'hx-get="([^"]+/more\?[^"]+)"', column).group(1).replace("&amp;", "&")  # type: ignore[union-attr]
    rest = ui.get(more, headers={"HX-Request": "true"}).text
    assert rest.count('class="card"') == 3 and "<html" not in rest and "Load more" not in rest
    shown = set(re.findall(r"Deal \d\d", column)) | set(re.findall(r"Deal \d\d", rest))
    assert len(shown) == 23


def test_moving_a_card_updates_the_record_and_its_history(ui: TestClient, ui_admin: str) -> None:
    deal = new_deal(ui, ui_admin, "Mover", "prospecting")
    other = new_deal(ui, ui_admin, "Stayer", "qualification")
    page = ui.get(BOARD).text
    assert 'draggable="true"' in page and f'<label for="move-{deal}"' in page  # drag and drop and a labelled select
    # The shipped deal's stage is a state machine: the move to the next column takes the transition "qualify".
    response = ui.post(f"/e/deal/{deal}/move", headers={"HX-Request": "true"},
                       data={"csrf_token": ui_admin, "field": "stage", "value": "qualification", "version": version(page, deal),
                             "board_query": ""})
    assert response.status_code == 200, response.text
    assert response.headers["HX-Retarget"] == "#cards-1" and response.headers["HX-Reswap"] == "afterbegin"
    assert f'id="card-{deal}"' in response.text and 'hx-swap-oob="delete"' in response.text  # the old card goes
    assert re.search(r'id="count-1" hx-swap-oob="true"><span aria-hidden="true">2<', response.text)
    assert re.search(r'id="count-0" hx-swap-oob="true"><span aria-hidden="true">0<', response.text)
    assert "Mover moved to Qualification." in response.text  # announced in the live region
    assert stage_of(ui, deal) == "qualification" and stage_of(ui, other) == "qualification"
    board = columns(ui.get(BOARD).text)
    assert "Mover" in board["1"] and "Mover" not in board["0"]
    detail = ui.get(f"/e/deal/{deal}").text
    assert re.search(r"Stage: <del>Prospecting</del> → <ins>Qualification</ins>", detail), detail[-2000:]  # the audit trail, options by label
    history = ok(ui.get(f"/api/v1/deal/{deal}/transitions"))["history"]
    assert [h["details"]["transition"] for h in history] == ["qualify"]
    # Without JavaScript the form posts and comes back to the board (with its filter).
    plain = ui.post(f"/e/deal/{deal}/move", follow_redirects=False, data={
        "csrf_token": ui_admin, "field": "stage", "value": "lost", "version": version(ui.get(BOARD).text, deal), "board_query": "q=Mover"})
    assert plain.status_code == 303 and plain.headers["location"] == BOARD + "?q=Mover"
    assert stage_of(ui, deal) == "lost"


def test_a_move_no_transition_makes_is_refused_in_english_and_german(ui: TestClient, ui_admin: str) -> None:
    deal = new_deal(ui, ui_admin, "Jumper", "prospecting")
    refused = ui.post(f"/e/deal/{deal}/move", headers={"HX-Request": "true"},
                      data={"csrf_token": ui_admin, "field": "stage", "value": "won", "version": version(ui.get(BOARD).text, deal)})
    assert refused.status_code == 422 and refused.headers["HX-Retarget"] == f"#msg-{deal}"  # the card stays, the message is next to it
    assert refused.text == ("Not moved: there is no transition from Prospecting to Won. "
                            "Possible from here: Qualify (→ Qualification), Lost (→ Lost)."), refused.text
    assert stage_of(ui, deal) == "prospecting"
    ui.post("/language", data={"csrf_token": ui_admin, "language": "de", "next": "/"})
    german = ui.post(f"/e/deal/{deal}/move", data={"csrf_token": ui_admin, "field": "stage", "value": "negotiation",
                                                    "version": version(ui.get(BOARD).text, deal)})
    assert german.status_code == 422 and 'class="board"' in german.text  # without JavaScript: the board with the message
    assert ("Jumper: Nicht verschoben: Es gibt keinen Übergang von Akquise nach Verhandlung. "
            "Möglich von hier: Qualifizieren (→ Qualifizierung), Verloren (→ Verloren).") in german.text
    assert stage_of(ui, deal) == "prospecting"
    # A transition whose guard fails is refused with the guard (negotiate needs the amount); with it, the move goes.
    current = version(ui.get(BOARD).text, deal)
    assert ui.post(f"/e/deal/{deal}/move", data={"csrf_token": ui_admin, "field": "stage", "value": "qualification",
                                                  "version": current}, follow_redirects=False).status_code == 303
    guarded = ui.post(f"/e/deal/{deal}/move", headers={"HX-Request": "true"},
                      data={"csrf_token": ui_admin, "field": "stage", "value": "negotiation", "version": version(ui.get(BOARD).text, deal)})
    assert guarded.status_code == 422 and "Nicht verschoben" in guarded.text and "negotiate" in guarded.text, guarded.text
    assert stage_of(ui, deal) == "qualification"


def test_a_stale_or_invalid_move_leaves_the_card_with_a_message(ui: TestClient, ui_admin: str) -> None:
    deal = new_deal(ui, ui_admin, "Contested", "prospecting")
    old_version = version(ui.get(BOARD).text, deal)
    edit = ui.get(f"/e/deal/{deal}/edit").text  # someone else changes it meanwhile
    assert ui.post(f"/e/deal/{deal}/edit", data={"csrf_token": ui_admin, "version": re.search(r'name="version" value="(\d+)"', edit).group(1),  # type: ignore[union-attr]
                                                 "title": "Contested", "stage": "qualification"}, follow_redirects=False).status_code == 303
    stale = ui.post(f"/e/deal/{deal}/move", headers={"HX-Request": "true"},
                    data={"csrf_token": ui_admin, "field": "stage", "value": "lost", "version": old_version})
    assert stale.status_code == 409 and "someone else changed this record" in stale.text
    assert stale.headers["HX-Retarget"] == f"#msg-{deal}"  # next to the card
    assert stage_of(ui, deal) == "qualification"
    current = version(ui.get(BOARD).text, deal)
    for value, message in [("", "required"), ("bought", "is not one of the options")]:
        refused = ui.post(f"/e/deal/{deal}/move", headers={"HX-Request": "true"},
                          data={"csrf_token": ui_admin, "field": "stage", "value": value, "version": current})
        assert refused.status_code == 422 and "Not moved" in refused.text and message in refused.text, refused.text
        assert stage_of(ui, deal) == "qualification"
    # Without JavaScript: the board again, with the message.
    plain = ui.post(f"/e/deal/{deal}/move", data={"csrf_token": ui_admin, "field": "stage", "value": "lost", "version": old_version})
    assert plain.status_code == 409 and "Contested: Not moved: someone else changed" in plain.text and 'class="board"' in plain.text
    assert stage_of(ui, deal) == "qualification"


def test_without_update_rights_there_are_no_move_controls_and_a_forged_move_is_refused(ui: TestClient, ui_admin: str) -> None:
    security = ui.app.state.platform.security()
    ui.blocking_portal.call(security.create_team, "North")
    for name, role in [("sam", "sales"), ("sue", "service")]:
        make_user(ui, name, [role])
        ui.blocking_portal.call(security.add_member, "North", name)
    sam = log_in(ui, "sam")
    deal = new_deal(ui, sam, "Team deal", "prospecting")
    sam_board = ui.get(BOARD).text
    assert f'id="move-{deal}"' in sam_board and 'draggable="true"' in sam_board  # sales updates deals of the team

    sue = log_in(ui, "sue")  # service reads the team's deals but may not update them
    page = ui.get(BOARD).text
    assert "Team deal" in page
    assert 'draggable="true"' not in page and "<form" not in page.split('class="board"')[1] and "Move to" not in page
    assert "Drag a card" not in page
    forged = ui.post(f"/e/deal/{deal}/move", headers={"HX-Request": "true"},
                     data={"csrf_token": sue, "field": "stage", "value": "won", "version": "1"})
    assert forged.status_code == 403
    assert stage_of(ui, deal) == "prospecting"


def test_moving_needs_the_csrf_token(ui: TestClient, ui_admin: str) -> None:
    deal = new_deal(ui, ui_admin, "Guarded", "prospecting")
    for token in (None, "wrong-token"):
        data = {"field": "stage", "value": "won", "version": "1", **({"csrf_token": token} if token else {})}
        assert ui.post(f"/e/deal/{deal}/move", data=data, follow_redirects=False).status_code == 403
        assert ui.post(f"/e/deal/{deal}/move", data={k: v for k, v in data.items() if k != "csrf_token"},
                       headers={"HX-Request": "true", **({"X-CSRF-Token": token} if token else {})}).status_code == 403
    assert stage_of(ui, deal) == "prospecting"


# -- in a real browser: drag and drop, keyboard, messages, bulk actions ---------------------------
CHROMIUM = "/usr/bin/chromium"
GRIP = {"x": 8, "y": 6}
"""Where a card is grabbed (its top edge: a select or button does not start a drag)."""
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def test_board_and_bulk_actions_in_a_browser(server_uri: str, tmp_path: Any) -> None:
    import json
    import urllib.request
    from pathlib import Path

    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("no Chromium")
    from conftest import create_token, fresh_database, live_server

    with fresh_database(server_uri) as uri:
        token = create_token(uri, "admin", ["admin"])
        with live_server(uri, tmp_path) as base:
            def api(method: str, path: str, body: Any = None) -> Any:
                request = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode() if body else None,
                                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
                with urllib.request.urlopen(request) as response:
                    return json.loads(response.read() or b"null")

            ids = {title: api("POST", "/api/v1/deal", {"title": title, "stage": "prospecting"})["id"] for title in ("Drag me", "Key me", "Stuck")}
            with sync_api.sync_playwright() as playwright:
                browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    page = browser.new_page(viewport={"width": 2000, "height": 900})
                    page.goto(base + "/login?next=/e/deal/board/stage")
                    page.fill("input[name=name]", "admin")
                    page.fill("input[name=password]", "a-long-password")
                    page.keyboard.press("Enter")
                    page.wait_for_url("**/e/deal/board/stage")
                    expect = sync_api.expect
                    # Drag and drop: the card lands at the top of the new column.
                    # No transition leads from Prospecting to Won: the card stays, the reason is next to it.
                    page.drag_and_drop(f"#card-{ids['Drag me']}", "section[data-column='3']", source_position=GRIP)
                    expect(page.locator(f"#msg-{ids['Drag me']}")).to_contain_text("there is no transition from Prospecting to Won")
                    expect(page.locator(f"#cards-0 #card-{ids['Drag me']}")).to_be_visible()
                    assert api("GET", f"/api/v1/deal/{ids['Drag me']}")["stage"] == "prospecting"
                    # The next column: the transition "qualify".
                    page.drag_and_drop(f"#card-{ids['Drag me']}", "section[data-column='1']", source_position=GRIP)
                    expect(page.locator(f"#cards-1 #card-{ids['Drag me']}")).to_be_visible()
                    expect(page.locator("#count-1")).to_contain_text("1")
                    expect(page.locator("#board-status")).to_contain_text("Drag me moved to Qualification.")
                    assert api("GET", f"/api/v1/deal/{ids['Drag me']}")["stage"] == "qualification"
                    # A refused move (someone else changed the record meanwhile): the card stays, the message is next to it.
                    api("PATCH", f"/api/v1/deal/{ids['Stuck']}", {"probability": 10})
                    page.drag_and_drop(f"#card-{ids['Stuck']}", "section[data-column='4']", source_position=GRIP)
                    expect(page.locator(f"#msg-{ids['Stuck']}")).to_contain_text("someone else changed this record")
                    expect(page.locator(f"#cards-0 #card-{ids['Stuck']}")).to_be_visible()
                    assert page.locator(f"#move-{ids['Stuck']}").input_value() == "prospecting"
                    assert api("GET", f"/api/v1/deal/{ids['Stuck']}")["stage"] == "prospecting"

                    # At phone width the board scrolls sideways (the page does not); the keyboard moves cards:
                    # the labelled select and the Move button; the moved card keeps the focus.
                    page.set_viewport_size({"width": 390, "height": 800})
                    assert page.evaluate("document.querySelector('#board').scrollWidth > document.querySelector('#board').clientWidth")
                    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
                    page.get_by_label("Move to").and_(page.locator(f"#move-{ids['Key me']}")).focus()
                    page.keyboard.press("ArrowDown")  # a closed select changes its value with the arrow keys
                    page.select_option(f"#move-{ids['Key me']}", "lost")
                    page.keyboard.press("Tab")  # to the Move button
                    page.keyboard.press("Enter")
                    expect(page.locator(f"#cards-4 #card-{ids['Key me']}")).to_be_focused()
                    assert api("GET", f"/api/v1/deal/{ids['Key me']}")["stage"] == "lost"

                    # Bulk delete on the list: select all, confirm, the list reloads without them.
                    page.goto(base + "/e/deal")
                    page.get_by_label("Select all on this page").check()
                    page.once("dialog", lambda dialog: dialog.accept())
                    page.locator("#bulk-form button[value=delete]").click()
                    expect(page.locator("#bulk-result")).to_contain_text("3 records deleted.")
                    expect(page.locator("#results")).to_contain_text("No records match.")
                finally:
                    browser.close()


def test_a_column_counts_at_most_ten_thousand_cards(ui: TestClient, ui_admin: str) -> None:
    """Like lists, a column of a huge pipeline says "10,000+" rather than counting a million records on every view."""
    async def fill() -> None:
        async with ui.app.state.platform.db.connection() as connection:
            await connection.execute("INSERT INTO public.deal (title, stage) SELECT 'Bulk ' || g, 'won' FROM generate_series(1, 10001) g")

    ui.blocking_portal.call(fill)
    new_deal(ui, ui_admin, "Single", "lost")
    board = columns(ui.get(BOARD).text)
    assert "10,000+" in board["3"] and "more than 10,000 records" in board["3"], board["3"][:400]
    assert re.search(r'id="count-4"><span aria-hidden="true">1<', board["4"])
