"""The no-code entity designer over HTTP: draft editing, problems at the right input, preview, plan, apply, history, admin only.

Every post sends what a browser would send: the designer form's current
controls (parsed from the page just returned, hidden draft included) with the
test's changes on top, and the clicked button's action.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urlencode

import pytest
from conftest import csrf, log_in, make_user
from litestar.testing import TestClient


class _Form(HTMLParser):
    """The successful controls of one form, as a browser would submit them (no buttons)."""

    def __init__(self, form_id: str) -> None:
        super().__init__()
        self.form_id = form_id
        self.inside = False
        self.fields: list[tuple[str, str]] = []
        self.textarea: list[str] | None = None
        self.select: dict[str, Any] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: (v or "") for k, v in attrs}
        if tag == "form":
            self.inside = a.get("id") == self.form_id
        if not self.inside or "disabled" in a:
            return
        if tag == "input" and a.get("name"):
            kind = a.get("type", "text")
            if kind in ("submit", "button", "reset"):
                return
            if kind in ("checkbox", "radio"):
                if "checked" in a:
                    self.fields.append((a["name"], a.get("value", "on")))
            else:
                self.fields.append((a["name"], a.get("value", "")))
        elif tag == "textarea":
            self.textarea = [a["name"], ""]
        elif tag == "select":
            self.select = {"name": a["name"], "first": None, "selected": None}
        elif tag == "option" and self.select is not None:
            value = a.get("value", "")
            if self.select["first"] is None:
                self.select["first"] = value
            if "selected" in a:
                self.select["selected"] = value

    def handle_data(self, data: str) -> None:
        if self.textarea is not None:
            self.textarea[1] += data

    def handle_endtag(self, tag: str) -> None:
        if tag == "form" and self.inside:
            self.inside = False
        elif tag == "textarea" and self.textarea is not None:
            text = self.textarea[1].removeprefix("\n")
            self.fields.append((self.textarea[0], text))
            self.textarea = None
        elif tag == "select" and self.select is not None:
            chosen = self.select["selected"] if self.select["selected"] is not None else self.select["first"]
            if chosen is not None:
                self.fields.append((self.select["name"], chosen))
            self.select = None


def post_form(client: TestClient, url: str, pairs: list[tuple[str, str]]) -> Any:
    """A form post with repeated names (checkbox groups), url-encoded as a browser does."""
    return client.post(url, content=urlencode(pairs), headers={"Content-Type": "application/x-www-form-urlencoded"},
                       follow_redirects=False)


def form_of(html: str, form_id: str = "designer") -> list[tuple[str, str]]:
    parser = _Form(form_id)
    parser.feed(html)
    assert parser.fields, f"no form #{form_id} on the page"
    return parser.fields


def submit(client: TestClient, page: Any, action: str, changes: dict[str, Any] | None = None) -> Any:
    """Click the button with this action on the designer page, after changing inputs (None unticks / removes)."""
    fields = form_of(page.text)
    changes = changes or {}
    data = [(k, v) for k, v in fields if k not in changes]
    for name, value in changes.items():
        if value is None:
            continue
        for item in value if isinstance(value, list) else [value]:
            data.append((name, item))
    data.append(("action", action))
    return post_form(client, "/admin/designer/draft", data)


def draft_of(page: Any) -> dict[str, Any]:
    return json.loads(dict(form_of(page.text))["draft"])


def index_of(page: Any, name: str) -> int:
    return list(draft_of(page)["properties"]).index(name)


def error_at(page: Any, input_id: str) -> str:
    """The problem shown under an input (its aria-describedby error), or ""."""
    found = re.search(rf'<small class="field-error" id="{re.escape(input_id)}-error">([^<]*)</small>', page.text)
    if found is None:
        return ""
    assert f'id="{input_id}"' in page.text and f'aria-describedby="{input_id}-error' in page.text
    return found.group(1)


def add(client: TestClient, page: Any, name: str, type_name: str) -> Any:
    result = submit(client, page, "add", {"new_field_name": name, "new_field_type": type_name})
    assert result.status_code == 200, result.text
    assert name in draft_of(result)["properties"]
    return result


def test_an_admin_designs_previews_plans_and_applies_a_new_entity(ui: TestClient, ui_admin: str) -> None:
    home = ui.get("/admin/designer")
    assert home.status_code == 200 and 'href="/admin/designer/new"' in home.text
    assert 'href="/admin/designer/deal/edit"' in home.text and 'href="/admin/designer/deal/history"' in home.text
    shipped = ui.get("/admin/designer/deal/history").text  # applied from entity_schemas/ at start
    assert "system (definition files)" in shipped and "00000000-0000" not in shipped

    page = ui.get("/admin/designer/new")
    assert page.status_code == 200
    page = submit(ui, page, "check", {"entity_name": "project", "label_en": "Project", "label_de": "Projekt",
                                      "plural_en": "Projects", "plural_de": "Projekte"})
    assert page.status_code == 422 and error_at(page, "entity-name") == ""
    assert 'id="fields-error"' in page.text  # an entity needs a field: said at the field list
    for name, type_name in [("Title", "text"), ("budget", "currency"), ("due", "date"), ("status", "select"),
                            ("account", "reference"), ("active", "boolean"), ("tags", "multiselect"), ("notes", "long_text")]:
        page = add(ui, page, name, type_name)
    # The entity inputs typed before survive every post (the draft round-trips).
    draft = draft_of(page)
    assert draft["x-xrm"]["label"] == {"en": "Project", "de": "Projekt"} and draft["x-xrm"]["plural"]["de"] == "Projekte"

    # Bad input: an upper-case field name, a select and a reference without their settings.
    title, status, account = index_of(page, "Title"), index_of(page, "status"), index_of(page, "account")
    page = submit(ui, page, "check")
    assert page.status_code == 422
    assert "lower-case" in error_at(page, f"f{title}-name")
    assert "options" in error_at(page, f"f{status}-options")
    assert "reference" in error_at(page, f"f{account}-references")
    assert error_at(page, f"f{index_of(page, 'due')}-name") == ""
    assert len(draft_of(page)["properties"]) == 8  # the draft is kept, problems and all

    # Fix them, fill in labels, required, unique, help, sensitive and personal flags.
    tags = index_of(page, "tags")
    page = submit(ui, page, "check", {
        f"f{title}-name": "title", f"f{title}-label_en": "Title", f"f{title}-label_de": "Titel", f"f{title}-required": "true",
        f"f{title}-unique": "true", f"f{title}-help_en": "What the project is called", f"f{title}-help_de": "Wie das Projekt heißt",
        f"f{status}-options": "planned | Planned | Geplant\nrunning | Running | Läuft\ndone",
        f"f{account}-references": "account",
        f"f{tags}-options": "internal\nexternal | External | Extern",
        f"f{index_of(page, 'budget')}-sensitive": "true",
        f"f{index_of(page, 'notes')}-personal": "true",
    })
    assert page.status_code == 200, page.text
    assert "No problems found" in page.text
    draft = draft_of(page)
    assert next(iter(draft["properties"])) == "title" and draft["required"] == ["title"]
    assert draft["properties"]["title"]["x-xrm"]["unique"] is True
    assert draft["properties"]["title"]["x-xrm"]["help"] == {"en": "What the project is called", "de": "Wie das Projekt heißt"}
    assert draft["properties"]["status"]["enum"] == ["planned", "running", "done"]
    assert draft["properties"]["status"]["x-xrm"]["option_labels"]["running"] == {"en": "Running", "de": "Läuft"}
    assert draft["properties"]["tags"]["items"]["enum"] == ["internal", "external"]
    assert draft["properties"]["budget"]["x-xrm"]["sensitive"] is True and draft["properties"]["notes"]["x-xrm"]["personal"] is True

    # Reorder with the buttons: notes up one, then down again; the moved field's button keeps the focus.
    notes = index_of(page, "notes")
    page = submit(ui, page, f"up:{notes}")
    assert index_of(page, "notes") == notes - 1
    assert re.search(rf'id="f{notes - 1}-up"[^>]*aria-label="Move notes up"[^>]*autofocus', page.text)
    page = submit(ui, page, f"down:{notes - 1}")
    assert index_of(page, "notes") == notes
    # Display and search fields of the entity.
    page = submit(ui, page, "check", {"display_field": "title", "search_fields": ["title", "notes"]})
    assert draft_of(page)["x-xrm"]["display_field"] == "title" and draft_of(page)["x-xrm"]["search_fields"] == ["title", "notes"]

    preview = submit(ui, page, "preview")
    assert preview.status_code == 200 and 'id="preview"' in preview.text
    section = preview.text[preview.text.index('id="preview"'):]
    assert 'id="preview-title"' in section and 'id="preview-status"' in section and ">Planned<" in section
    assert 'id="preview-budget"' in section and 'data-lookup-input="account"' in section
    assert "<fieldset disabled>" in section

    plan = submit(ui, preview, "plan")
    assert plan.status_code == 200 and 'id="plan"' in plan.text
    assert "create entity project with 8 fields" in plan.text and "kind-safe" in plan.text
    assert 'value="apply"' in plan.text and "confirm_destructive" not in plan.text

    applied = submit(ui, plan, "apply")
    assert applied.status_code == 303, applied.text
    assert applied.headers["location"] == "/admin/designer/project/edit?applied=1"
    edit = ui.get(applied.headers["location"])
    assert "Applied" in edit.text and 'href="/e/project"' in edit.text  # in the navigation at once
    assert ui.get("/e/project").status_code == 200
    api = ui.get("/api/v1/project")
    assert api.status_code == 200 and api.json()["records"] == []
    meta = ui.get("/api/v1/meta/entities/project").json()["definition"]
    assert meta == draft_of(plan)  # the designer wrote exactly its draft, as a file or the API would
    # The same definition as the file format / API: parse it like them.
    from xrm.schema.definition import parse_definition

    assert parse_definition(meta, known_entities=["account", "project"]).fields["status"].type.name == "select"
    # An untouched draft of the applied entity plans nothing.
    assert "No changes" in submit(ui, edit, "plan").text


@pytest.mark.parametrize("entity", ["account", "contact", "deal"])
def test_an_unchanged_draft_of_an_applied_entity_plans_nothing(ui: TestClient, ui_admin: str, entity: str) -> None:
    """The page shows every input of the definition and sends them all back: untouched, that is the same document."""
    edit = ui.get(f"/admin/designer/{entity}/edit")
    assert edit.status_code == 200
    plan = submit(ui, edit, "plan")
    assert plan.status_code == 200 and "No changes: the database already matches this draft." in plan.text, plan.text
    assert draft_of(plan) == ui.get(f"/api/v1/meta/entities/{entity}").json()["definition"]
    assert json.dumps(draft_of(plan)) == json.dumps(ui.get(f"/api/v1/meta/entities/{entity}").json()["definition"])  # key order too


def _project(ui: TestClient) -> Any:
    page = ui.get("/admin/designer/new")
    page = submit(ui, page, "add", {"entity_name": "project", "label_en": "Project", "new_field_name": "title", "new_field_type": "text"})
    page = add(ui, page, "budget", "integer")
    page = add(ui, page, "phone", "phone")
    page = submit(ui, page, "plan")
    applied = submit(ui, page, "apply")
    assert applied.status_code == 303, applied.text
    return ui.get(applied.headers["location"])


def test_removing_a_field_is_destructive_and_needs_the_confirmation(ui: TestClient, ui_admin: str) -> None:
    edit = _project(ui)
    created = ui.post("/e/project/new", data={"csrf_token": ui_admin, "title": "Apollo", "budget": "1200"}, follow_redirects=False)
    assert created.status_code == 303

    page = submit(ui, edit, f"remove:{index_of(edit, 'budget')}")
    assert "budget" not in draft_of(page)["properties"]
    plan = submit(ui, page, "plan")
    assert "kind-destructive" in plan.text and "remove field project.budget" in plan.text
    assert "archives 1 values" in plan.text and 'name="confirm_destructive"' in plan.text

    refused = submit(ui, plan, "apply")
    assert refused.status_code == 422 and error_at(refused, "confirm-destructive")
    assert "budget" in ui.app.state.platform.registry.get("project").fields  # nothing changed
    assert "budget" not in draft_of(refused)["properties"]  # the draft is kept

    # Apply is for the plan that was shown: a draft changed since is planned again first.
    changed = submit(ui, refused, "apply", {"confirm_destructive": "true", "label_en": "Big project"})
    assert changed.status_code == 409 and "changed after the migration plan" in changed.text
    assert "budget" in ui.app.state.platform.registry.get("project").fields

    done = submit(ui, changed, "apply", {"confirm_destructive": "true"})
    assert done.status_code == 303, done.text
    assert "budget" not in ui.app.state.platform.registry.get("project").fields
    record = ui.get("/api/v1/project").json()["records"][0]
    assert record["title"] == "Apollo" and "budget" not in record

    history = ui.get("/admin/designer/project/history")
    assert history.status_code == 200
    rows = re.findall(r'<tr>\s*<td class="num">(\d+)</td>', history.text)
    assert rows == ["2", "1"]
    assert "Field budget removed" in history.text and "Entity settings changed: label" in history.text
    assert "Entity created with 3 fields" in history.text and history.text.count(">admin<") >= 2


def test_renaming_a_field_keeps_its_data(ui: TestClient, ui_admin: str) -> None:
    edit = _project(ui)
    ui.post("/e/project/new", data={"csrf_token": ui_admin, "title": "Apollo", "phone": "+49 89 1234567"})
    i = index_of(edit, "phone")
    page = submit(ui, edit, "plan", {f"f{i}-name": "mobile", f"f{i}-label_en": "Mobile"})
    assert draft_of(page)["properties"]["mobile"]["x-xrm"]["renamed_from"] == "phone"
    assert "rename field" in page.text and "kind-destructive" not in page.text
    assert submit(ui, page, "apply").status_code == 303
    assert ui.get("/api/v1/project").json()["records"][0]["mobile"] == "+49 89 1234567"
    assert "Field phone renamed to mobile" in ui.get("/admin/designer/project/history").text


def test_a_new_entity_cannot_take_an_existing_name_and_type_changes_show_their_inputs(ui: TestClient, ui_admin: str) -> None:
    page = ui.get("/admin/designer/new")
    page = submit(ui, page, "add", {"entity_name": "account", "label_en": "Account", "new_field_name": "name", "new_field_type": "text"})
    checked = submit(ui, page, "plan")
    assert checked.status_code == 422 and "exists already" in error_at(checked, "entity-name") and 'id="plan"' not in checked.text
    # Changing a field's type to select: the options input is shown and the missing options are named there.
    page = submit(ui, page, "check", {"entity_name": "ticket", "f0-type": "select"})
    assert page.status_code == 422 and "options" in error_at(page, "f0-options")
    assert re.search(r'<div data-for-types="select multiselect" data-field="f0">', page.text)  # not hidden
    # A duplicate name for an added field is refused at the "add" input.
    again = submit(ui, page, "add", {"new_field_name": "name", "new_field_type": "integer"})
    assert "already the name" in error_at(again, "new-field-name") and len(draft_of(again)["properties"]) == 1


def test_german_designer(ui: TestClient, ui_admin: str) -> None:
    ui.post("/language", data={"csrf_token": ui_admin, "language": "de", "next": "/"})
    page = ui.get("/admin/designer/new")
    assert "<h1>Neue Entität</h1>" in page.text and "Discard draft" not in page.text
    assert "Feld hinzufügen" in page.text


def test_the_designer_is_for_admins_only_and_posts_need_the_csrf_token(ui: TestClient) -> None:
    make_user(ui, "admin", ["admin"])
    token = log_in(ui, "admin")
    page = ui.get("/admin/designer/new")
    fields = form_of(page.text)
    without = [(k, v) for k, v in fields if k != "csrf_token"] + [("action", "check")]
    assert post_form(ui, "/admin/designer/draft", without).status_code == 403
    wrong = [(k, v) for k, v in fields if k != "csrf_token"] + [("csrf_token", "x" * len(token)), ("action", "check")]
    assert post_form(ui, "/admin/designer/draft", wrong).status_code == 403
    assert post_form(ui, "/admin/designer/draft", fields + [("action", "check")]).status_code in (200, 422)
    tampered = [(k, "{not json" if k == "draft" else v) for k, v in fields] + [("action", "check")]
    assert post_form(ui, "/admin/designer/draft", tampered).status_code == 400

    ui.cookies.clear()
    make_user(ui, "sam", ["sales"])
    sam = log_in(ui, "sam")
    for url in ("/admin/designer", "/admin/designer/new", "/admin/designer/deal/edit", "/admin/designer/deal/history"):
        assert ui.get(url).status_code == 403, url
    posted = post_form(ui, "/admin/designer/draft", [(k, sam if k == "csrf_token" else v) for k, v in fields] + [("action", "apply")])
    assert posted.status_code == 403
    assert 'href="/admin/designer"' not in ui.get("/").text
    assert csrf(ui.get("/").text) == sam


@pytest.mark.parametrize("url", ["/admin/designer/nothing/edit", "/admin/designer/nothing/history"])
def test_unknown_entities_are_not_found(ui: TestClient, ui_admin: str, url: str) -> None:
    assert ui.get(url).status_code == 404
