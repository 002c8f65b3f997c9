"""State machines (built-in plugin statemachine, docs/workflows.md): definitions, enforcement on every write,
the transitions endpoints, the audit trail and outbox, the detail panel, and the OpenAPI part.

The deal pipeline of docs/examples/deal-pipeline.json is the example used throughout, so the documented
example is tested; it is applied over the shipped deal definition (a non-destructive change).
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import ROOT, bearer, create_token, fresh_database, live_server, log_in, make_user, ok, problem
from xrm.errors import DefinitionInvalid, ValidationFailed
from xrm.records.principal import Principal
from xrm.records.service import RecordService
from xrm.schema.definition import parse_definition

PIPELINE: dict[str, Any] = json.loads((ROOT / "docs" / "examples" / "deal-pipeline.json").read_text())


def apply_pipeline(client: Any) -> dict[str, str]:
    """The example pipeline applied through the API; an admin's bearer headers."""
    admin = bearer(client, "root", ["admin"])
    ok(client.post("/api/v1/meta/apply", headers=admin, json={"definitions": [PIPELINE]}))
    return admin


def pointers(error: Any) -> dict[str, str]:
    return {p.pointer: p.message for p in error.problems}


# -- definitions -------------------------------------------------------------------------
def test_the_example_is_a_valid_definition_and_problems_come_at_pointers() -> None:
    parse_definition(PIPELINE, known_entities=["account", "contact"])
    wrong = copy.deepcopy(PIPELINE)
    machine = wrong["x-xrm"]["state_machine"]
    machine["initial"] = "open"
    machine["transitions"][1]["name"] = "qualify"
    machine["transitions"][2]["to"] = "closed"
    machine["transitions"][2]["when"] = [{"field": "amount", "op": "starts_with", "value": "1"}, {"field": "colour", "op": "eq", "value": 1}]
    machine["transitions"][3]["requires"] = ["nothing"]
    machine["required_in_state"]["archived"] = ["close_date"]
    with pytest.raises(DefinitionInvalid) as error:
        parse_definition(wrong, known_entities=["account", "contact"])
    found = pointers(error.value)
    base = "/x-xrm/state_machine"
    assert "'open' is not a state" in found[f"{base}/initial"] and "prospecting, qualification" in found[f"{base}/initial"]
    assert found[f"{base}/transitions/1/name"] == "transition name 'qualify' is used twice"
    assert "'closed' is not a state" in found[f"{base}/transitions/2/to"]
    assert "starts_with does not apply to a currency field" in found[f"{base}/transitions/2/when/0"]
    assert found[f"{base}/transitions/2/when/1/field"] == "'colour' is not a field of this entity"
    assert found[f"{base}/transitions/3/requires/0"] == "'nothing' is not a field of this entity"
    assert "'archived' is not a state" in found[f"{base}/required_in_state/archived"]
    assert "must be an initial state" in found["/properties/stage/default"]

    not_select = copy.deepcopy(PIPELINE)
    not_select["x-xrm"]["state_machine"]["field"] = "title"
    with pytest.raises(DefinitionInvalid) as error:
        parse_definition(not_select, known_entities=["account", "contact"])
    assert "must be a select" in pointers(error.value)[f"{base}/field"]

    unknown_key = copy.deepcopy(PIPELINE)
    unknown_key["x-xrm"]["state_machine"]["transitions"][0]["colour"] = "red"
    with pytest.raises(DefinitionInvalid) as error:
        parse_definition(unknown_key, known_entities=["account", "contact"])
    assert f"{base}/transitions/0/colour" in pointers(error.value)


def test_the_plugin_offers_a_transition_trigger_to_workflows() -> None:
    from xrm.plugins import get_plugin_manager

    triggers = {t.name: t for _, found in get_plugin_manager().each("xrm_workflow_triggers") for t in found or []}
    assert triggers["transition"].label["de"] == "Übergang ausgeführt"


# -- guards, at the one door -------------------------------------------------------------
TICKET = {
    "type": "object",
    "x-xrm": {
        "name": "ticket", "label": {"en": "Ticket"},
        "state_machine": {
            "field": "status", "initial": ["new", "open"],
            "transitions": [
                {"name": "start", "from": ["new", "open"], "to": "working", "roles": ["agent"]},
                {"name": "finish", "from": "working", "to": "done", "when": [{"field": "hours", "op": "gt", "value": 0},
                                                                           {"field": "kind", "op": "in", "value": ["bug", "task"]}]},
                {"name": "cancel", "from": "*", "to": "cancelled"},
            ],
            "required_in_state": {"done": ["resolution"]},
        },
    },
    "properties": {
        "title": {"type": "string"},
        "status": {"type": "string", "enum": ["new", "open", "working", "done", "cancelled"], "default": "new"},
        "kind": {"type": "string", "enum": ["bug", "task", "question"]},
        "hours": {"type": "number"},
        "resolution": {"type": "string"},
    },
}


async def test_role_and_field_guards_and_required_fields_at_the_one_door(db: Any, make_entities: Any) -> None:
    registry = await make_entities(TICKET)
    agent = Principal(__import__("uuid").uuid4(), "ada", frozenset({"agent"}))
    clerk = Principal(__import__("uuid").uuid4(), "carl", frozenset({"clerk"}))
    as_agent = RecordService(db, registry, "ticket", agent)
    as_clerk = RecordService(db, registry, "ticket", clerk)

    ticket = await as_clerk.create({"title": "Printer", "kind": "question"})
    assert ticket["status"] == "new"  # the default is the initial state
    with pytest.raises(ValidationFailed) as error:
        await as_clerk.create({"title": "Late", "status": "done"})
    assert "cannot start in 'done'; it starts in 'new' or 'open'" in pointers(error.value)["/status"]

    with pytest.raises(ValidationFailed) as error:  # role guard
        await as_clerk.update(ticket["id"], {"status": "working"})
    message = pointers(error.value)["/status"]
    assert "transition 'start' to 'working' is not allowed: needs the role agent" in message
    assert "possible from 'new': cancel (→ cancelled)" in message  # what the clerk may do instead
    ticket = await as_agent.update(ticket["id"], {"status": "working"})

    with pytest.raises(ValidationFailed) as error:  # field conditions: hours > 0 and kind in (bug, task)
        await as_agent.update(ticket["id"], {"status": "done", "resolution": "fixed"})
    assert "needs hours gt 0; needs kind in bug, task" in pointers(error.value)["/status"]
    with pytest.raises(ValidationFailed) as error:  # required in the target state, at the field's pointer
        await as_agent.update(ticket["id"], {"status": "done", "hours": 2, "kind": "bug"})
    assert pointers(error.value) == {"/resolution": "is required for transition 'finish' (to 'done')"}
    done = await as_clerk.update(ticket["id"], {"status": "done", "hours": 2, "kind": "bug", "resolution": "new toner"})
    assert done["status"] == "done"
    with pytest.raises(ValidationFailed) as error:  # staying in the state: its required fields stay filled
        await as_clerk.update(ticket["id"], {"resolution": None})
    assert pointers(error.value) == {"/resolution": "is required in state 'done'"}
    await as_clerk.update(ticket["id"], {"title": "Printer (2nd floor)"})  # other edits are fine

    with pytest.raises(ValidationFailed) as error:  # no transition leads there
        await as_agent.update(ticket["id"], {"status": "open"})
    assert "cannot change from 'done' to 'open': no transition leads there (possible from 'done': cancel (→ cancelled))" in pointers(error.value)["/status"]
    with pytest.raises(ValidationFailed) as error:
        await as_agent.update(ticket["id"], {"status": None})
    assert "cannot be emptied" in pointers(error.value)["/status"]
    assert (await as_agent.update(ticket["id"], {"status": "cancelled"}))["status"] == "cancelled"  # from "*"

    # The trail: one workflow.transition entry per transition taken, and an outbox event each.
    entries = [e for e in await as_agent.history(ticket["id"]) if e.action == "workflow.transition"]
    assert [(e.principal_name, e.details["transition"], e.details["from"], e.details["to"]) for e in entries] == [
        ("ada", "start", "new", "working"), ("carl", "finish", "working", "done"), ("ada", "cancel", "done", "cancelled")]
    async with db.connection() as connection:
        events = await connection.fetch("SELECT entity, record_id, principal_id, payload FROM xrm_sys.outbox "
                                        "WHERE topic = 'workflow.transition' ORDER BY id")
    assert [(e["entity"], e["record_id"], e["payload"]["transition"]) for e in events] == [
        ("ticket", ticket["id"], "start"), ("ticket", ticket["id"], "finish"), ("ticket", ticket["id"], "cancel")]
    assert events[1]["principal_id"] == clerk.id
    assert events[1]["payload"] == {"field": "status", "transition": "finish", "from": "working", "to": "done",
                                    "label": {}, "version": done["version"]}


async def test_a_refused_transition_writes_nothing_and_batches_name_the_record(db: Any, make_entities: Any) -> None:
    registry = await make_entities(TICKET)
    service = RecordService(db, registry, "ticket", Principal(__import__("uuid").uuid4(), "x", frozenset({"agent"})))
    with pytest.raises(ValidationFailed) as error:
        await service.create_many([{"title": "a"}, {"title": "b", "status": "working"}])
    assert list(pointers(error.value)) == ["/1/status"]
    assert await service.count() == 0
    async with db.connection() as connection:
        assert await connection.fetchval("SELECT count(*) FROM xrm_sys.outbox WHERE entity = 'ticket'") == 0


# -- the REST API --------------------------------------------------------------------------
def test_transitions_through_the_api_and_through_patch(api: Any) -> None:
    admin = apply_pipeline(api)
    created = ok(api.post("/api/v1/deal", headers=admin, json={"title": "Rollout"}), 201)
    deal = created["id"]
    assert created["stage"] == "prospecting"
    refused = problem(api.post("/api/v1/deal", headers=admin, json={"title": "Shortcut", "stage": "won"}), 422)
    assert refused["title"] == "Refused by a plugin" and refused["errors"][0]["pointer"] == "/stage"
    assert "starts in 'prospecting'" in refused["errors"][0]["detail"]

    listing = ok(api.get(f"/api/v1/deal/{deal}/transitions", headers=admin))
    assert listing["field"] == "stage" and listing["state"] == "prospecting" and listing["history"] == []
    assert {t["name"]: t["available"] for t in listing["transitions"]} == {"qualify": True, "lose": True}

    taken = api.post(f"/api/v1/deal/{deal}/transitions/qualify", headers={**admin, "If-Match": '"1"'})
    assert ok(taken)["stage"] == "qualification" and taken.headers["ETag"] == '"2"'

    invalid = problem(api.patch(f"/api/v1/deal/{deal}", headers=admin, json={"stage": "won"}), 422)
    assert invalid["errors"] == [{"pointer": "/stage", "detail": "cannot change from 'qualification' to 'won': no transition leads there "
                                                                "(possible from 'qualification': negotiate (→ negotiation), lose (→ lost))"}]
    missing = problem(api.post(f"/api/v1/deal/{deal}/transitions/negotiate", headers=admin), 422)
    assert missing["errors"] == [{"pointer": "/amount", "detail": "is required for transition 'negotiate' (to 'negotiation')"}]
    listing = ok(api.get(f"/api/v1/deal/{deal}/transitions", headers=admin))
    negotiate = next(t for t in listing["transitions"] if t["name"] == "negotiate")
    assert negotiate["available"] and negotiate["needs"] == ["amount"]  # send it with the transition
    ok(api.post(f"/api/v1/deal/{deal}/transitions/negotiate", headers=admin, json={"amount": {"amount": 5000, "currency": "EUR"}}))

    problem(api.post(f"/api/v1/deal/{deal}/transitions/qualify", headers=admin), 422)  # not from negotiation
    problem(api.post(f"/api/v1/deal/{deal}/transitions/fly", headers=admin), 404)
    problem(api.post(f"/api/v1/deal/{deal}/transitions/win", headers={**admin, "If-Match": '"2"'}), 409)
    sneaky = problem(api.post(f"/api/v1/deal/{deal}/transitions/win", headers=admin, json={"stage": "lost"}), 422)
    assert sneaky["errors"][0]["pointer"] == "/stage"
    problem(api.post(f"/api/v1/deal/{deal}/transitions/win", headers=admin, content=b"[1]"), 400)

    won = problem(api.patch(f"/api/v1/deal/{deal}", headers=admin, json={"stage": "won"}), 422)
    assert won["errors"] == [{"pointer": "/close_date", "detail": "is required for transition 'win' (to 'won')"}]
    ok(api.patch(f"/api/v1/deal/{deal}", headers=admin, json={"stage": "won", "close_date": "2025-03-31"}))  # PATCH takes "win"

    history = ok(api.get(f"/api/v1/deal/{deal}/transitions", headers=admin))["history"]
    assert [(h["action"], h["details"]["transition"], h["details"]["from"], h["details"]["to"]) for h in history] == [
        ("workflow.transition", "qualify", "prospecting", "qualification"),
        ("workflow.transition", "negotiate", "qualification", "negotiation"),
        ("workflow.transition", "win", "negotiation", "won"),
    ]
    assert ok(api.get(f"/api/v1/deal/{deal}/transitions", headers=admin))["transitions"] == []  # won is final
    audit = ok(api.get("/api/v1/admin/audit", headers=admin, params={"action": "workflow.transition"}))
    assert len(audit["entries"]) == 3

    plain = ok(api.post("/api/v1/account", headers=admin, json={"name": "ACME"}), 201)
    problem(api.get(f"/api/v1/account/{plain['id']}/transitions", headers=admin), 404)  # no state machine
    spec = ok(api.get("/api/openapi.json"))
    assert spec["paths"]["/api/v1/deal/{record_id}/transitions/{name}"]["post"]["parameters"][0]["name"] == "If-Match"
    assert "/api/v1/account/{record_id}/transitions" not in spec["paths"]


def test_role_guard_over_the_api_and_read_only_callers(api: Any) -> None:
    admin = apply_pipeline(api)
    security = api.app.state.platform.security()
    api.blocking_portal.call(security.create_role, "intern")
    for action in ("create", "read", "update"):
        api.blocking_portal.call(security.grant, "intern", "deal", action, "all")
    intern = bearer(api, "ida", ["intern"])
    deal = ok(api.post("/api/v1/deal", headers=intern, json={"title": "Small"}), 201)["id"]
    ok(api.post(f"/api/v1/deal/{deal}/transitions/lose", headers=intern))
    listing = ok(api.get(f"/api/v1/deal/{deal}/transitions", headers=intern))
    reopen = listing["transitions"][0]
    assert reopen["name"] == "reopen" and not reopen["available"]
    assert reopen["blocked"] == [{"kind": "role", "message": "needs the role sales or admin", "fields": []}]
    refused = problem(api.post(f"/api/v1/deal/{deal}/transitions/reopen", headers=intern), 422)
    assert "needs the role sales or admin" in refused["errors"][0]["detail"]
    assert "no transition is possible from 'lost' for you" in refused["errors"][0]["detail"]
    ok(api.post(f"/api/v1/deal/{deal}/transitions/reopen", headers=admin))


def test_bulk_and_import_obey_the_state_machine(api: Any) -> None:
    admin = apply_pipeline(api)
    deal = ok(api.post("/api/v1/deal", headers=admin, json={"title": "Bulk"}), 201)["id"]
    refused = problem(api.post("/api/v1/deal/_bulk", headers=admin, json={"records": [
        {"title": "New one"}, {"id": deal, "stage": "negotiation"}]}), 422)
    assert [e["pointer"] for e in refused["errors"]] == ["/records/1/stage"]
    ok(api.post("/api/v1/deal/_bulk", headers=admin, json={"records": [{"id": deal, "stage": "qualification"}]}))

    report = ok(api.post("/api/v1/deal/_import", headers={**admin, "Content-Type": "text/csv"},
                         content=b"title,stage\nFresh,prospecting\nHistoric,won\n"))
    assert report["created"] == 1 and report["skipped"] == 1
    assert "cannot start in 'won'" in report["errors"][0]["message"]


# -- the web UI ----------------------------------------------------------------------------
def _detail(ui: Any, deal: str) -> str:
    return ui.get(f"/e/deal/{deal}").text


def test_the_panel_offers_allowed_transitions_and_its_post_works(ui: Any, ui_admin: str) -> None:
    apply_pipeline(ui)
    created = ui.post("/e/deal/new", data={"csrf_token": ui_admin, "title": "Panel deal", "stage": "prospecting"}, follow_redirects=False)
    deal = created.headers["location"].rsplit("/", 1)[1]
    page = _detail(ui, deal)
    assert "<h2>Stage and transitions</h2>" in page and "Current state: <strong>Prospecting</strong>" in page
    buttons = set(re.findall(r'data-transition="(\w+)"', page))
    assert buttons == {"qualify", "lose"}  # only the transitions possible from prospecting
    action = f"/e/deal/{deal}/transitions/qualify"
    assert f'action="{action}"' in page

    forged = ui.post(action, data={"version": "1"}, follow_redirects=False)  # no CSRF token
    assert forged.status_code == 403
    assert "Prospecting</strong>" in _detail(ui, deal)
    taken = ui.post(action, data={"csrf_token": ui_admin, "version": "1"}, follow_redirects=False)
    assert taken.status_code == 303 and taken.headers["location"] == f"/e/deal/{deal}"
    page = _detail(ui, deal)
    assert "Current state: <strong>Qualification</strong>" in page
    assert re.search(r"admin · Qualify: Prospecting → Qualification", page)  # the history
    assert set(re.findall(r'data-transition="(\w+)"', page)) == {"negotiate", "lose"}
    assert 'id="sm-negotiate-amount"' in page  # negotiate needs the amount: a small form for it

    needs = ui.post(f"/e/deal/{deal}/transitions/negotiate", data={"csrf_token": ui_admin, "version": "2", "amount": ""})
    assert needs.status_code == 422 and "The transition was not taken" in needs.text and "field-error" in needs.text
    stale = ui.post(f"/e/deal/{deal}/transitions/negotiate", data={"csrf_token": ui_admin, "version": "1", "amount": "10"})
    assert stale.status_code == 409
    done = ui.post(f"/e/deal/{deal}/transitions/negotiate", data={"csrf_token": ui_admin, "version": "2", "amount": "1200",
                                                                  "amount__currency": "EUR"}, follow_redirects=False)
    assert done.status_code == 303
    page = _detail(ui, deal)
    assert "Negotiation</strong>" in page and set(re.findall(r'data-transition="(\w+)"', page)) == {"win", "lose"}
    form = ui.get(f"/e/deal/{deal}/transitions/win").text  # the page behind a transition that needs fields
    assert 'name="close_date"' in form and 'data-transition="win"' in form

    make_user(ui, "paula", ["service"])  # reads deals of the team, may not change them
    log_in(ui, "paula")
    assert ui.get(f"/e/deal/{deal}").status_code == 404  # not her team's deal: not even visible


def test_the_panel_speaks_german_and_explains_blocked_transitions(ui: Any, ui_admin: str) -> None:
    apply_pipeline(ui)
    security = ui.app.state.platform.security()
    ui.blocking_portal.call(security.create_role, "intern")
    for action in ("create", "read", "update"):
        ui.blocking_portal.call(security.grant, "intern", "deal", action, "all")
    make_user(ui, "ida", ["intern"])
    token = log_in(ui, "ida")
    ui.blocking_portal.call(_set_language, ui, "ida", "de")
    created = ui.post("/e/deal/new", data={"csrf_token": token, "title": "Verloren", "stage": "prospecting"}, follow_redirects=False)
    deal = created.headers["location"].rsplit("/", 1)[1]
    ok_lose = ui.post(f"/e/deal/{deal}/transitions/lose", data={"csrf_token": token, "version": "1"}, follow_redirects=False)
    assert ok_lose.status_code == 303
    page = _detail(ui, deal)
    assert "<h2>Phase und Übergänge</h2>" in page and "Aktueller Zustand: <strong>Verloren</strong>" in page
    assert "Von hier aus ist für Sie kein Übergang möglich." in page
    assert "Wieder öffnen → Akquise: braucht eine andere Rolle (sales or admin)" in page
    assert "Verloren: Akquise → Verloren" in page  # the history, in German labels


async def _set_language(ui: Any, user: str, language: str) -> None:
    async with ui.app.state.platform.db.connection() as connection:
        await connection.execute("UPDATE xrm_sys.app_user SET language = $2 WHERE name = $1", user, language)


def test_a_kanban_move_obeys_the_state_machine(ui: Any, ui_admin: str) -> None:
    apply_pipeline(ui)
    created = ui.post("/e/deal/new", data={"csrf_token": ui_admin, "title": "Card", "stage": "prospecting"}, follow_redirects=False)
    deal = created.headers["location"].rsplit("/", 1)[1]
    refused = ui.post(f"/e/deal/{deal}/move", headers={"HX-Request": "true"},
                      data={"csrf_token": ui_admin, "field": "stage", "value": "won", "version": "1"})
    assert refused.status_code == 422
    # The board names both states and the possible transitions by their labels (views_board explains the veto).
    assert "Not moved: there is no transition from Prospecting to Won." in refused.text
    assert "Possible from here: Qualify (→ Qualification), Lost (→ Lost)." in refused.text
    moved = ui.post(f"/e/deal/{deal}/move", data={"csrf_token": ui_admin, "field": "stage", "value": "qualification", "version": "1",
                                                  "board_query": ""}, follow_redirects=False)
    assert moved.status_code == 303
    assert "admin · Qualify: Prospecting → Qualification" in _detail(ui, deal)  # a move is a transition, in the trail
    edited = ui.post(f"/e/deal/{deal}/edit", data={"csrf_token": ui_admin, "version": "2", "title": "Card", "stage": "won"})
    assert edited.status_code == 422 and "cannot change from &#39;qualification&#39; to &#39;won&#39;" in edited.text  # the edit form too


# -- OpenAPI conformance of the transitions endpoints ---------------------------------------
@pytest.fixture(scope="module")
def pipeline_server(server_uri: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    import httpx

    with fresh_database(server_uri) as uri:
        token = create_token(uri, "admin", ["admin"])
        headers = {"Authorization": f"Bearer {token}"}
        with live_server(uri, tmp_path_factory.mktemp("statemachine")) as base_url:
            httpx.post(f"{base_url}/api/v1/meta/apply", headers=headers, json={"definitions": [PIPELINE]}).raise_for_status()
            for title in ("One", "Two"):
                httpx.post(f"{base_url}/api/v1/deal", headers=headers, json={"title": title}).raise_for_status()
            yield base_url, headers


def test_the_transitions_endpoints_conform_to_their_openapi(pipeline_server: tuple[str, dict[str, str]], subtests: Any) -> None:
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import positive_data_acceptance
    from schemathesis.config import SchemathesisConfig
    from schemathesis.generation import GenerationMode

    base_url, headers = pipeline_server
    token = headers["Authorization"].removeprefix("Bearer ")
    config = SchemathesisConfig.from_dict({"base-url": base_url, "auth": {"openapi": {"bearer": {"bearer": token}}}})
    schema = schemathesis.openapi.from_url(f"{base_url}/api/openapi.json", headers=headers, config=config)
    operations = [r.ok() for r in schema.get_all_operations() if "/transitions" in r.ok().path]
    assert len(operations) == 4  # the deal's pipeline and the CRM pack's ticket (plugin crm)
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            with subtests.test(msg=f"{operation.label} ({mode.value})"):

                @given(case=operation.as_strategy(generation_mode=mode))
                @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None, derandomize=True)
                def check(case: schemathesis.Case) -> None:
                    case.call_and_validate(excluded_checks=[positive_data_acceptance])

                check()
