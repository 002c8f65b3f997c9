"""The CRM starter pack (built-in plugin crm, docs/crm-pack.md): its entities, lead conversion, ticket SLA and
state machine, campaign members from a saved view, and the UI's convert button."""

from __future__ import annotations

import re
from datetime import datetime, timedelta
from typing import Any

import pytest
from conftest import bearer, csrf, log_in, make_user, ok, problem
from xrm.errors import Veto
from xrm.plugins import get_plugin_manager, hookimpl

ENTITIES = ("lead", "activity", "ticket", "campaign", "campaign_member", "campaign_response", "product", "price_list", "price_list_item")


def _admin(api: Any) -> dict[str, str]:
    return bearer(api, "admin", ["admin"])


def test_the_pack_entities_exist_after_start(api: Any) -> None:
    headers = _admin(api)
    for entity in ENTITIES:
        assert ok(api.get(f"/api/v1/{entity}", headers=headers))["records"] == [], entity
    meta = ok(api.get("/api/v1/meta/entities", headers=headers)) if api.get("/api/v1/meta/entities", headers=headers).status_code == 200 else None
    if meta is not None:
        names = {e["name"] for e in (meta if isinstance(meta, list) else meta.get("entities", []))}
        assert set(ENTITIES) <= names


# -- lead conversion -------------------------------------------------------------------
def _lead(api: Any, headers: dict[str, str], **values: Any) -> dict[str, Any]:
    body = {"name": "Jana Schulz", "company": "Schulz Logistik GmbH", "email": "jana@schulz-logistik.example",
            "phone": "+49 40 5550101", "source": "event", **values}
    return ok(api.post("/api/v1/lead", headers=headers, json=body), 201)


def test_lead_conversion_creates_and_links_account_contact_and_deal(api: Any) -> None:
    headers = _admin(api)
    lead = _lead(api, headers)
    assert lead["status"] == "new"
    result = ok(api.post(f"/api/v1/lead/{lead['id']}/convert", headers=headers,
                         json={"title": "Schulz: Flottenlizenz", "amount": {"amount": 12000, "currency": "EUR"}}), 201)
    account, contact, deal, converted = result["account"], result["contact"], result["deal"], result["lead"]
    assert account["name"] == "Schulz Logistik GmbH"
    assert (contact["full_name"], contact["email"], contact["phone"], contact["account"]) == (
        "Jana Schulz", "jana@schulz-logistik.example", "+49 40 5550101", account["id"])
    assert (deal["title"], deal["stage"], deal["account"], deal["contact"]) == ("Schulz: Flottenlizenz", "prospecting", account["id"], contact["id"])
    assert deal["amount"]["currency"] == "EUR" and float(deal["amount"]["amount"]) == 12000
    stored = ok(api.get(f"/api/v1/lead/{lead['id']}", headers=headers))
    assert stored == converted
    assert (stored["status"], stored["converted_account"], stored["converted_contact"], stored["converted_deal"]) == (
        "converted", account["id"], contact["id"], deal["id"])
    assert stored["converted_at"]
    # audited by the normal writes
    history = ok(api.get(f"/api/v1/lead/{lead['id']}/history", headers=headers))
    entries = history["entries"] if isinstance(history, dict) else history
    assert [e["action"] for e in entries].count("record.updated") == 1
    # a second conversion is refused and changes nothing
    again = problem(api.post(f"/api/v1/lead/{lead['id']}/convert", headers=headers), 409)
    assert "already converted" in again["detail"]
    assert len(ok(api.get("/api/v1/deal", headers=headers))["records"]) == 1
    assert len(ok(api.get("/api/v1/account", headers=headers))["records"]) == 1


def test_conversion_reuses_an_existing_account_and_defaults_the_title(api: Any) -> None:
    headers = _admin(api)
    existing = ok(api.post("/api/v1/account", headers=headers, json={"name": "Nordwind AG"}), 201)
    lead = _lead(api, headers, name="Tom Berger", company="Nordwind AG", email="tom@nordwind.example")
    result = ok(api.post(f"/api/v1/lead/{lead['id']}/convert", headers=headers), 201)
    assert result["account"]["id"] == existing["id"]
    assert result["deal"]["title"] == "Nordwind AG"
    problem(api.post(f"/api/v1/lead/{lead['id']}/convert", headers=headers, json={"colour": "red"}), 422)
    problem(api.post("/api/v1/lead/00000000-0000-0000-0000-000000000000/convert", headers=headers), 404)
    problem(api.post(f"/api/v1/account/{existing['id']}/convert", headers=headers), 404)


class _NoDeals:
    @hookimpl
    def xrm_before_write(self, entity: str, action: str) -> None:
        if entity == "deal" and action == "create":
            raise Veto("no new deals today", "/title")


def test_a_failed_conversion_leaves_nothing(api: Any) -> None:
    headers = _admin(api)
    lead = _lead(api, headers)
    manager = get_plugin_manager()
    manager.register(_NoDeals(), name="crm-test-no-deals")
    try:
        refused = problem(api.post(f"/api/v1/lead/{lead['id']}/convert", headers=headers), 422)
    finally:
        manager.unregister(name="crm-test-no-deals")
    assert "no new deals today" in str(refused)
    for entity in ("account", "contact", "deal"):
        assert ok(api.get(f"/api/v1/{entity}", headers=headers))["records"] == [], entity
    stored = ok(api.get(f"/api/v1/lead/{lead['id']}", headers=headers))
    assert stored["status"] == "new" and stored["converted_deal"] is None and stored["version"] == lead["version"]


# -- tickets --------------------------------------------------------------------------
def _hours(later: str, earlier: str) -> float:
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)) / timedelta(hours=1)


@pytest.mark.parametrize(("priority", "response", "resolution"), [("urgent", 1, 8), ("high", 4, 24), ("normal", 8, 72), ("low", 24, 120)])
def test_ticket_sla_due_times_follow_the_priority(api: Any, priority: str, response: int, resolution: int) -> None:
    headers = _admin(api)
    created = ok(api.post("/api/v1/ticket", headers=headers, json={"subject": "Drucker druckt nicht", "priority": priority}), 201)
    ticket = ok(api.get(f"/api/v1/ticket/{created['id']}", headers=headers))
    assert _hours(ticket["sla_response_due"], ticket["created_at"]) == pytest.approx(response)
    assert _hours(ticket["sla_resolution_due"], ticket["created_at"]) == pytest.approx(resolution)
    assert ticket["first_response_at"] is None and ticket["resolved_at"] is None


def test_ticket_status_changes_record_first_response_and_resolution(api: Any) -> None:
    headers = _admin(api)
    ticket = ok(api.post("/api/v1/ticket", headers=headers, json={"subject": "Login schlägt fehl", "priority": "high"}), 201)
    tid = ticket["id"]
    refused = problem(api.patch(f"/api/v1/ticket/{tid}", headers=headers, json={"status": "closed"}), 422)
    assert refused["title"] == "Refused by a plugin" and "cannot change from 'new' to 'closed'" in str(refused)
    ok(api.patch(f"/api/v1/ticket/{tid}", headers=headers, json={"status": "open"}))
    opened = ok(api.get(f"/api/v1/ticket/{tid}", headers=headers))
    first = opened["first_response_at"]
    assert first and opened["status_changed_at"] and opened["resolved_at"] is None
    ok(api.patch(f"/api/v1/ticket/{tid}", headers=headers, json={"status": "waiting"}))
    ok(api.patch(f"/api/v1/ticket/{tid}", headers=headers, json={"status": "open"}))
    ok(api.post(f"/api/v1/ticket/{tid}/transitions/resolve", headers=headers))
    resolved = ok(api.get(f"/api/v1/ticket/{tid}", headers=headers))
    assert resolved["first_response_at"] == first and resolved["resolved_at"]
    ok(api.post(f"/api/v1/ticket/{tid}/transitions/reopen", headers=headers))
    assert ok(api.get(f"/api/v1/ticket/{tid}", headers=headers))["resolved_at"] is None
    ok(api.post(f"/api/v1/ticket/{tid}/transitions/resolve", headers=headers))
    ok(api.post(f"/api/v1/ticket/{tid}/transitions/close", headers=headers))
    closed = ok(api.get(f"/api/v1/ticket/{tid}", headers=headers))
    assert closed["status"] == "closed" and closed["resolved_at"] and closed["first_response_at"] == first
    # the SLA due times were set once and stay
    assert closed["sla_response_due"] == opened["sla_response_due"]
    problem(api.post("/api/v1/ticket", headers=headers, json={"subject": "Direkt zu", "status": "closed"}), 422)
    # Every transition is in the trail, also those whose follow-up (first response, resolved at) updates the ticket again.
    history = ok(api.get(f"/api/v1/ticket/{tid}/history", headers=headers))["entries"]
    taken = [(e["details"]["from"], e["details"]["to"]) for e in history if e["action"] == "workflow.transition"]
    assert taken == [("new", "open"), ("open", "waiting"), ("waiting", "open"), ("open", "resolved"), ("resolved", "open"),
                     ("open", "resolved"), ("resolved", "closed")], taken


# -- campaigns --------------------------------------------------------------------------
def _saved_view(api: Any, owner: str, name: str, query: str, shared: bool = False) -> str:
    async def insert() -> str:
        async with api.app.state.platform.db.connection() as connection:
            return str(await connection.fetchval(
                "INSERT INTO xrm_sys.saved_view (entity, name, query, owner_id, shared) "
                "SELECT 'contact', $1, $2, id, $4 FROM xrm_sys.app_user WHERE name = $3 RETURNING id", name, query, owner, shared))

    return api.blocking_portal.call(insert)  # type: ignore[no-any-return]


def test_campaign_refresh_adds_the_segment_once_and_only_readable_contacts(api: Any) -> None:
    admin = _admin(api)
    for name, title in (("Anna Weber", "Einkauf"), ("Ben Koch", "Einkauf"), ("Clara Hahn", "Vertrieb")):
        ok(api.post("/api/v1/contact", headers=admin, json={"full_name": name, "job_title": title}), 201)
    view = _saved_view(api, "admin", "Einkäufer", "job_title%5Bcontains%5D=Einkauf&columns=email")
    campaign = ok(api.post("/api/v1/campaign", headers=admin, json={"name": "Frühjahrsaktion", "segment": "Einkäufer"}), 201)
    first = ok(api.post(f"/api/v1/campaign/{campaign['id']}/refresh-members", headers=admin))
    assert (first["selected"], first["added"], first["already_members"]) == (2, 2, 0)
    assert first["segment"] == {"id": view, "name": "Einkäufer"}
    again = ok(api.post(f"/api/v1/campaign/{campaign['id']}/refresh-members", headers=admin))
    assert (again["selected"], again["added"], again["already_members"]) == (2, 0, 2)
    members = ok(api.get(f"/api/v1/campaign_member?campaign={campaign['id']}&expand=contact", headers=admin))["records"]
    assert sorted(m["contact_expanded"]["full_name"] for m in members) == ["Anna Weber", "Ben Koch"]
    assert {m["status"] for m in members} == {"invited"}
    # the segment may also be the view's id; a new matching contact is added on the next refresh
    ok(api.patch(f"/api/v1/campaign/{campaign['id']}", headers=admin, json={"segment": view}))
    ok(api.post("/api/v1/contact", headers=admin, json={"full_name": "Dora Wolf", "job_title": "Leitung Einkauf"}), 201)
    third = ok(api.post(f"/api/v1/campaign/{campaign['id']}/refresh-members", headers=admin))
    assert (third["added"], third["already_members"]) == (1, 2)
    # no segment / unknown segment: 422
    other = ok(api.post("/api/v1/campaign", headers=admin, json={"name": "Ohne Segment"}), 201)
    problem(api.post(f"/api/v1/campaign/{other['id']}/refresh-members", headers=admin), 422)
    ok(api.patch(f"/api/v1/campaign/{other['id']}", headers=admin, json={"segment": "Gibt es nicht"}))
    problem(api.post(f"/api/v1/campaign/{other['id']}/refresh-members", headers=admin), 422)


def test_campaign_refresh_adds_only_contacts_the_caller_may_read(api: Any) -> None:
    admin = _admin(api)
    ok(api.post("/api/v1/admin/roles", headers=admin, json={"name": "marketing"}), 201)
    for entity, action, scope in (("contact", "read", "own"), ("contact", "create", "all"), ("campaign", "read", "all"),
                                  ("campaign", "create", "all"), ("campaign_member", "read", "all"), ("campaign_member", "create", "all")):
        ok(api.post("/api/v1/admin/roles/marketing/grants", headers=admin, json={"entity": entity, "action": action, "scope": scope}))
    mia = bearer(api, "mia", [])
    ok(api.put("/api/v1/admin/users/mia/roles/marketing", headers=admin))
    ok(api.post("/api/v1/contact", headers=admin, json={"full_name": "Admins Kontakt", "job_title": "Einkauf"}), 201)
    ok(api.post("/api/v1/contact", headers=mia, json={"full_name": "Mias Kontakt", "job_title": "Einkauf"}), 201)
    _saved_view(api, "admin", "Einkauf geteilt", "job_title=Einkauf", shared=True)
    campaign = ok(api.post("/api/v1/campaign", headers=mia, json={"name": "Mias Kampagne", "segment": "Einkauf geteilt"}), 201)
    result = ok(api.post(f"/api/v1/campaign/{campaign['id']}/refresh-members", headers=mia))
    assert (result["selected"], result["added"]) == (1, 1)
    members = ok(api.get(f"/api/v1/campaign_member?campaign={campaign['id']}&expand=contact", headers=admin))["records"]
    assert [m["contact_expanded"]["full_name"] for m in members] == ["Mias Kontakt"]


# -- web UI -----------------------------------------------------------------------------
def test_the_convert_button_converts_the_lead_and_shows_the_deal(ui: Any, ui_admin: str) -> None:
    lead = ui.blocking_portal.call(_create_lead, ui)
    page = ui.get(f"/e/lead/{lead['id']}")
    assert page.status_code == 200
    assert f'action="/e/lead/{lead["id"]}/convert"' in page.text and 'data-action="convert"' in page.text
    token = csrf(page.text)
    assert ui.post(f"/e/lead/{lead['id']}/convert", data={"title": "Neue Chance"}, follow_redirects=False).status_code == 403
    done = ui.post(f"/e/lead/{lead['id']}/convert", data={"csrf_token": token, "title": "Neue Chance"}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"].startswith("/e/deal/")
    deal = ui.get(done.headers["location"])
    assert deal.status_code == 200 and "Neue Chance" in deal.text
    again = ui.get(f"/e/lead/{lead['id']}")
    assert "This lead is converted." in again.text and 'data-action="convert"' not in again.text
    assert ui.post(f"/e/lead/{lead['id']}/convert", data={"csrf_token": token}, follow_redirects=False).status_code == 409


def test_the_panels_speak_german(ui: Any) -> None:
    make_user(ui, "erika", ["admin"])
    log_in(ui, "erika")
    lead = ui.blocking_portal.call(_create_lead, ui)
    page = ui.get(f"/e/lead/{lead['id']}", headers={"Accept-Language": "de"})
    assert "Konvertieren" in page.text and "Titel der Verkaufschance (optional)" in page.text


async def _create_lead(client: Any) -> dict[str, Any]:
    from xrm.records.principal import SYSTEM_PRINCIPAL
    from xrm.records.service import RecordService

    platform = client.app.state.platform
    return await RecordService(platform.db, platform.registry, "lead", SYSTEM_PRINCIPAL).create(
        {"name": "Lena Vogel", "company": "Vogel Bau GmbH", "email": "lena@vogel-bau.example"})


def test_the_demo_loads_the_pack(xrm_cli: Any, database_uri: str) -> None:
    from xrm.demo.loader import demo_records

    output = xrm_cli("demo")
    data = demo_records()  # the defaults of `xrm demo`: seed 1, size small
    for entity in ("lead", "activity", "ticket", "campaign", "campaign_member", "campaign_response", "product", "price_list",
                   "price_list_item"):
        assert f"{entity}: {len(data[entity])} demo records created" in output
    assert "lead: already has records" in xrm_cli("demo")

    import asyncio

    import asyncpg

    async def read() -> tuple[Any, list[Any]]:
        connection = await asyncpg.connect(database_uri)
        try:
            lead = await connection.fetchrow(
                "SELECT l.status, a.name AS account, d.title AS deal, d.stage FROM lead l JOIN account a ON a.id = l.converted_account "
                "JOIN deal d ON d.id = l.converted_deal WHERE l.name = 'Lena Fischer'")
            tickets = await connection.fetch("SELECT subject, status, sla_response_due IS NOT NULL AS sla, first_response_at IS NOT NULL AS answered "
                                             "FROM ticket ORDER BY subject")
            return lead, tickets
        finally:
            await connection.close()

    lead, tickets = asyncio.run(read())
    # Converted by the real conversion, then moved along the pipeline to negotiation.
    assert tuple(lead) == ("converted", "Schneider & Söhne KG", "Schneider Fertigungsanlage", "negotiation")
    known = {t["subject"]: t for t in tickets}
    assert known["Invoice address wrong"]["status"] == "resolved" and known["Dashboard loads slowly"]["status"] == "waiting"
    assert known["VPN-Zugang für neue Mitarbeiter"]["status"] == "new" and not known["VPN-Zugang für neue Mitarbeiter"]["answered"]
    assert all(t["sla"] for t in tickets)
    assert sum(t["answered"] for t in tickets) == sum(1 for t in data["ticket"] if t.get("_then"))  # every ticket that left "new"


def test_the_campaign_panel_adds_the_segment_as_members(ui: Any, ui_admin: str) -> None:
    async def setup() -> str:
        from xrm.records.principal import SYSTEM_PRINCIPAL
        from xrm.records.service import RecordService

        platform = ui.app.state.platform
        contacts = RecordService(platform.db, platform.registry, "contact", SYSTEM_PRINCIPAL)
        for name in ("Hanna Roth", "Ida Lang"):
            await contacts.create({"full_name": name, "job_title": "Marketing"})
        campaign = await RecordService(platform.db, platform.registry, "campaign", SYSTEM_PRINCIPAL).create(
            {"name": "Herbstaktion", "segment": "Marketing-Leute"})
        return str(campaign["id"])

    campaign = ui.blocking_portal.call(setup)
    assert "Marketing-Leute" in ui.get(f"/e/campaign/{campaign}").text  # no such view yet
    saved = ui.post("/e/contact/views", data={"csrf_token": ui_admin, "name": "Marketing-Leute", "query": "job_title=Marketing"},
                    follow_redirects=False)
    assert saved.status_code == 303
    page = ui.get(f"/e/campaign/{campaign}")
    assert 'data-action="refresh-members"' in page.text
    assert ui.post(f"/e/campaign/{campaign}/refresh-members", data={}, follow_redirects=False).status_code == 403
    done = ui.post(f"/e/campaign/{campaign}/refresh-members", data={"csrf_token": csrf(page.text)}, follow_redirects=False)
    assert done.status_code == 303 and done.headers["location"] == f"/e/campaign/{campaign}"

    async def members() -> int:
        from xrm.records.principal import SYSTEM_PRINCIPAL
        from xrm.records.service import RecordService

        platform = ui.app.state.platform
        return await RecordService(platform.db, platform.registry, "campaign_member", SYSTEM_PRINCIPAL).count(where={"campaign": campaign})

    assert ui.blocking_portal.call(members) == 2


# -- campaign responses ------------------------------------------------------------------
def test_campaign_responses_are_counted_per_kind_with_the_response_rate_and_import_like_any_entity(ui: Any, ui_admin: str) -> None:
    headers = {"X-CSRF-Token": ui_admin}

    def create(entity: str, **values: Any) -> dict[str, Any]:
        return ok(ui.post(f"/api/v1/{entity}", headers=headers, json=values), 201)  # type: ignore[no-any-return]

    campaign = create("campaign", name="Sommerfest 2026", status="active")
    contacts = {name: create("contact", full_name=name, email=f"{name.split()[0].lower()}@example.org")
                for name in ("Anna Weber", "Ben Koch", "Clara Hahn", "Dora Wolf")}
    members = {name: create("campaign_member", campaign=campaign["id"], contact=c["id"]) for name, c in contacts.items()}
    page = ui.get(f"/e/campaign/{campaign['id']}").text
    assert "No responses yet." in page and "Response rate: 0.0% (0 of 4 members responded)" in page
    for name, kind, moment, channel in (("Anna Weber", "opened", "2026-06-01T09:00:00Z", "email"),
                                        ("Anna Weber", "clicked", "2026-06-01T09:05:00Z", "web"),
                                        ("Anna Weber", "registered", "2026-06-02T10:00:00Z", "web"),
                                        ("Ben Koch", "opened", "2026-06-03T08:00:00Z", "email"),
                                        ("Clara Hahn", "unsubscribed", "2026-06-03T08:30:00Z", "email")):
        create("campaign_response", campaign=campaign["id"], member=members[name]["id"], contact=contacts[name]["id"], kind=kind,
               responded_at=moment, channel=channel)
    # A response that is not one of the kinds is refused, naming the field, and nothing is written.
    refused = problem(ui.post("/api/v1/campaign_response", headers=headers,
                              json={"campaign": campaign["id"], "kind": "gelesen", "responded_at": "2026-06-04T08:00:00Z"}), 422)
    assert [e["pointer"] for e in refused["errors"]] == ["/kind"]
    # Import: references by display value (the campaign's and the contact's name), German column labels; a bad row is reported.
    imported = ui.post("/api/v1/campaign_response/_import", headers={**headers, "Content-Type": "text/csv"},
                       content="Kampagne,Kontakt,Reaktion,Zeitpunkt,Kanal\n"
                               "Sommerfest 2026,Dora Wolf,attended,2026-06-20T18:00:00Z,event\n"
                               "Sommerfest 2026,Dora Wolf,gelesen,2026-06-20T18:00:00Z,event\n".encode())
    report = ok(imported)
    assert (report["created"], report["skipped"]) == (1, 1), report
    assert [(e["row"], e["field"]) for e in report["errors"]] == [(3, "kind")], report["errors"]
    listed = ok(ui.get(f"/api/v1/campaign_response?campaign={campaign['id']}&kind=attended&expand=contact"))["records"]
    assert [r["contact_expanded"]["full_name"] for r in listed] == ["Dora Wolf"]
    assert len(ok(ui.get(f"/api/v1/campaign_response?campaign={campaign['id']}"))["records"]) == 6

    page = ui.get(f"/e/campaign/{campaign['id']}").text
    panel = page.split('data-panel="responses"')[1]
    counts = dict(re.findall(r'<tr data-kind="(\w+)"><td>[^<]+</td><td>(\d+)</td></tr>', panel))
    assert counts == {"opened": "2", "clicked": "1", "registered": "1", "attended": "1", "unsubscribed": "1"}
    # Anna, Ben and Dora responded; Clara only unsubscribed: 3 of 4.
    assert "Response rate: 75.0% (3 of 4 members responded)" in panel
    assert f'href="/e/campaign_response?campaign={campaign["id"]}"' in panel
    ui.post("/language", data={"csrf_token": ui_admin, "language": "de", "next": "/"})
    german = ui.get(f"/e/campaign/{campaign['id']}").text
    assert "Reaktionen" in german and "<td>Teilgenommen</td>" in german and "<td>Abgemeldet</td>" in german
    assert "Reaktionsquote: 75,0 % (3 von 4 Teilnehmern haben reagiert)" in german
