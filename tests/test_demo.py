"""The demo data set (`xrm demo`, xrm.demo): generated from a seed, loaded through the service layer, realistic.

The loader writes every record with RecordService, so the state machines, the
ticket follow-up and the audit trail see the demo like any other data: the
tests read the database and the audit trail that the demo left.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import date
from typing import Any

import asyncpg

from conftest import ROOT
from xrm.demo.generator import SIZES
from xrm.demo.loader import demo_records

DAY = date(2026, 6, 15)


def test_the_same_seed_gives_the_same_records_and_another_seed_others() -> None:
    first = demo_records(7, SIZES["small"], DAY)
    assert first == demo_records(7, SIZES["small"], DAY)
    assert first["account"] != demo_records(8, SIZES["small"], DAY)["account"]
    assert {entity: len(records) for entity, records in demo_records(7, 0, DAY).items()} == {  # the well-known records only
        "account": 8, "contact": 9, "deal": 9, "lead": 5, "activity": 5, "ticket": 4, "campaign": 2, "campaign_member": 4,
        "campaign_response": 3, "product": 4, "price_list": 2, "price_list_item": 6}
    # The well-known records come first, unchanged by the seed (tests and docs name them).
    names = [a["name"] for a in first["account"]]
    assert names[:3] == ["ACME Corporation", "Globex GmbH", "Müller GmbH"] and len(names) == len(set(names)) == 8 + SIZES["small"]
    assert "Max Mustermann" in {c["full_name"] for c in first["contact"]}
    emails = [c["email"] for c in first["contact"]]
    assert len(emails) == len(set(emails))  # e-mail addresses are unique in the contact definition


def test_a_medium_data_set_is_varied_over_two_years_and_both_languages() -> None:
    data = demo_records(1, SIZES["medium"], DAY)
    accounts = data["account"]
    german_regions = {a["region"] for a in accounts if a.get("phone", "").startswith("+49")}
    assert len(german_regions) == 16, german_regions  # every Bundesland
    assert any("GmbH" in a["name"] for a in accounts) and any(a["name"].endswith(("Inc.", "Ltd", "LLC", "Industries")) for a in accounts)
    assert any(ch in "".join(a["name"] for a in accounts) for ch in "äöüß")
    # A hierarchy: subsidiaries, some with subsidiaries of their own.
    parent = {a["name"]: a.get("parent_account") for a in accounts}
    assert sum(1 for p in parent.values() if p) >= 20
    assert any(parent.get(p) for p in parent.values() if p)
    # Deals: every stage, and decisions spread over the months of two years.
    deals = data["deal"]
    final = Counter((d["_then"][-1] if d.get("_then") else d)["stage"] for d in deals)
    assert set(final) == {"prospecting", "qualification", "negotiation", "won", "lost"}
    assert 0.3 < final["won"] / (final["won"] + final["lost"]) < 0.7, final
    closed = [step["closed_at"][:7] for d in deals for step in d.get("_then", []) if step.get("closed_at")]
    assert len(set(closed)) >= 20 and min(closed) >= "2024-06"
    assert all("amount" in d for d in deals if d.get("_then") and d["_then"][-1]["stage"] == "won")
    # Tickets with their service levels: most are answered in time, some are not.
    tickets = [t for t in data["ticket"] if "first_response_at" in t]
    late = [t for t in tickets if t["first_response_at"] > t["sla_response_due"]]
    assert 0.05 < len(late) / len(tickets) < 0.35
    kinds = Counter(r["kind"] for r in data["campaign_response"])
    assert {"opened", "clicked", "registered", "attended", "purchased"} <= set(kinds)
    assert Counter(a["kind"] for a in data["activity"]).keys() >= {"call", "email", "meeting", "task"}


async def _read(uri: str) -> dict[str, Any]:
    connection = await asyncpg.connect(uri)
    try:
        counts = {}
        for entity in ("account", "contact", "deal", "lead", "activity", "ticket", "campaign", "campaign_member",
                       "campaign_response", "product", "price_list", "price_list_item"):
            counts[entity] = await connection.fetchval(f"SELECT count(*) FROM {entity}")
        deals = {r["id"]: r["stage"] for r in await connection.fetch("SELECT id, stage FROM deal")}
        audit = await connection.fetch(
            "SELECT record_id, action, changes, details FROM xrm_sys.audit_log WHERE entity = 'deal' "
            "AND action IN ('record.created', 'record.updated', 'workflow.transition') ORDER BY id")
        converted = await connection.fetch(
            "SELECT l.name, d.stage, d.title FROM lead l JOIN deal d ON d.id = l.converted_deal WHERE l.status = 'converted'")
        tickets = await connection.fetch("SELECT first_response_at > sla_response_due AS late FROM ticket WHERE first_response_at IS NOT NULL")
        return {"counts": counts, "deals": deals, "audit": audit, "converted": converted, "tickets": tickets}
    finally:
        await connection.close()


def test_xrm_demo_loads_the_seeded_set_through_the_service_layer_once(xrm_cli: Any, database_uri: str) -> None:
    output = xrm_cli("demo", "--seed", "3")
    data = demo_records(3, SIZES["small"])
    # A converted lead adds its deal, and an account and a contact unless they exist already (Lena Fischer's do).
    conversions = [lead for lead in data["lead"] if lead.get("_convert")]
    expected = {entity: len(records) for entity, records in data.items()}
    expected["account"] += len(conversions) - 1
    expected["contact"] += len(conversions) - 1
    expected["deal"] += len(conversions)
    read = asyncio.run(_read(database_uri))
    assert read["counts"] == expected
    for entity, count in data.items():
        assert f"{entity}: {len(count)} demo records created" in output
    assert len(read["converted"]) == len(conversions) > 1
    assert ("Lena Fischer", "negotiation", "Schneider Fertigungsanlage") in {tuple(r) for r in read["converted"]}
    assert 0 < sum(r["late"] for r in read["tickets"]) < len(read["tickets"])  # some tickets breached their SLA

    # Every deal's stage history follows the state machine of entity_schemas/deal.json: it starts in prospecting,
    # each change of the stage is one of the machine's transitions, recorded as such, and ends in the current stage.
    machine = json.loads((ROOT / "entity_schemas" / "deal.json").read_text())["x-xrm"]["state_machine"]
    allowed = {(source, t["to"]) for t in machine["transitions"] for source in ([t["from"]] if isinstance(t["from"], str) else t["from"])}
    history: dict[Any, list[tuple[str, Any]]] = {}
    for entry in read["audit"]:
        changes = json.loads(entry["changes"]) if isinstance(entry["changes"], str) else entry["changes"]
        details = json.loads(entry["details"]) if isinstance(entry["details"], str) else entry["details"]
        if entry["action"] == "workflow.transition":
            history.setdefault(entry["record_id"], []).append(("transition", (details["from"], details["to"])))
        elif changes and "stage" in changes:
            history.setdefault(entry["record_id"], []).append((entry["action"], changes["stage"]))
    moves: Counter[tuple[str, str]] = Counter()
    for deal, stage in read["deals"].items():
        entries = history[deal]
        assert entries[0][0] == "record.created" and entries[0][1]["new"] == "prospecting", entries
        state = "prospecting"
        updates = [change for action, change in entries if action == "record.updated"]
        transitions = [pair for action, pair in entries if action == "transition"]
        assert [(u["old"], u["new"]) for u in updates] == transitions, entries
        for source, target in transitions:
            assert source == state and (source, target) in allowed, (deal, entries)
            state = target
            moves[(source, target)] += 1
        assert state == stage
    assert moves[("negotiation", "won")] and moves[("prospecting", "lost")] and moves[("negotiation", "lost")]

    # Running it again creates nothing.
    again = xrm_cli("demo", "--seed", "3")
    assert "account: already has records, left as is" in again and "demo records created" not in again
    assert asyncio.run(_read(database_uri))["counts"] == expected


def test_demo_options_are_checked(xrm_cli: Any) -> None:
    assert "Invalid value for '--size'" in xrm_cli("demo", "--size", "huge", code=2)
    assert "Invalid value for '--accounts'" in xrm_cli("demo", "--accounts", "-1", code=2)
