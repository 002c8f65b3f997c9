"""The web UI over HTTP (server-rendered pages): login, navigation, lists, detail, forms, CSRF, escaping.

The browser tests (tests/test_webui_browser.py) drive the same pages in Chromium.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient

from conftest import ROOT, csrf, form_controls, log_in, make_user


def test_pages_need_a_login_and_come_back_after_it(ui: TestClient) -> None:
    make_user(ui, "anna", ["sales"])
    response = ui.get("/e/account?q=x", follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"] == "/login?next=%2Fe%2Faccount%3Fq%3Dx"
    wrong = ui.post("/login", data={"name": "anna", "password": "nope", "next": "/e/account"})
    assert wrong.status_code == 401 and "Wrong user name or password" in wrong.text
    ok = ui.post("/login", data={"name": "anna", "password": "a-long-password", "next": "/e/account?q=x"}, follow_redirects=False)
    assert ok.headers["location"] == "/e/account?q=x"
    cookie = ok.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=lax" in cookie
    evil = ui.post("/login", data={"name": "anna", "password": "a-long-password", "next": "//evil.example/"}, follow_redirects=False)
    assert evil.headers["location"] == "/"  # no open redirect


def test_navigation_shows_only_entities_the_user_may_read(ui: TestClient) -> None:
    make_user(ui, "admin", ["admin"])
    # A role that reads accounts only.
    platform = ui.app.state.platform
    security = platform.security()
    ui.blocking_portal.call(security.create_role, "reader")
    ui.blocking_portal.call(security.grant, "reader", "account", "read", "all")
    make_user(ui, "rita", ["reader"])
    log_in(ui, "rita")
    home = ui.get("/").text
    assert 'href="/e/account"' in home and 'href="/e/deal"' not in home and 'href="/e/contact"' not in home
    assert ui.get("/e/deal").status_code == 403
    assert "Deals" not in ui.get("/search?q=ACME").text


def test_create_read_edit_and_delete_through_forms(ui: TestClient, ui_admin: str) -> None:
    form = ui.get("/e/account/new")
    assert form.status_code == 200 and 'name="name"' in form.text
    created = ui.post("/e/account/new", data={"csrf_token": ui_admin, "name": "ACME <script>alert(1)</script>", "employees": "12"},
                       follow_redirects=False)
    assert created.status_code == 303
    detail = ui.get(created.headers["location"])
    assert "ACME &lt;script&gt;alert(1)&lt;/script&gt;" in detail.text and "<script>alert(1)" not in detail.text
    assert ">12<" in detail.text.replace(" ", "")
    listing = ui.get("/e/account")
    assert "ACME &lt;script&gt;" in listing.text

    record_path = created.headers["location"]
    edit = ui.get(record_path + "/edit")
    version = re.search(r'name="version" value="(\d+)"', edit.text).group(1)  # type: ignore[union-attr]
    bad = ui.post(record_path + "/edit", data={"csrf_token": ui_admin, "version": version, "name": "ACME", "employees": "twelve"})
    assert bad.status_code == 422 and "is not a whole number" in bad.text and 'value="twelve"' in bad.text  # input kept
    saved = ui.post(record_path + "/edit", data={"csrf_token": ui_admin, "version": version, "name": "ACME AG", "employees": "13"},
                     follow_redirects=False)
    assert saved.status_code == 303
    page = ui.get(record_path).text
    assert "ACME AG" in page and "changed" in page  # the history timeline shows the change
    stale = ui.post(record_path + "/edit", data={"csrf_token": ui_admin, "version": version, "name": "Old tab", "employees": "1"})
    assert stale.status_code == 409 and "Someone else changed this record" in stale.text and 'value="Old tab"' in stale.text

    assert ui.post(record_path + "/delete", data={"csrf_token": ui_admin}, follow_redirects=False).status_code == 303
    assert "This record is deleted" in ui.get(record_path).text
    assert "ACME AG" not in ui.get("/e/account").text
    ui.post(record_path + "/restore", data={"csrf_token": ui_admin})
    assert "ACME AG" in ui.get("/e/account").text


def test_validation_errors_appear_next_to_the_field(ui: TestClient, ui_admin: str) -> None:
    response = ui.post("/e/deal/new", data={"csrf_token": ui_admin, "title": "", "stage": "open"})
    assert response.status_code == 422
    assert re.search(r'id="field-title-error">[^<]*required', response.text), response.text[:3000]
    assert 'aria-invalid="true"' in response.text
    # An input that cannot even be read (not a number) and a missing required one: both at once.
    both = ui.post("/e/deal/new", data={"csrf_token": ui_admin, "title": "", "stage": "prospecting", "probability": "lots"})
    assert both.status_code == 422
    assert re.search(r'id="field-title-error">[^<]*required', both.text) and re.search(r'id="field-probability-error">[^<]*number', both.text)
    assert 'value="lots"' in both.text  # the user's input is kept


def test_every_state_changing_request_needs_the_csrf_token(ui: TestClient, ui_admin: str) -> None:
    created = ui.post("/e/account/new", data={"csrf_token": ui_admin, "name": "Kept"}, follow_redirects=False)
    path = created.headers["location"]
    for url, data in [("/e/account/new", {"name": "Forged"}), (path + "/edit", {"name": "Forged", "version": "1"}),
                      (path + "/delete", {}), ("/language", {"language": "de"}), ("/logout", {})]:
        for token in (None, "wrong-token"):
            body = dict(data, **({"csrf_token": token} if token else {}))
            response = ui.post(url, data=body, follow_redirects=False)
            assert response.status_code == 403, (url, token, response.status_code)
    assert "Forged" not in ui.get("/e/account").text and "Kept" in ui.get("/e/account").text


def test_list_search_filter_sort_and_load_more(ui: TestClient, ui_admin: str) -> None:
    for i in range(60):
        ui.post("/e/account/new", data={"csrf_token": ui_admin, "name": f"Firma {i:02}", "employees": str(i)})
    first = ui.get("/e/account?sort=employees").text
    assert "60 records" in first and "Firma 00" in first and "Firma 55" not in first and "Load more" in first
    more = re.search(r'hx-get="([^"]+after=[^"]+)"', first).group(1).replace("&amp;", "&")  # type: ignore[union-attr]
    rest = ui.get(more, headers={"HX-Request": "true"}).text
    assert "Firma 55" in rest and "<html" not in rest and "Load more" not in rest
    filtered = ui.get("/e/account?employees[gte]=10&employees[lte]=12&sort=-employees", headers={"HX-Request": "true", "HX-Target": "results"}).text
    assert filtered.index("Firma 12") < filtered.index("Firma 10") and "Firma 13" not in filtered and "<html" not in filtered
    assert "3 records" in filtered
    searched = ui.get("/e/account?q=Firma 07").text
    assert "1 record" in searched and "Firma 07" in searched
    bad = ui.get("/e/account?employees[gte]=many").text
    assert "This filter cannot be applied" in bad
    export = ui.get("/e/account/export.csv?employees[lte]=1")
    assert export.status_code == 200 and export.text.count("Firma") == 2


def test_a_datetime_range_filter_takes_what_the_browsers_picker_sends(ui: TestClient, ui_admin: str) -> None:
    """datetime-local sends 2024-05-01T10:00 (no offset); the UI takes it as UTC, like its forms."""
    for title, closed in (("Early", "2024-05-01T09:00"), ("Late", "2024-05-01T11:30")):
        response = ui.post("/e/deal/new", data={"csrf_token": ui_admin, "title": title, "stage": "won", "closed_at": closed},
                           follow_redirects=False)
        assert response.status_code == 303, response.text
    page = ui.get("/e/deal?closed_at[gte]=2024-05-01T10:00&closed_at[lte]=2024-05-01T12:00:00").text
    assert "This filter cannot be applied" not in page and "Late" in page and "Early" not in page
    assert 'value="2024-05-01T10:00"' in page  # the picker keeps what was chosen, in its own form


def test_german_for_a_german_user(ui: TestClient, ui_admin: str) -> None:
    ui.post("/language", data={"csrf_token": ui_admin, "language": "de", "next": "/"})
    home = ui.get("/").text
    assert 'lang="de"' in home and "Firmen" in home and "Abmelden" in home
    ui.post("/e/deal/new", data={"csrf_token": ui_admin, "title": "Großauftrag", "stage": "won", "amount": "1234567.5",
                                  "amount__currency": "EUR", "close_date": "2024-12-31"})
    listing = ui.get("/e/deal").text
    assert "1.234.567,50 EUR" in listing and "Gewonnen" in listing and "<th scope=\"col\">Name</th>" in listing
    detail = ui.get(re.search(r'href="(/e/deal/[0-9a-f-]{36})"', listing).group(1)).text  # type: ignore[union-attr]
    assert "31.12.2024" in detail and "Verlauf" in detail and "angelegt" in detail



def test_every_ui_string_has_a_german_translation() -> None:
    from babel.messages.extract import DEFAULT_KEYWORDS, extract_from_dir

    from xrm.webui.i18n import read_catalog

    keywords = {**DEFAULT_KEYWORDS, "_": None, "gettext": None, "ngettext": (1, 2)}
    found = {
        message if isinstance(message, str) else message[0]
        for _, _, message, _, _ in extract_from_dir(
            str(ROOT / "webui"), method_map=[("**.py", "python"), ("templates/**.html", "jinja2")], keywords=keywords
        )
    }
    assert len(found) > 50  # the extraction works (it fails loudly rather than finding nothing)
    german = read_catalog("de")
    missing = sorted(m for m in found if not german.get(m))
    assert missing == [], "run webui/locale/translate.py and translate: " + "; ".join(missing)


def test_a_reference_filter_picks_a_record_by_name(ui: TestClient, ui_admin: str) -> None:
    acme = ui.post("/e/account/new", data={"csrf_token": ui_admin, "name": "ACME"}, follow_redirects=False).headers["location"]
    acme_id = acme.rsplit("/", 1)[1]
    ui.post("/e/account/new", data={"csrf_token": ui_admin, "name": "Globex"})
    for title, account in (("Rockets", acme_id), ("Anvils", acme_id), ("Other deal", "")):
        ui.post("/e/deal/new", data={"csrf_token": ui_admin, "title": title, "stage": "won", "account": account})
    options = ui.get("/e/account/lookup?field=account&account__search=AC").text
    assert f'data-lookup-id="{acme_id}"' in options and "Globex" not in options
    # What the filter form sends after a pick: the id, plus the search box's text (ignored).
    listing = ui.get(f"/e/deal?account={acme_id}&account__search=ACME").text
    assert "2 records" in listing and "Rockets" in listing and "Other deal" not in listing
    assert f'name="account" value="{acme_id}"' in listing and 'value="ACME"' in listing  # the picker shows the name


def test_the_history_names_options_by_their_labels(ui: TestClient, ui_admin: str) -> None:
    ui.post("/language", data={"csrf_token": ui_admin, "language": "de", "next": "/"})
    created = ui.post("/e/deal/new", data={"csrf_token": ui_admin, "title": "Etiketten", "stage": "won"}, follow_redirects=False)
    history = ui.get(created.headers["location"]).text.split('class="history"')[1]
    assert "Gewonnen" in history and ">won<" not in history


# -- edit conflicts: two people change the same record --------------------------------------
def _form_fields(html: str, **changes: str) -> dict[str, Any]:
    """What the browser sends for the record form on this page (a list for a repeated name), some inputs changed as a user would."""
    fields: dict[str, Any] = {}
    for name, value in form_controls(html, "record-form"):
        fields[name] = [*fields[name], value] if isinstance(fields.get(name), list) else [fields[name], value] if name in fields else value
    return {**fields, **changes}


def _values(ui: TestClient, path: str) -> dict[str, str]:
    return dict(_form_fields(ui.get(path + "/edit").text))


def _two_edits(ui: TestClient, ui_admin: str, theirs: dict[str, str], mine: dict[str, str]) -> tuple[str, Any]:
    """anna opens the edit form of a deal; bob opens it too and saves `theirs`; then anna saves `mine`: (path, her response)."""
    make_user(ui, "anna", ["admin"])
    make_user(ui, "bob", ["admin"])
    path = ui.post("/e/deal/new", data={"csrf_token": ui_admin, "title": "Rockets", "stage": "qualification", "probability": "10"},
                   follow_redirects=False).headers["location"]
    log_in(ui, "anna")
    annas_form = ui.get(path + "/edit").text
    token = log_in(ui, "bob")
    saved = ui.post(path + "/edit", data=_form_fields(ui.get(path + "/edit").text, csrf_token=token, **theirs), follow_redirects=False)
    assert saved.status_code == 303, saved.text
    token = log_in(ui, "anna")
    return path, ui.post(path + "/edit", data=_form_fields(annas_form, csrf_token=token, **mine))


def test_a_conflict_lists_only_the_other_persons_changes_and_applying_mine_keeps_them(ui: TestClient, ui_admin: str) -> None:
    path, conflict = _two_edits(ui, ui_admin, theirs={"probability": "90", "stage": "lost"}, mine={"title": "Rockets XL"})
    assert conflict.status_code == 409 and "Someone else changed this record" in conflict.text
    panel = conflict.text.split('id="conflict"')[1].split("</article>")[0]
    # Only bob's changes, named by their labels, before and now, with who changed them; not anna's own title.
    assert 'data-field="probability"' in panel and 'data-field="stage"' in panel and 'data-field="title"' not in panel
    stage = panel.split('data-field="stage"')[1].split("</tr>")[0]
    assert "Qualification" in stage and "Lost" in stage and ">lost<" not in stage and "bob" in stage
    assert "90" in panel.split('data-field="probability"')[1].split("</tr>")[0]
    assert "you changed it too" not in panel and "_resolve_" not in panel  # no true conflict
    assert "Rockets XL" in panel  # her own change, still to apply
    form = dict(_form_fields(conflict.text))
    assert form["title"] == "Rockets XL" and form["probability"] == "90" and form["stage"] == "lost"  # her input, their values
    applied = ui.post(path + "/edit", data=_form_fields(conflict.text), follow_redirects=False)
    assert applied.status_code == 303, applied.text
    after = _values(ui, path)
    assert after["title"] == "Rockets XL" and after["probability"] == "90" and after["stage"] == "lost"  # bob's change kept


def test_a_true_conflict_shows_both_values_and_mine_wins_only_when_chosen(ui: TestClient, ui_admin: str) -> None:
    path, conflict = _two_edits(ui, ui_admin, theirs={"probability": "90"}, mine={"probability": "50", "title": "Rockets XL"})
    assert conflict.status_code == 409
    panel = conflict.text.split('id="conflict"')[1].split("</article>")[0]
    row = panel.split('data-field="probability"')[1].split("</tr>")[0]
    assert "you changed it too" in row and "10" in row and "90" in row and "bob" in row
    choice = panel.split('class="conflict-choice"')[1].split("</fieldset>")[0]
    assert re.search(r'name="_resolve_probability" value="theirs" checked>[^<]*<strong>90</strong>', choice)
    assert re.search(r'name="_resolve_probability" value="mine">[^<]*<strong>50</strong>', choice)
    assert dict(_form_fields(conflict.text))["probability"] == "50"  # what she typed is kept in the form
    # Not confirmed: bob's value stays, her other change is applied.
    assert ui.post(path + "/edit", data=_form_fields(conflict.text), follow_redirects=False).status_code == 303
    after = _values(ui, path)
    assert after["probability"] == "90" and after["title"] == "Rockets XL"


def test_in_a_true_conflict_my_value_is_saved_when_i_choose_it(ui: TestClient, ui_admin: str) -> None:
    path, conflict = _two_edits(ui, ui_admin, theirs={"probability": "90", "stage": "lost"}, mine={"probability": "50"})
    assert conflict.status_code == 409
    chosen = _form_fields(conflict.text, _resolve_probability="mine")
    assert ui.post(path + "/edit", data=chosen, follow_redirects=False).status_code == 303
    after = _values(ui, path)
    assert after["probability"] == "50" and after["stage"] == "lost"


def test_saving_an_edit_form_writes_only_the_fields_the_user_changed(ui: TestClient, ui_admin: str) -> None:
    path = ui.post("/e/deal/new", data={"csrf_token": ui_admin, "title": "Quiet", "stage": "won", "probability": "10"},
                   follow_redirects=False).headers["location"]
    form = ui.get(path + "/edit").text
    unchanged = ui.post(path + "/edit", data=_form_fields(form), follow_redirects=False)
    assert unchanged.status_code == 303
    assert _values(ui, path)["version"] == "1"  # nothing to write: no new version
    assert ui.post(path + "/edit", data=_form_fields(form, probability="20"), follow_redirects=False).status_code == 303
    after = _values(ui, path)
    assert after["version"] == "2" and after["probability"] == "20" and after["title"] == "Quiet"
