"""The web UI for a German-speaking user: validation messages, error pages, history values, plurals.

The platform (validator, API) speaks English; the UI translates what it shows
(webui/i18n.py, PROBLEM_MESSAGES and Translator.problem).
"""

from __future__ import annotations

import ast
import decimal
import re
import uuid
from typing import Any

import pytest
from litestar.testing import TestClient

from conftest import ROOT, log_in, make_user

from xrm.webui.i18n import PROBLEM_MESSAGES, read_catalog, translator

# Every module whose messages reach a record form as a Problem (or a form conversion error).
MESSAGE_SOURCES = [
    ROOT / "platform" / "records" / "validation.py",
    ROOT / "platform" / "records" / "service.py",
    ROOT / "platform" / "schema" / "field_types.py",
    ROOT / "webui" / "forms.py",
]
SAMPLE = "7"
"""What a placeholder of a message template stands for when the template is tried against the patterns."""


# -- every message the validator and its neighbours define has a German pattern ----------------------
class _Messages(ast.NodeVisitor):
    """The message templates of one module: the texts of Problem(..., message), ValidationError(message),
    ValueError(message) and of the validator's `_message` returns, with each placeholder as SAMPLE."""

    def __init__(self, tree: ast.Module) -> None:
        self.module_strings = _assignments(tree.body)
        self.function: ast.FunctionDef | None = None
        self.found: list[str] = []

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        outer, self.function = self.function, node
        if node.name == "_message":  # the validator's messages by JSON Schema keyword
            for child in ast.walk(node):
                if isinstance(child, ast.Return) and child.value is not None:
                    self.found.extend(self.texts(child.value))
        self.generic_visit(node)
        self.function = outer

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_Call(self, node: ast.Call) -> None:
        name = node.func.id if isinstance(node.func, ast.Name) else node.func.attr if isinstance(node.func, ast.Attribute) else ""
        if name == "Problem" and len(node.args) >= 2:
            self.found.extend(self.texts(node.args[1]))
        elif name in ("ValidationError", "ValueError") and node.args:
            self.found.extend(self.texts(node.args[0]))
        self.generic_visit(node)

    def local_strings(self) -> dict[str, list[ast.expr]]:
        return _assignments(list(ast.walk(self.function))) if self.function else {}

    def texts(self, node: ast.expr) -> list[str]:
        """The texts an expression can be (empty when it is no text of this module: a passed-on message)."""
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return [node.value]
        if isinstance(node, ast.IfExp):
            return self.texts(node.body) + self.texts(node.orelse)
        if isinstance(node, ast.Name):
            values = self.local_strings().get(node.id) or self.module_strings.get(node.id) or []
            return [text for value in values for text in self.texts(value)]
        if isinstance(node, ast.JoinedStr):
            return self.joined(node)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
            return [re.sub(r"\{[^{}]*\}", SAMPLE, text) for text in self.texts(node.func.value)]  # str.format templates
        return []  # p.message, str(error), a plugin type's messages: not written here

    def joined(self, node: ast.JoinedStr) -> list[str]:
        texts = [""]
        for part in node.values:
            if isinstance(part, ast.Constant):
                choices = [str(part.value)]
            else:
                assert isinstance(part, ast.FormattedValue)
                choices = self.placeholder(part)
            texts = [text + choice for text in texts for choice in choices]
        return texts

    def placeholder(self, part: ast.FormattedValue) -> list[str]:
        value = part.value
        if isinstance(value, ast.Subscript) and isinstance(value.value, ast.Name):  # words[v]: each word of a dict literal
            for literal in self.local_strings().get(value.value.id, []):
                if isinstance(literal, ast.Dict):
                    return [v.value for v in literal.values if isinstance(v, ast.Constant) and isinstance(v.value, str)]
        return [repr(SAMPLE) if part.conversion == ord("r") else SAMPLE]


def _assignments(nodes: list[Any]) -> dict[str, list[ast.expr]]:
    found: dict[str, list[ast.expr]] = {}
    for node in nodes:
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    found.setdefault(target.id, []).append(node.value)
    return found


def _defined_messages() -> dict[str, list[str]]:
    messages = {}
    for path in MESSAGE_SOURCES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        visitor = _Messages(tree)
        visitor.visit(tree)
        messages[path.name] = sorted(set(visitor.found))
    return messages


def test_every_message_a_record_write_can_produce_has_a_german_pattern() -> None:
    messages = _defined_messages()
    # The scan finds them (it fails loudly rather than finding nothing).
    assert "is required" in messages["validation.py"] and "is longer than 7 characters" in messages["validation.py"]
    assert "must not be greater than or equal to 7" in messages["validation.py"]  # each word of words[v]
    assert "'7' is not a valid 7 (expected e.g. 7)" in messages["validation.py"]
    assert "this value is already used by another record" in messages["service.py"]  # message = ... in _database_problem
    assert any(m.startswith("7: is a sensitive field you may not read") for m in messages["service.py"])  # _HIDDEN.format
    assert "'7' is not a number" in messages["forms.py"]
    assert sum(map(len, messages.values())) >= 35
    german = translator("de")
    untranslated = [f"{module}: {message}" for module, found in messages.items() for message in found
                    if german.problem(message) == message]
    assert untranslated == [], "add a pattern to PROBLEM_MESSAGES (webui/i18n.py) and its German to problems.po"


def test_the_scan_would_notice_a_new_message() -> None:
    source = 'def check(v):\n    problems.append(Problem("/x", f"is {v} bananas too many"))\n'
    tree = ast.parse(source)
    visitor = _Messages(tree)
    visitor.visit(tree)
    assert visitor.found == ["is 7 bananas too many"]
    assert translator("de").problem(visitor.found[0]) == visitor.found[0]  # no pattern: the test above would fail


def test_each_pattern_and_its_german_have_the_same_parameters() -> None:
    german = read_catalog("de")
    for pattern, msgid in PROBLEM_MESSAGES:
        placeholders = set(re.findall(r"%\((\w+)\)s", msgid))
        assert placeholders == set(pattern.groupindex), msgid
        entry = german.get(msgid)
        assert entry is not None and entry.string, f"no German for {msgid!r}"
        assert set(re.findall(r"%\((\w+)\)s", entry.string)) == placeholders, msgid
        assert "%" not in re.sub(r"%\(\w+\)s", "", entry.string), msgid  # no stray % (the text is %-formatted)


@pytest.mark.parametrize(("english", "german"), [
    ("is required", "ist ein Pflichtfeld"),
    ("is longer than 100000 characters", "ist länger als 100.000 Zeichen"),
    ("must not be less than 0.5", "darf nicht kleiner als 0,5 sein"),
    ("must not be less than or equal to 0", "muss größer als 0 sein"),
    ("must not be greater than 9223372036854775807", "darf nicht größer als 9.223.372.036.854.775.807 sein"),
    ("must be of type integer", "muss vom Typ „ganze Zahl“ sein"),
    ("'x' is not a valid email (expected e.g. name@example.com)",
     "'x' ist keine gültige E-Mail-Adresse (erwartet z. B. name@example.com)"),
    ("'zwölf' is not a number", "'zwölf' ist keine Zahl"),
    ("['a', 'b', 'c'] is too long", "['a', 'b', 'c'] ist zu lang (zu viele Einträge)"),
    ("must not contain the NUL character (\\u0000)", "darf das NUL-Zeichen (\\u0000) nicht enthalten"),
    ("budget: is a sensitive field you may read but not change (it needs an update field grant, see docs/security.md)",
     "budget: ist ein vertrauliches Feld, das Sie lesen, aber nicht ändern dürfen (dafür ist eine Feldberechtigung zum "
     "Ändern nötig, siehe docs/security.md)"),
    ("None of your roles allows read on deal", "Keine Ihrer Rollen erlaubt es, Datensätze (deal) zu lesen"),
])
def test_messages_in_german_with_their_parameters(english: str, german: str) -> None:
    assert translator("de").problem(english) == german
    assert translator("en").problem(english) == english  # English stays the platform's text


def test_an_unknown_message_stays_as_it_is() -> None:
    veto = "the moon phase does not allow this (plugin)"
    assert translator("de").problem(veto) == veto
    assert translator("de").problem("") == ""


def test_the_validators_real_messages_are_german() -> None:
    """Each field type's refusals, from the validator itself; each format has its own German (not the generic one)."""
    from xrm.records.validation import RecordValidator
    from xrm.schema.definition import parse_definition

    entity = parse_definition({"type": "object", "x-xrm": {"name": "sample", "label": {"en": "Sample"}}, "required": ["title"],
                               "properties": {
        "title": {"type": "string", "minLength": 3, "maxLength": 5, "pattern": "^[A-Z]"},
        "email": {"type": "string", "format": "email"},
        "website": {"type": "string", "format": "uri"},
        "day": {"type": "string", "format": "date"},
        "moment": {"type": "string", "format": "date-time"},
        "other": {"type": "string", "format": "uuid", "x-xrm": {"type": "reference", "references": "sample"}},
        "count": {"type": "integer", "minimum": 1, "maximum": 9},
        "share": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1, "x-xrm": {"precision": 4, "scale": 2}},
        "price": {"x-xrm": {"type": "currency", "currencies": ["EUR"]}},
        "colour": {"type": "string", "enum": ["red", "green"]},
        "done": {"type": "boolean"},
    }})
    validator = RecordValidator(entity)
    german = translator("de")
    records = [
        {"title": "ab", "email": "nobody", "website": "ftp:/x y", "day": "31.12.2024", "moment": "2024-12-31 17:30",
         "other": "nope", "count": 0, "share": 0, "price": {"amount": 1.234, "currency": "USD"}, "colour": "blue", "done": "yes"},
        {"title": "abcdefg", "count": 10, "share": 1, "price": {"amount": decimal.Decimal("1E+20"), "currency": "EUR"},
         "moment": "9999-12-31T23:30:00-01:00", "colour": "a\x00b", "unknown": 1},
        {"count": 1.5, "share": decimal.Decimal("0.123"), "price": {"currency": "EUR"}, "done": 1},
    ]
    seen = set()
    for record in records:
        for problem in validator.problems(validator.to_json_form(record)):
            text = german.problem(problem.message)
            assert text != problem.message and "im Format" not in text, problem
            seen.add(problem.pointer)
    assert {"/title", "/email", "/website", "/day", "/moment", "/other", "/count", "/share", "/price/currency",
            "/price/amount", "/colour", "/done", "/unknown"} <= seen


def test_the_validators_real_messages_for_a_multiselect_are_german() -> None:
    """jsonschema's own messages (minItems/maxItems, which the validator passes on) are covered too."""
    from xrm.records.validation import RecordValidator
    from xrm.schema.definition import parse_definition

    entity = parse_definition({"type": "object", "x-xrm": {"name": "survey", "label": {"en": "Survey"}}, "properties": {
        "topics": {"type": "array", "items": {"type": "string", "enum": ["a", "b", "c"]}, "minItems": 2, "maxItems": 2},
        "one": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}, "minItems": 1},
    }})
    validator = RecordValidator(entity)
    german = translator("de")
    for record in ({"topics": ["a", "b", "c"]}, {"topics": ["a"]}, {"topics": ["a", "a"]}, {"one": []}, {"topics": "a"}):
        for problem in validator.problems(record):
            assert german.problem(problem.message) != problem.message, problem


# -- in the browser: forms, error pages, history ----------------------------------------------------------
def _german(ui: TestClient, name: str = "anna", roles: tuple[str, ...] = ("admin",)) -> str:
    make_user(ui, name, list(roles))
    token = log_in(ui, name)
    ui.post("/language", data={"csrf_token": token, "language": "de", "next": "/"})
    return token


def _field_error(html: str, name: str) -> str:
    found = re.search(rf'id="field-{name}-error">([^<]*)<', html)
    assert found, f"no message next to {name}"
    return found.group(1).replace("&#39;", "'").replace("&#34;", '"').replace("&quot;", '"')


def test_a_german_user_sees_german_messages_next_to_the_fields(ui: TestClient) -> None:
    token = _german(ui)
    # What the server's validator refuses.
    refused = ui.post("/e/deal/new", data={"csrf_token": token, "title": "", "stage": "won", "probability": "150",
                                           "close_date": "31.12.2024", "account": "nope"})
    assert refused.status_code == 422
    page = refused.text
    assert _field_error(page, "title") == "ist ein Pflichtfeld"
    assert _field_error(page, "probability") == "darf nicht größer als 100 sein"
    assert _field_error(page, "close_date") == "'31.12.2024' ist kein gültiges Datum (erwartet z. B. 2024-12-31)"
    assert _field_error(page, "account") == "'nope' ist keine gültige Datensatz-ID (UUID)"
    assert "is required" not in page and "must not be" not in page and 'value="31.12.2024"' in page  # input kept
    account = ui.post("/e/account/new", data={"csrf_token": token, "name": "x" * 201, "employees": "-5", "website": "kein Link"})
    assert _field_error(account.text, "name") == "ist länger als 200 Zeichen"
    assert _field_error(account.text, "employees") == "darf nicht kleiner als 0 sein"
    assert "ist kein" in _field_error(account.text, "website") or "Form" in _field_error(account.text, "website")
    # What the form cannot read as a value (webui/forms.py).
    unreadable = ui.post("/e/deal/new", data={"csrf_token": token, "title": "T", "stage": "won", "probability": "viel",
                                              "amount": "zwölf", "amount__currency": "EUR", "details": "{"})
    assert unreadable.status_code == 422
    assert _field_error(unreadable.text, "probability") == "'viel' ist keine ganze Zahl"
    assert _field_error(unreadable.text, "amount") == "'zwölf' ist keine Zahl"
    assert _field_error(unreadable.text, "details") == "ist kein gültiges JSON (Zeile 1, Spalte 2)"


def test_an_english_user_keeps_the_validators_english(ui: TestClient) -> None:
    make_user(ui, "emma", ["admin"])
    token = log_in(ui, "emma")
    ui.post("/language", data={"csrf_token": token, "language": "en", "next": "/"})
    refused = ui.post("/e/deal/new", data={"csrf_token": token, "title": "", "stage": "won", "probability": "150"},
                      headers={"Accept-Language": "de-DE,de;q=0.9"})
    assert _field_error(refused.text, "title") == "is required"
    assert _field_error(refused.text, "probability") == "must not be greater than 100"


def test_error_pages_are_in_the_users_language(ui: TestClient) -> None:
    _german(ui)
    english_browser = {"Accept-Language": "en-US,en;q=0.9"}  # the saved language wins over the browser's
    missing = ui.get(f"/e/deal/{uuid.uuid4()}", headers=english_browser)
    assert missing.status_code == 404 and 'lang="de"' in missing.text
    assert "Nicht gefunden" in missing.text and "Zurück" in missing.text and "Not found" not in missing.text
    unknown = ui.get("/e/spaceship", headers=english_browser)
    assert unknown.status_code == 404 and "Unbekannte Entität &#39;spaceship&#39;" in unknown.text

    ui.blocking_portal.call(ui.app.state.platform.security().create_role, "reader")
    ui.blocking_portal.call(ui.app.state.platform.security().grant, "reader", "account", "read", "all")
    ui.cookies.clear()
    _german(ui, "rita", ("reader",))
    forbidden = ui.get("/e/deal", headers=english_browser)
    assert forbidden.status_code == 403 and 'lang="de"' in forbidden.text and "Nicht erlaubt" in forbidden.text
    assert "Keine Ihrer Rollen erlaubt es, Datensätze (Verkaufschance) zu lesen" in forbidden.text


def test_error_pages_without_a_saved_language_follow_the_browser(ui: TestClient) -> None:
    make_user(ui, "bert", ["admin"])
    log_in(ui, "bert")
    page = ui.get(f"/e/deal/{uuid.uuid4()}", headers={"Accept-Language": "de"})
    assert page.status_code == 404 and "Nicht gefunden" in page.text
    page = ui.get(f"/e/deal/{uuid.uuid4()}", headers={"Accept-Language": "en"})
    assert page.status_code == 404 and "Not found" in page.text


PROJECT = {
    "type": "object",
    "x-xrm": {"name": "project", "label": {"en": "Project", "de": "Projekt"}, "display_field": "name"},
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "maxLength": 100, "x-xrm": {"label": {"en": "Name", "de": "Name"}}},
        "billable": {"type": "boolean", "x-xrm": {"label": {"en": "Billable", "de": "Abrechenbar"}}},
        "budget": {"type": "number", "x-xrm": {"label": {"en": "Budget", "de": "Budget"}, "precision": 12, "scale": 2}},
        "hours": {"type": "number", "x-xrm": {"label": {"en": "Hours", "de": "Stunden"}}},
        "starts": {"type": "string", "format": "date", "x-xrm": {"label": {"en": "Starts", "de": "Beginn"}}},
        "account": {"x-xrm": {"type": "reference", "references": "account", "label": {"en": "Account", "de": "Firma"}}},
    },
}


def test_the_history_shows_values_formatted_for_german(ui: TestClient) -> None:
    token = _german(ui)
    ui.blocking_portal.call(ui.app.state.platform.schema.apply, [PROJECT])
    account = ui.post("/e/account/new", data={"csrf_token": token, "name": "ACME"}, follow_redirects=False).headers["location"]
    created = ui.post("/e/project/new", data={"csrf_token": token, "name": "Umbau", "budget": "12500.50", "hours": "7.25",
                                              "starts": "2026-12-01", "account": account.rsplit("/", 1)[1]},
                      follow_redirects=False)
    assert created.status_code == 303, created.text
    path = created.headers["location"]
    changed = ui.post(path + "/edit", data={"csrf_token": token, "name": "Umbau", "billable": "true", "budget": "13000",
                                            "hours": "8", "starts": "2027-01-15",
                                            "account": account.rsplit("/", 1)[1]}, follow_redirects=False)
    assert changed.status_code == 303, changed.text
    history = ui.get(path).text.split('class="history"')[1]
    assert "<del>Nein</del> → <ins>Ja</ins>" in history  # not False → True
    assert "<del>12.500,50</del> → <ins>13.000,00</ins>" in history  # the field's 2 places; not 12500.50
    assert "<del>7,25</del> → <ins>8</ins>" in history
    assert "<del>01.12.2026</del> → <ins>15.01.2027</ins>" in history  # not 2026-12-01
    assert "True" not in history and "2026-12-01" not in history
    # The account's related panel: no German plural in the definition, so the singular, never "Projekts".
    related = ui.get(account).text
    assert "Projekt (Firma)" in related and "Projekts (Firma)" not in related


def test_the_history_shows_money_and_options_for_german(ui: TestClient) -> None:
    token = _german(ui)
    created = ui.post("/e/deal/new", data={"csrf_token": token, "title": "Großauftrag", "stage": "negotiation",
                                           "amount": "12500.50", "amount__currency": "EUR"}, follow_redirects=False)
    path = created.headers["location"]
    ui.post(path + "/edit", data={"csrf_token": token, "title": "Großauftrag", "stage": "won", "amount": "9999.5",
                                  "amount__currency": "EUR", "closed_at": "2026-12-01T09:30"})
    history = ui.get(path).text.split('class="history"')[1]
    assert "<del>12.500,50 EUR</del> → <ins>9.999,50 EUR</ins>" in history
    assert "<del>Verhandlung</del> → <ins>Gewonnen</ins>" in history  # the transition "win"
    assert "<del>—</del> → <ins>01.12.2026, 09:30 UTC</ins>" in history


def test_values_that_do_not_fit_the_field_are_shown_as_they_are() -> None:
    from xrm.schema.definition import parse_definition
    from xrm.webui.display import value_text

    definition = parse_definition(PROJECT, known_entities=["account"])
    fields = definition.fields
    german = translator("de")
    assert value_text(german, None, fields["billable"], False, {}) == "Nein"  # type: ignore[arg-type]
    assert value_text(german, None, fields["billable"], "[erased]", {}) == "[erased]"  # type: ignore[arg-type]
    assert value_text(german, None, fields["starts"], "not a date", {}) == "not a date"  # type: ignore[arg-type]
    assert value_text(german, None, fields["hours"], "12500.50", {}) == "12.500,50"  # type: ignore[arg-type]
    assert value_text(german, None, fields["budget"], None, {}) == "—"  # type: ignore[arg-type]
    assert value_text(german, None, fields["name"], "a  <b>\nc &amp;", {}) == "a  <b>\nc &amp;"  # type: ignore[arg-type]
    assert value_text(translator("en"), None, fields["budget"], "1234.5", {}) == "1,234.50"  # type: ignore[arg-type]
    assert value_text(german, None, fields["budget"], decimal.Decimal("0.5"), {}) == "0,50"  # type: ignore[arg-type]


def test_plural_labels_are_not_made_up_in_german() -> None:
    from xrm.schema.definition import parse_definition
    from xrm.webui.display import entity_label

    def entity(xrm: dict[str, Any]) -> Any:
        return parse_definition({"type": "object", "x-xrm": {"name": "project", **xrm},
                                 "properties": {"name": {"type": "string"}}})

    both = entity({"label": {"en": "Project", "de": "Projekt"}, "plural": {"en": "Projects", "de": "Projekte"}})
    assert entity_label(both, "de", plural=True) == "Projekte" and entity_label(both, "en", plural=True) == "Projects"
    singular_only = entity({"label": {"en": "Project", "de": "Projekt"}})
    assert entity_label(singular_only, "de", plural=True) == "Projekt"  # not "Projekts"
    assert entity_label(singular_only, "en", plural=True) == "Projects"  # the English rule, in English only
    english_plural = entity({"label": {"en": "Project", "de": "Projekt"}, "plural": {"en": "Projects"}})
    assert entity_label(english_plural, "de", plural=True) == "Projekt"  # German singular rather than English
    english_only = entity({"label": {"en": "Person"}, "plural": {"en": "People"}})
    assert entity_label(english_only, "de", plural=True) == "People"  # no German at all: the definition's English
    assert entity_label(both, "de") == "Projekt"
