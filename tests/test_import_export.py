"""Import (CSV, JSON Lines) and export through RecordService: coercion rules,
column mapping, references, upsert, dry run, row errors, round trips, streaming.

Database tests compare full table contents and the outbox where a claim is
"nothing was written".
"""

from __future__ import annotations

import codecs
import copy
import datetime as dt
import decimal
import io
import json
import tracemalloc
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from xrm.cli import main
from xrm.db.database import Database
from xrm.errors import XrmError
from xrm.records.principal import SYSTEM_PRINCIPAL
from xrm.records.service import RecordService
from xrm.registry import Registry
from xrm.schema.definition import parse_definition
from xrm.transfer import export_records, import_file, import_records, iter_export
from xrm.transfer.coerce import (
    CoercionError,
    CoercionOptions,
    parse_boolean,
    parse_currency,
    parse_date,
    parse_datetime,
    parse_integer,
    parse_multiselect,
    parse_number,
)
from xrm.transfer.importer import ColumnMapper, RowError
from xrm.transfer.sources import open_source

D = decimal.Decimal
BERLIN = CoercionOptions(timezone="Europe/Berlin").zone

COMPANY: dict[str, Any] = {
    "type": "object",
    "x-xrm": {"name": "company", "label": {"en": "Company", "de": "Firma"}, "display_field": "name"},
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "maxLength": 60, "x-xrm": {"label": {"en": "Name", "de": "Name"}}},
        "code": {"type": "string", "x-xrm": {"unique": True, "label": {"en": "Code", "de": "Kürzel"}}},
        "parent": {"x-xrm": {"type": "reference", "references": "company", "label": {"en": "Parent company", "de": "Muttergesellschaft"}}},
    },
}

PERSON: dict[str, Any] = {
    "type": "object",
    "x-xrm": {"name": "person", "label": {"en": "Person", "de": "Person"}, "display_field": "last_name"},
    "required": ["last_name"],
    "properties": {
        "last_name": {"type": "string", "maxLength": 40, "x-xrm": {"label": {"en": "Last name", "de": "Nachname"}}},
        "email": {"type": "string", "format": "email", "x-xrm": {"unique": True, "label": {"en": "E-mail", "de": "E-Mail-Adresse"}}},
        "company": {"x-xrm": {"type": "reference", "references": "company", "label": {"en": "Employer", "de": "Arbeitgeber"}}},
        "birthday": {"type": "string", "format": "date", "x-xrm": {"label": {"en": "Birthday", "de": "Geburtstag"}}},
        "met_at": {"type": "string", "format": "date-time", "x-xrm": {"label": {"en": "Met at", "de": "Kennengelernt am"}}},
        "visits": {"type": "integer", "minimum": 0, "x-xrm": {"label": {"en": "Visits", "de": "Besuche"}}},
        "score": {"type": "number", "x-xrm": {"precision": 10, "scale": 2, "label": {"en": "Score", "de": "Bewertung"}}},
        "active": {"type": "boolean", "x-xrm": {"label": {"en": "Active", "de": "Aktiv"}}},
        "budget": {"x-xrm": {"type": "currency", "currencies": ["EUR", "USD", "GBP"], "label": {"en": "Budget", "de": "Etat"}}},
        "tags": {
            "type": "array",
            "items": {"enum": ["vip", "newsletter", "partner, reseller"]},
            "x-xrm": {"label": {"en": "Tags", "de": "Schlagworte"}, "option_labels": {"vip": {"en": "VIP", "de": "Wichtig"}}},
        },
        "status": {
            "type": "string",
            "enum": ["lead", "customer"],
            "x-xrm": {
                "label": {"en": "Status", "de": "Status"},
                "option_labels": {"lead": {"en": "Lead", "de": "Interessent"}, "customer": {"en": "Customer", "de": "Kunde"}},
            },
        },
        "extra": {"type": "object", "x-xrm": {"label": {"en": "Extra", "de": "Zusatz"}}},
        "notes": {"x-xrm": {"type": "long_text", "label": {"en": "Notes", "de": "Notizen"}}},
    },
}


def twin(document: dict[str, Any], suffix: str = "2") -> dict[str, Any]:
    """The same entity under another name, its references to the twins."""
    twin = copy.deepcopy(document)
    twin["x-xrm"]["name"] += suffix
    for schema in twin["properties"].values():
        if "references" in schema.get("x-xrm", {}):
            schema["x-xrm"]["references"] += suffix
    return twin


@pytest.fixture
async def reg(make_entities: Any) -> Registry:
    return await make_entities(copy.deepcopy(COMPANY), copy.deepcopy(PERSON))


def service(db: Database, reg: Registry, entity: str) -> RecordService:
    return RecordService(db, reg, entity, SYSTEM_PRINCIPAL)


async def everything(svc: RecordService) -> list[dict[str, Any]]:
    records, after = [], None
    while True:
        page = await svc.list(limit=1000, after=after)
        records.extend(page.records)
        if not page.next_cursor:
            return records
        after = page.next_cursor


async def by(svc: RecordService, field: str) -> dict[Any, dict[str, Any]]:
    return {r[field]: r for r in await everything(svc)}


async def snapshot(db: Database, *tables: str) -> list[Any]:
    """Full contents of the tables and of the outbox (nothing may change in a dry run)."""
    result = []
    async with db.connection() as c:
        for table in tables:
            result.append(await c.fetch(f"SELECT to_jsonb(t)::text FROM (SELECT * FROM public.{table} ORDER BY id) t"))
        result.append(await c.fetch("SELECT to_jsonb(o)::text FROM (SELECT * FROM xrm_sys.outbox ORDER BY id) o"))
    return [[tuple(r) for r in rows] for rows in result]


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


# -- coercion rules (no database) ----------------------------------------------------
@pytest.mark.parametrize(
    ("text", "number_format", "expected"),
    [
        ("1234.56", "auto", "1234.56"),
        ("1.234,56", "auto", "1234.56"),
        ("1,234.56", "auto", "1234.56"),
        ("12,5", "auto", "12.5"),
        ("1.234", "auto", "1.234"),  # one separator, once: the decimal separator
        ("1,234", "auto", "1.234"),
        ("1.234.567", "auto", "1234567"),  # several times: grouping
        ("1.234.567,8", "auto", "1234567.8"),
        ("-1 234,5", "auto", "-1234.5"),
        ("1'234.5", "auto", "1234.5"),
        ("+0,5", "auto", "0.5"),
        ("\u22123", "auto", "-3"),
        ("1.234", "de", "1234"),
        ("1,234", "en", "1234"),
        ("1,5", "de", "1.5"),
        ("1.5", "en", "1.5"),
    ],
)
def test_numbers(text: str, number_format: Any, expected: str) -> None:
    assert parse_number(text, number_format) == D(expected)
    assert str(parse_number(text, number_format)) == expected


@pytest.mark.parametrize("text", ["", "abc", "12.34.5", "1,23,4", "1.2.3,4", "12a", "1e5", "--1", "1 2", "1,234.5,6"])
def test_not_numbers(text: str) -> None:
    with pytest.raises(CoercionError, match="is not a number"):
        parse_number(text)


def test_integers_accept_grouping_only_when_unambiguous() -> None:
    assert parse_integer("1234") == 1234
    assert parse_integer("1.234.567") == 1234567  # several dots can only group
    assert parse_integer("1.234,00") == 1234
    assert parse_integer("1.234", "de") == 1234
    assert parse_integer("1,234", "en") == 1234
    with pytest.raises(CoercionError, match=r"not a whole number \(if the separator groups thousands here, use the number format"):
        parse_integer("1.234")  # 1.234 in "auto": ambiguous, refused
    with pytest.raises(CoercionError, match="not a whole number"):
        parse_integer("1,5")
    with pytest.raises(CoercionError, match="not a number"):
        parse_integer("1.23", "de")


def test_dates() -> None:
    for text in ("2024-12-31", "31.12.2024", "31.12.24", "2024-12-31 00:00:00", "31.12.2024 00:00"):
        assert parse_date(text) == dt.date(2024, 12, 31), text
    assert parse_date("1.2.2024") == dt.date(2024, 2, 1)
    assert parse_date("1.2.69") == dt.date(1969, 2, 1)  # two-digit years as strptime's %y
    assert parse_date("12/31/2024", "%m/%d/%Y") == dt.date(2024, 12, 31)
    for text in ("31.02.2024", "12/31/2024", "2024-12-31T10:00", "31.12.", "heute"):
        with pytest.raises(CoercionError, match="is not a valid date"):
            parse_date(text)


def test_datetimes_need_an_offset_or_a_time_zone() -> None:
    expected = dt.datetime(2024, 12, 31, 16, 30, tzinfo=dt.timezone.utc)
    assert parse_datetime("2024-12-31T17:30:00+01:00") == expected
    assert parse_datetime("2024-12-31T16:30:00Z") == expected
    assert parse_datetime("2024-12-31 16:30:00+00:00") == expected
    with pytest.raises(CoercionError, match="has no time zone offset"):
        parse_datetime("2024-12-31 17:30")
    assert parse_datetime("2024-12-31 17:30", BERLIN) == expected
    assert parse_datetime("31.12.2024 17:30", BERLIN) == expected
    summer = parse_datetime("30.06.2024 12:00:30", BERLIN)
    assert summer.utcoffset() == dt.timedelta(hours=2) and summer.second == 30
    assert parse_datetime("31.12.2024", BERLIN) == dt.datetime(2024, 12, 30, 23, 0, tzinfo=dt.timezone.utc)
    with pytest.raises(CoercionError, match="is not a valid date and time"):
        parse_datetime("31.12.2024 25:00", BERLIN)
    with pytest.raises(XrmError, match="is not a time zone"):
        CoercionOptions(timezone="Mars/Olympus")


def test_booleans() -> None:
    for text in ("true", "TRUE", "yes", "Ja", "1", "x", "X", " wahr "):
        assert parse_boolean(text) is True, text
    for text in ("false", "No", "nein", "0", "falsch"):
        assert parse_boolean(text) is False, text
    with pytest.raises(CoercionError, match="is not a yes/no value"):
        parse_boolean("vielleicht")


@pytest.mark.parametrize(
    ("text", "amount", "code"),
    [
        ("1.234,56 EUR", "1234.56", "EUR"),
        ("EUR 1234.56", "1234.56", "EUR"),
        ("€ 12,50", "12.50", "EUR"),
        ("12,50 €", "12.50", "EUR"),
        ("$5", "5", "USD"),
        ("US$ 1,234.50", "1234.50", "USD"),
        ("£3.20", "3.20", "GBP"),
        ("-€ 3", "-3", "EUR"),
        ("usd -7.5", "-7.5", "USD"),
        ("1234.56", "1234.56", None),
    ],
)
def test_currency_texts(text: str, amount: str, code: str | None) -> None:
    assert parse_currency(text) == (D(amount), code)


def test_currency_errors() -> None:
    with pytest.raises(CoercionError, match="'XYZ' is not an ISO 4217 currency code"):
        parse_currency("12 XYZ")
    with pytest.raises(CoercionError, match="names two currencies"):
        parse_currency("€ 5 USD")
    with pytest.raises(CoercionError, match="is not an amount"):
        parse_currency("EUR twelve")


def test_multiselect_and_options() -> None:
    options = ["vip", "newsletter", "partner, reseller"]
    labels = {"vip": {"en": "VIP", "de": "Wichtig"}}
    assert parse_multiselect("vip, newsletter", options) == ["vip", "newsletter"]
    assert parse_multiselect("vip; Newsletter", options) == ["vip", "newsletter"]
    assert parse_multiselect("partner, reseller; vip", options) == ["partner, reseller", "vip"]
    assert parse_multiselect("Wichtig,newsletter,", options, labels) == ["vip", "newsletter"]
    assert parse_multiselect('["partner, reseller"]', options) == ["partner, reseller"]
    assert parse_multiselect(["VIP"], options, labels) == ["vip"]
    assert parse_multiselect("vip, gold", options) == ["vip", "gold"]  # the validator names "gold"


# -- reading files (no database) -------------------------------------------------------
@pytest.mark.parametrize(
    ("encoding", "delimiter"),
    [("utf-8", ","), ("utf-8-sig", ";"), ("cp1252", ";"), ("cp1252", "\t"), ("utf-16", "\t")],
)
def test_encoding_and_delimiter_are_detected(tmp_path: Path, encoding: str, delimiter: str) -> None:
    text = delimiter.join(["Name", "Straße", '"Ort; Land"']) + "\r\n" + delimiter.join(["Müller", "Hauptstraße 1", '"Köln, DE"']) + "\r\n"
    path = write(tmp_path / "file.csv", text, encoding)
    source = open_source(path)
    try:
        assert source.delimiter == delimiter
        assert list(source.columns.values()) == ["Name", "Straße", "Ort; Land"]
        assert [(n, list(row.values())) for n, row in source.rows()] == [(2, ["Müller", "Hauptstraße 1", "Köln, DE"])]
    finally:
        source.close()
    if encoding == "utf-8-sig":
        assert path.read_bytes().startswith(codecs.BOM_UTF8)


def test_row_numbers_count_records_not_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "f.csv", 'a,b\n1,"two\nlines"\n\n3,4\n')
    source = open_source(path)
    assert [n for n, _ in source.rows()] == [2, 3, 4]  # the blank row is row 3
    source.close()


def test_column_mapping_by_name_and_label() -> None:
    person = parse_definition(copy.deepcopy(PERSON), known_entities=["company"])
    mapper = ColumnMapper(person, {"Mail": "email", "Interne Nr": None})
    columns = ["Nachname", "E-Mail-Adresse", "Mail", "ARBEITGEBER", "met at", "Budget", "budget_currency", "Interne Nr", "Wichtig?", "created_at", "id"]
    targets = {c: mapper.target(i, c) for i, c in enumerate(columns)}
    assert {c: str(t) for c, t in targets.items() if t} == {
        "Nachname": "last_name",  # German label
        "Mail": "email",  # explicit mapping wins over the label of "E-Mail-Adresse"
        "ARBEITGEBER": "company",  # label, case-insensitive
        "met at": "met_at",  # name, space for underscore
        "Budget": "budget",
        "budget_currency": "budget.currency",
        "id": "id",
    }
    assert mapper.unmapped == ["E-Mail-Adresse", "Wichtig?", "created_at"]
    assert "column 'E-Mail-Adresse' email is mapped from column 'Mail'" in mapper.notes
    assert "column 'created_at' is set by the system" in mapper.notes
    assert "column 'Interne Nr' is ignored (mapping)" in mapper.notes
    with pytest.raises(XrmError, match="'nope' is not a field of person"):
        ColumnMapper(person, {"X": "nope"})


# -- importing ---------------------------------------------------------------------------
GERMAN_CSV = (
    "Nachname;E-Mail-Adresse;Arbeitgeber;Geburtstag;Kennengelernt am;Besuche;Bewertung;Aktiv;Etat;Schlagworte;Status;Zusatz;Notizen\r\n"
    'Müller;mueller@example.com;Acme;31.12.1980;31.12.2024 17:30;1.234.567;1.234,5;ja;1.234,56 €;Wichtig, newsletter;Kunde;"{""a"": 1}";Grüße\r\n'
    "Schmidt;;;1990-02-01;2024-06-30T12:00:00+02:00;7;-0,25;x;$5;partner, reseller;lead;;\r\n"
    ";;;;;;;;;;;;\r\n"
    "Weiß;weiss@example.com;ACME;01.02.03;;;;nein;12,50;;Interessent;;\r\n"
)


async def test_german_csv_in_windows_1252_with_german_headers(db: Database, reg: Registry, tmp_path: Path) -> None:
    await service(db, reg, "company").create({"name": "Acme"})
    path = write(tmp_path / "personen.csv", GERMAN_CSV, "cp1252")
    report = await import_file(db, reg, "person", path, timezone="Europe/Berlin", default_currency="EUR")
    assert report.errors == []
    assert (report.rows, report.created, report.updated, report.skipped) == (3, 3, 0, 0)  # the blank row is not a row
    assert report.mapping["Arbeitgeber"] == "company" and report.unmapped_columns == []
    assert [(m.column, m.value, m.matched, m.rows) for m in report.approximate_matches] == [("Arbeitgeber", "ACME", "Acme", 1)]
    people = await by(service(db, reg, "person"), "last_name")
    acme = (await service(db, reg, "company").list()).records[0]
    m = people["Müller"]
    assert m["email"] == "mueller@example.com" and m["company"] == acme["id"]
    assert m["birthday"] == dt.date(1980, 12, 31)
    assert m["met_at"] == dt.datetime(2024, 12, 31, 16, 30, tzinfo=dt.timezone.utc)
    assert (m["visits"], m["score"], m["active"]) == (1234567, D("1234.50"), True)
    assert m["budget"] == {"amount": D("1234.56"), "currency": "EUR"}
    assert (m["tags"], m["status"], m["extra"], m["notes"]) == (["vip", "newsletter"], "customer", {"a": 1}, "Grüße")
    s = people["Schmidt"]
    assert s["email"] is None and s["company"] is None and s["extra"] is None and s["notes"] is None
    assert s["met_at"] == dt.datetime(2024, 6, 30, 10, 0, tzinfo=dt.timezone.utc)
    assert (s["score"], s["active"], s["budget"], s["tags"]) == (D("-0.25"), True, {"amount": D("5.00"), "currency": "USD"}, ["partner, reseller"])
    w = people["Weiß"]
    assert (w["birthday"], w["active"], w["budget"], w["status"], w["company"]) == (dt.date(2003, 2, 1), False, {"amount": D("12.50"), "currency": "EUR"}, "lead", acme["id"])


async def test_references_by_display_value_or_id(db: Database, reg: Registry) -> None:
    companies = service(db, reg, "company")
    acme = await companies.create({"name": "Acme Corp"})
    await companies.create({"name": "Globex"})
    await companies.create({"name": "Globex"})
    await companies.create({"name": "Initech"})
    await companies.create({"name": "INITECH"})
    rows = [
        {"last_name": "exact", "company": "Acme Corp"},
        {"last_name": "case", "company": "acme corp"},
        {"last_name": "spaces", "company": " AcmeCorp "},
        {"last_name": "by id", "company": str(acme["id"]).upper()},
        {"last_name": "ambiguous", "company": "Globex"},
        {"last_name": "missing", "company": "Umbrella"},
        {"last_name": "unknown id", "company": "00000000-0000-4000-8000-000000000000"},
        {"last_name": "exact beats case", "company": "Initech"},
        {"last_name": "ambiguous ignoring case", "company": "initech"},
    ]
    report = await import_records(db, reg, "person", rows)
    assert (report.created, report.skipped) == (5, 4)
    assert [str(e) for e in report.errors] == [
        "row 5, column 'company': 'Globex' matches 2 company records; give the record id instead",
        "row 6, column 'company': no company record is called 'Umbrella'",
        "row 7, column 'company': no company record has the id 00000000-0000-4000-8000-000000000000",
        "row 9, column 'company': 'initech' matches 2 company records (ignoring case); give the record id instead",
    ]
    people = await by(service(db, reg, "person"), "last_name")
    assert {people[n]["company"] for n in ("exact", "case", "spaces", "by id")} == {acme["id"]}
    assert {(m.value, m.matched, m.rows) for m in report.approximate_matches} == {("acme corp", "Acme Corp", 1), ("AcmeCorp", "Acme Corp", 1)}


async def test_large_targets_fall_back_to_full_text_search(db: Database, reg: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    from xrm.transfer import lookup

    monkeypatch.setattr(lookup, "FALLBACK_SCAN_LIMIT", 1)  # as if company had more records than are read at once
    companies = service(db, reg, "company")
    acme = await companies.create({"name": "Acme Corp"})
    await companies.create({"name": "Other"})
    report = await import_records(db, reg, "person", [{"last_name": "case", "company": "ACME corp"}, {"last_name": "spaces", "company": "AcmeCorp"}])
    assert report.created == 1 and (await by(service(db, reg, "person"), "last_name"))["case"]["company"] == acme["id"]
    # Without reading every display value, a missing space cannot be found (documented).
    assert [str(e) for e in report.errors] == ["row 2, column 'company': no company record is called 'AcmeCorp'"]


async def test_self_references_may_point_to_later_rows(db: Database, reg: Registry, tmp_path: Path) -> None:
    path = write(
        tmp_path / "companies.csv",
        "name,code,parent\nGrandchild,G,Child\nChild,C,Root\nRoot,R,\nOrphan,O,Nowhere\nLoop A,LA,Loop B\nLoop B,LB,Loop A\n",
    )
    report = await import_file(db, reg, "company", path, chunk_size=2)
    assert (report.rows, report.created, report.skipped) == (6, 3, 3)
    assert [str(e) for e in report.errors] == [
        "row 5, column 'parent': no company record is called 'Nowhere'",
        "row 6, column 'parent': no company record is called 'Loop B'",
        "row 7, column 'parent': no company record is called 'Loop A'",
    ]
    companies = await by(service(db, reg, "company"), "name")
    assert companies["Grandchild"]["parent"] == companies["Child"]["id"]
    assert companies["Child"]["parent"] == companies["Root"]["id"]
    assert set(companies) == {"Grandchild", "Child", "Root"}


async def test_upsert_updates_by_key_and_creates_the_rest(db: Database, reg: Registry, tmp_path: Path) -> None:
    people = service(db, reg, "person")
    first = await import_records(
        db, reg, "person",
        [{"last_name": "A", "email": "a@example.com", "visits": "1", "notes": "keep"}, {"last_name": "B", "email": "b@example.com", "visits": "2"}],
    )
    assert first.created == 2
    before = await by(people, "email")
    path = write(tmp_path / "update.csv", "email,last_name,visits\nb@example.com,B2,\nc@example.com,C,3\nc@example.com,C-again,4\na@example.com,A2,5\n,D,6\n")
    report = await import_file(db, reg, "person", path, upsert_key="email", chunk_size=10)
    assert report.errors == []
    assert (report.rows, report.created, report.updated) == (5, 2, 3)  # c is created, then updated by its second row
    after = await by(people, "email")
    assert after["a@example.com"]["id"] == before["a@example.com"]["id"]
    assert (after["a@example.com"]["last_name"], after["a@example.com"]["visits"], after["a@example.com"]["notes"]) == ("A2", 5, "keep")
    assert after["b@example.com"]["visits"] is None  # an empty cell clears; a missing column keeps
    assert (after["c@example.com"]["last_name"], after["c@example.com"]["visits"], after["c@example.com"]["version"]) == ("C-again", 4, 2)
    assert after[None]["last_name"] == "D"  # no key value: created
    assert await people.count() == 4

    # By id, as in an export: existing ids update, unknown ids are created with that id.
    new_id = str(uuid.uuid4())
    report = await import_records(
        db, reg, "person", [{"id": str(after["a@example.com"]["id"]), "last_name": "A3"}, {"id": new_id, "last_name": "New"}], upsert_key="id"
    )
    assert (report.created, report.updated) == (1, 1)
    assert (await people.get(after["a@example.com"]["id"]))["last_name"] == "A3"
    assert (await people.get(new_id))["last_name"] == "New"

    with pytest.raises(XrmError, match="upsert key must be 'id' or a unique field"):
        await import_records(db, reg, "person", [], upsert_key="last_name")
    with pytest.raises(XrmError, match="upsert key 'email' has no column"):
        await import_file(db, reg, "person", write(tmp_path / "x.csv", "last_name\nX\n"), upsert_key="email")


async def test_dry_run_writes_nothing_and_reports_what_would_happen(db: Database, reg: Registry, tmp_path: Path) -> None:
    await import_records(db, reg, "company", [{"name": "Existing", "code": "E"}])
    path = write(tmp_path / "c.csv", "name,code,parent\nKid,K,Parent\nParent,P,\nExisting 2,E,\nBad,B,Nowhere\n")
    before = await snapshot(db, "company", "person")
    dry = await import_file(db, reg, "company", path, upsert_key="code", dry_run=True)
    assert await snapshot(db, "company", "person") == before
    assert dry.dry_run and (dry.created, dry.updated, dry.skipped) == (2, 1, 1)
    real = await import_file(db, reg, "company", path, upsert_key="code")
    assert (real.created, real.updated, real.skipped) == (dry.created, dry.updated, dry.skipped)
    assert real.errors == dry.errors == [RowError(5, "parent", "parent", "no company record is called 'Nowhere'")]
    assert await snapshot(db, "company", "person") != before


async def test_bad_rows_are_reported_and_good_rows_import_whole(db: Database, reg: Registry, tmp_path: Path) -> None:
    await import_records(db, reg, "person", [{"last_name": "Taken", "email": "taken@example.com"}])
    path = write(
        tmp_path / "people.csv",
        "last_name,email,visits,birthday,status,budget\n"
        "Good 1,g1@example.com,1,2000-01-01,lead,5 EUR\n"
        "Bad date,bd@example.com,2,31.02.2000,lead,\n"  # row 3: coercion
        ",nolastname@example.com,3,,,\n"  # row 4: required
        "Good 2,g2@example.com,4,,customer,\n"
        "Too many visits,tm@example.com,-1,,Kundin,\n"  # row 6: validation, two problems
        "Good 3,g3@example.com,,,,\n"
        "Duplicate,g3@example.com,,,,\n"  # row 8: unique within the file
        "Taken,taken@example.com,,,,\n"  # row 9: unique against the database
        "Good 4,g4@example.com,,,,1 CHF\n"  # row 10: currency not allowed
        "Ragged,r@example.com,,,,,extra\n"  # row 11: more cells than the header
        "Good 5,g5@example.com,,,,\n",
    )
    people = service(db, reg, "person")
    for chunk_size in (500, 3):  # a dry run in one chunk, then the import in chunks of 3
        report = await import_file(db, reg, "person", path, chunk_size=chunk_size, dry_run=chunk_size == 500)
        assert (report.rows, report.created, report.skipped) == (11, 4, 7), chunk_size
        assert [str(e) for e in report.errors] == [
            "row 3, column 'birthday': '31.02.2000' is not a valid date (expected e.g. 2024-12-31 or 31.12.2024)",
            "row 4, column 'last_name': is required",
            "row 6, column 'status': 'Kundin' is not one of the options: lead, customer",
            "row 6, column 'visits': must not be less than 0",
            # In one chunk the importer sees the repeat; across chunks the database refuses it.
            "row 8, column 'email': " + ("has the same value as row 7; email is unique" if chunk_size == 500 else "this value is already used by another record"),
            "row 9, column 'email': this value is already used by another record",
            "row 10, column 'budget': currency: 'CHF' is not one of the options: EUR, USD, GBP",
            "row 11: has 7 cells, the header has 6",
        ], chunk_size
        assert report.error_count == 8
    names = {r["last_name"] for r in await everything(people)}
    assert names == {"Taken", "Good 1", "Good 2", "Good 3", "Good 5"}
    # No row is half-written: nothing of a bad row is anywhere.
    emails = {r["email"] for r in await everything(people)}
    assert not emails & {"bd@example.com", "nolastname@example.com", "tm@example.com", "r@example.com", "g4@example.com"}


async def test_required_field_without_a_column_stops_before_any_row(db: Database, reg: Registry, tmp_path: Path) -> None:
    with pytest.raises(XrmError, match="Required field last_name of person has no column"):
        await import_file(db, reg, "person", write(tmp_path / "p.csv", "email\na@example.com\n"))
    with pytest.raises(XrmError, match="The file has no column 'Surname'"):
        await import_file(db, reg, "person", write(tmp_path / "p.csv", "Name\nA\n"), mapping={"Surname": "last_name"})
    report = await import_file(db, reg, "person", write(tmp_path / "p.csv", "Name,Shoe size\nA,44\n"), mapping={"Name": "last_name"})
    assert report.created == 1 and report.unmapped_columns == ["Shoe size"]
    assert "column 'Shoe size' matches no field" in report.notes


async def test_json_lines(db: Database, reg: Registry, tmp_path: Path) -> None:
    lines = [
        json.dumps({"Nachname": "Typed", "visits": 3, "score": 1.25, "active": True, "budget": {"amount": 9.99, "currency": "GBP"}, "tags": ["vip"], "extra": {"x": [1, 2]}}),
        json.dumps({"last_name": "Texts", "visits": "1.234.567", "score": "1,5", "active": "ja", "budget": "€ 3", "tags": "vip; newsletter", "birthday": "31.12.2000"}),
        "",
        "[1, 2]",
        "{broken",
        json.dumps({"last_name": "Bad", "visits": 1.5, "unknown": 1}),
        json.dumps({"last_name": "Twice", "Nachname": "Zweimal"}),
    ]
    path = write(tmp_path / "people.jsonl", "\n".join(lines) + "\n")
    report = await import_file(db, reg, "person", path)
    assert (report.rows, report.created, report.skipped) == (6, 2, 4)
    assert [str(e) for e in report.errors] == [
        "row 4: must be a JSON object (one record per line)",
        "row 5: is not valid JSON: Expecting property name enclosed in double quotes at character 2",
        "row 6, column 'visits': 1.5 is not a whole number",
        "row 7, column 'Nachname' (last_name): last_name is also given by column 'last_name'",
    ]
    assert report.unmapped_columns == ["unknown"]
    people = await by(service(db, reg, "person"), "last_name")
    assert (people["Typed"]["score"], people["Typed"]["budget"], people["Typed"]["extra"]) == (D("1.25"), {"amount": D("9.99"), "currency": "GBP"}, {"x": [1, 2]})
    t = people["Texts"]
    assert (t["visits"], t["score"], t["active"], t["budget"], t["tags"], t["birthday"]) == (
        1234567, D("1.50"), True, {"amount": D("3.00"), "currency": "EUR"}, ["vip", "newsletter"], dt.date(2000, 12, 31)
    )


# -- export and round trips ---------------------------------------------------------------
SAMPLE_PEOPLE: list[dict[str, Any]] = [
    {
        "last_name": 'O\'Neil, "Jr."',
        "email": "o@example.com",
        "birthday": dt.date(1970, 1, 2),
        "met_at": dt.datetime(2024, 3, 4, 5, 6, 7, 890000, tzinfo=dt.timezone.utc),
        "visits": 42,
        "score": D("-1234567.89"),
        "active": False,
        "budget": {"amount": D("0.10"), "currency": "GBP"},
        "tags": ["partner, reseller", "vip"],
        "status": "customer",
        "extra": {"nested": {"list": [1, "zwei", None, True]}, "n": D("1.5")},
        "notes": "line 1\nline 2; with = and , and \u00e4\u00f6\u00fc\u00df\t",
    },
    {"last_name": "Minimal"},
    {"last_name": "Tags", "tags": [], "active": True, "budget": {"amount": D("1000000"), "currency": "EUR"}, "extra": {}},
]


async def _sample(db: Database, reg: Registry) -> None:
    companies = service(db, reg, "company")
    root = await companies.create({"name": "Root", "code": "R"})
    await companies.create({"name": "Leaf", "parent": root["id"]})
    child = await companies.create({"name": "Child", "code": "C"})
    await companies.update(root["id"], {"parent": child["id"]})  # a reference to a later record (by creation)
    await companies.update(child["id"], {"parent": None})
    people = [dict(p, company=child["id"] if i == 0 else None) for i, p in enumerate(SAMPLE_PEOPLE)]
    await service(db, reg, "person").create_many(people)


def _comparable(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    skip = {"created_at", "updated_at", "created_by", "updated_by", "owner_id", "version", "deleted_at"}
    return sorted(({k: v for k, v in r.items() if k not in skip} for r in records), key=lambda r: str(r["id"]))


@pytest.mark.parametrize("file_format", ["csv", "jsonl"])
async def test_export_then_import_gives_the_same_records(db: Database, make_entities: Any, tmp_path: Path, file_format: str) -> None:
    reg = await make_entities(copy.deepcopy(COMPANY), copy.deepcopy(PERSON), twin(COMPANY), twin(PERSON))
    await _sample(db, reg)
    for entity in ("company", "person"):
        path = tmp_path / f"{entity}.{file_format}"
        with open(path, "w", encoding="utf-8", newline="") as out:
            count = await export_records(db, reg, entity, out, format=file_format)
        assert count == await service(db, reg, entity).count()
        report = await import_file(db, reg, entity + "2", path)
        assert report.errors == [] and report.created == count and report.unmapped_columns == []
        original = _comparable(await everything(service(db, reg, entity)))
        copied = _comparable(await everything(service(db, reg, entity + "2")))
        assert copied == original
    # Importing its own export again, keyed by id, changes nothing but versions.
    with open(tmp_path / f"person.{file_format}", "rb") as f:
        again = await import_file(db, reg, "person2", f, format=file_format, upsert_key="id")
    assert (again.created, again.updated) == (0, len(SAMPLE_PEOPLE))
    assert _comparable(await everything(service(db, reg, "person2"))) == _comparable(await everything(service(db, reg, "person")))


async def test_export_formats_filters_and_display_references(db: Database, reg: Registry) -> None:
    await _sample(db, reg)
    text = "".join([chunk async for chunk in iter_export(db, reg, "person")])
    header, *lines = text.split("\r\n")
    first = next(line for line in lines if "o@example.com" in line)
    assert header == "id,last_name,email,company,birthday,met_at,visits,score,active,budget,budget_currency,tags,status,extra,notes"
    assert ",1970-01-02,2024-03-04T05:06:07.890000+00:00,42,-1234567.89,false,0.10,GBP," in first
    assert '"[""partner, reseller"", ""vip""]",customer,' in first
    out = io.StringIO()
    assert await export_records(db, reg, "person", out, where={"status": "customer"}, references="display") == 1
    assert ",Child," in out.getvalue().splitlines()[1]
    out = io.StringIO()
    assert await export_records(db, reg, "person", out, format="jsonl", search="Minimal") == 1
    line = json.loads(out.getvalue())
    assert line["last_name"] == "Minimal" and line["budget"] is None and set(line) == {"id", *PERSON["properties"]}
    out = io.StringIO()
    await export_records(db, reg, "person", out, format="jsonl", where={"last_name": "Tags"})
    assert '"budget":{"amount":1000000.00,"currency":"EUR"}' in out.getvalue()  # exact decimals as JSON numbers
    with pytest.raises(XrmError, match="unknown export format"):
        await export_records(db, reg, "person", io.StringIO(), format="xlsx")


class _Sink(io.TextIOBase):
    """Counts what is written and keeps none of it."""

    def __init__(self) -> None:
        self.size = 0
        self.lines = 0

    def write(self, text: str) -> int:
        self.size += len(text.encode())
        self.lines += text.count("\n")
        return len(text)


async def test_export_streams_with_flat_memory(db: Database, make_entities: Any) -> None:
    reg = await make_entities({
        "type": "object",
        "x-xrm": {"name": "item", "label": {"en": "Item"}},
        "properties": {"title": {"type": "string"}, "part": {"type": "integer"}, "body": {"x-xrm": {"type": "long_text"}}},
    })
    items = service(db, reg, "item")
    body = "x" * 400
    for start in range(0, 30_000, 1000):
        await items.create_many([{"title": f"item {n}", "part": n % 10, "body": body} for n in range(start, start + 1000)])

    async def measure(**options: Any) -> tuple[int, _Sink, int]:
        sink = _Sink()
        tracemalloc.start()
        try:
            count = await export_records(db, reg, "item", sink, **options)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        return count, sink, peak

    count, sink, peak = await measure()
    assert count == 30_000 and sink.lines == 30_001
    assert sink.size > 13_000_000
    assert peak < sink.size / 3, (peak, sink.size)  # one page at a time, never the whole export
    tenth, small_sink, small_peak = await measure(where={"part": 0})
    assert tenth == 3_000 and small_sink.lines == 3_001
    assert peak < small_peak * 1.5, (peak, small_peak)  # ten times the records, about the same memory


# -- the command line ----------------------------------------------------------------------
@pytest.fixture
def cli(database_uri: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    monkeypatch.setenv("XRM_DATABASE_URL", database_uri)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "company.json").write_text(json.dumps(COMPANY))
    (tmp_path / "person.json").write_text(json.dumps(PERSON))
    runner = CliRunner()
    assert runner.invoke(main, ["schema", "apply", str(tmp_path)]).exit_code == 0
    return runner


def test_cli_import_and_export(cli: CliRunner, tmp_path: Path) -> None:
    write(tmp_path / "companies.csv", "Firmenname;Kürzel;Muttergesellschaft\nAcme;A;\nAcme Sub;AS;acme\n")
    dry = cli.invoke(main, ["import", "company", "companies.csv", "--map", "Firmenname=name", "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert "company: 2 rows read, 2 would be created, 0 would be updated, 0 not imported" in dry.output
    assert "Dry run: nothing was written." in dry.output
    done = cli.invoke(main, ["import", "company", "companies.csv", "--map", "Firmenname=name"])
    assert done.exit_code == 0 and "2 created" in done.output
    assert "Matched ignoring case/spaces: column 'Muttergesellschaft': 'acme' -> 'Acme' (1 rows)" in done.output

    write(tmp_path / "people.csv", "last_name,budget,met_at,Arbeitgeber,Ignore me\nA,12.5,2024-01-01 10:00,Acme,x\nB,zwölf,,,\nC,,,Nope,\n")
    failed = cli.invoke(main, ["import", "person", "people.csv", "--currency", "EUR", "--timezone", "Europe/Berlin", "--map", "Ignore me=", "--show-errors", "1"])
    assert failed.exit_code == 1
    assert "person: 3 rows read, 1 created, 0 updated, 2 not imported" in failed.output
    assert "Row errors (first 1 of 2):\n  row 3, column 'budget': 'zwölf' is not an amount" in failed.output
    assert "Traceback" not in failed.output

    exported = cli.invoke(main, ["export", "person", "--where", "company=Acme", "--references", "display"])
    assert exported.exit_code == 0, exported.output
    lines = exported.stdout.splitlines()
    assert len(lines) == 2
    record = dict(zip(lines[0].split(","), lines[1].split(",")))
    assert (record["last_name"], record["company"], record["met_at"]) == ("A", "Acme", "2024-01-01T09:00:00+00:00")
    assert (record["budget"], record["budget_currency"]) == ("12.50", "EUR")
    to_file = cli.invoke(main, ["export", "company", "--format", "jsonl", "--output", "companies.jsonl", "--where", "code=AS"])
    assert to_file.exit_code == 0 and "Exported 1 company records to companies.jsonl" in to_file.output
    assert json.loads((tmp_path / "companies.jsonl").read_text())["name"] == "Acme Sub"

    bad = cli.invoke(main, ["import", "person", "people.csv", "--map", "nonsense"])
    assert bad.exit_code == 1 and "--map takes NAME=VALUE" in bad.output
    bad = cli.invoke(main, ["export", "person", "--where", "visits=many"])
    assert bad.exit_code == 1 and "--where visits: 'many' is not a number" in bad.output
    assert "Traceback" not in bad.output

