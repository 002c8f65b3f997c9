"""Automations and the job queue (plugin xrm.builtins.automations), on a real database with real services.

Each trigger and each action; e-mail through a real SMTP server (aiosmtpd on a
free local port) and webhooks to a real local HTTP server checking the
signature; retries with backoff, dead jobs; a worker process killed with
SIGKILL mid-job, after which another worker completes the job exactly once;
the admin pages (admins only, CSRF) and the API.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import hashlib
import hmac
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from conftest import ROOT, bearer, log_in, make_user, ok, problem
from xrm.auth import UserService
from xrm.builtins.automations.engine import Worker
from xrm.db.database import Database
from xrm.plugins import WorkflowAction, WorkflowTrigger, get_plugin_manager, hookimpl
from xrm.registry import Registry
from xrm.runtime import Platform
from xrm.security.model import SecurityService
from xrm.security.policy import RolePolicy
from xrm.settings import Settings

LEAD: dict[str, Any] = {
    "type": "object",
    "x-xrm": {"name": "lead", "label": {"en": "Lead"}},
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "email": {"type": "string", "format": "email"},
        "status": {"type": "string", "enum": ["new", "contacted", "qualified"]},
        "score": {"type": "integer"},
        "last_contacted": {"type": "string", "format": "date"},
        "remind_at": {"type": "string", "format": "date-time"},
        "note": {"type": "string"},
    },
}
TASK: dict[str, Any] = {
    "type": "object",
    "x-xrm": {"name": "task", "label": {"en": "Task"}},
    "required": ["title"],
    "properties": {"title": {"type": "string"}, "lead": {"x-xrm": {"type": "reference", "references": "lead"}}},
}


def lead_with(*automations: dict[str, Any]) -> dict[str, Any]:
    return {**LEAD, "x-xrm": {**LEAD["x-xrm"], "automations": list(automations)}}


class Env:
    """A platform on the test database, users, and a worker with short lease and backoff."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.worker = Worker(platform, name="test-worker", lease_seconds=1, backoff_seconds=0.05, max_attempts=3, poll_seconds=0.05)

    @property
    def db(self) -> Database:
        return self.platform.db

    async def define(self, *documents: dict[str, Any]) -> None:
        await self.platform.schema.apply(list(documents))
        await self.platform.registry.load(self.db)

    async def records(self, entity: str, user: str = "boss") -> Any:
        principal = await self.platform.security().principal_for_user(user)
        from xrm.records.service import RecordService

        return RecordService(self.db, self.platform.registry, entity, principal, self.platform.policy)

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        async with self.db.connection() as connection:
            return await connection.fetch(sql, *args)

    async def fetchval(self, sql: str, *args: Any) -> Any:
        async with self.db.connection() as connection:
            return await connection.fetchval(sql, *args)

    async def jobs(self) -> list[dict[str, Any]]:
        return [dict(r) for r in await self.fetch("SELECT * FROM xrm_sys.job ORDER BY id")]


@pytest.fixture
async def env(db: Database, tmp_path: Path) -> AsyncIterator[Env]:
    settings = Settings(data_dir=tmp_path, database_url=db.admin_uri, schema_dir=tmp_path, secret_key=None)
    platform = Platform(settings, db, await Registry().load(db), await RolePolicy().load(db))
    users = UserService(db)
    await users.create_user("boss", "a-long-password", ["admin"])
    environment = Env(platform)
    await environment.define(LEAD, TASK)
    yield environment


# -- triggers -----------------------------------------------------------------------------
async def test_created_trigger_sets_fields_and_creates_a_related_task(env: Env) -> None:
    await env.define(lead_with({
        "name": "welcome", "run_as": "boss", "trigger": {"on": "created"},
        "actions": [{"type": "set_fields", "values": {"status": "new", "note": "Hello {{ record.name }}"}},
                    {"type": "create_related", "entity": "task", "values": {"title": "Call {{ record.name }}"}, "link_field": "lead"}],
    }), TASK)
    leads = await env.records("lead")
    lead = await leads.create({"name": "Ada"})
    await env.worker.run_until_idle()
    stored = await leads.get(lead["id"])
    assert stored["status"] == "new" and stored["note"] == "Hello Ada"
    tasks = (await (await env.records("task")).list()).records
    assert [(t["title"], str(t["lead"])) for t in tasks] == [("Call Ada", str(lead["id"]))]
    jobs = await env.jobs()
    assert [j["state"] for j in jobs] == ["done", "done"]
    event_id = await env.fetchval("SELECT id FROM xrm_sys.outbox WHERE topic = 'record.created' AND record_id = $1", lead["id"])
    assert [j["idempotency_key"] for j in jobs] == [f"{event_id}:def:lead:welcome:0", f"{event_id}:def:lead:welcome:1"]
    assert jobs[1]["result"]["created"] == str(tasks[0]["id"])
    # The writes are the run-as user's, through the one door: audited under their name.
    assert await env.fetchval("SELECT principal_name FROM xrm_sys.audit_log WHERE entity = 'task'") == "boss"
    await env.worker.run_until_idle()  # nothing runs twice
    assert len((await (await env.records("task")).list()).records) == 1


async def test_updated_trigger_with_changed_fields_and_a_condition(env: Env) -> None:
    await env.define(lead_with({
        "name": "hot", "run_as": "boss", "trigger": {"on": "updated", "changed": ["score"]},
        "condition": [{"field": "score", "op": "gte", "value": 80}],
        "actions": [{"type": "set_fields", "values": {"status": "qualified"}}],
    }))
    leads = await env.records("lead")
    lead = await leads.create({"name": "Bo", "score": 10})
    await leads.update(lead["id"], {"note": "no score change"})
    await leads.update(lead["id"], {"score": 50})
    await env.worker.run_until_idle()
    assert (await leads.get(lead["id"]))["status"] is None
    await leads.update(lead["id"], {"score": 90})
    await env.worker.run_until_idle()
    assert (await leads.get(lead["id"]))["status"] == "qualified"
    assert len(await env.jobs()) == 1


async def test_transition_trigger_runs_on_a_transition_taken_through_the_state_machine(env: Env) -> None:
    from xrm.builtins.statemachine import taking
    from xrm.errors import Veto

    machine = {"field": "status", "initial": "new", "transitions": [
        {"name": "contact", "from": "new", "to": "contacted", "label": {"en": "Contact", "de": "Kontaktieren"}},
        {"name": "qualify", "from": "contacted", "to": "qualified", "label": {"en": "Qualify", "de": "Qualifizieren"}},
        {"name": "fast_track", "from": "new", "to": "qualified", "label": {"en": "Fast track", "de": "Abkürzung"}, "roles": ["nobody"]}]}
    document = lead_with({
        "name": "on_qualify", "run_as": "boss", "trigger": {"on": "transition", "transition": "qualify", "to": "qualified"},
        "actions": [{"type": "create_related", "entity": "task", "values": {"title": "Send offer to {{ record.name }}"}, "link_field": "lead"}],
    })
    document["x-xrm"]["state_machine"] = machine
    await env.define(document, TASK)
    leads = await env.records("lead")
    lead = await leads.create({"name": "Cy", "status": "new"})
    with pytest.raises(Veto):  # guarded: boss lacks the role, nothing is taken
        with taking("lead", lead["id"], "fast_track"):
            await leads.update(lead["id"], {"status": "qualified"})
    for transition, to in (("contact", "contacted"), ("qualify", "qualified")):
        with taking("lead", lead["id"], transition):
            await leads.update(lead["id"], {"status": to})
    await env.worker.run_until_idle()
    assert [t["title"] for t in (await (await env.records("task")).list()).records] == ["Send offer to Cy"]
    taken = await env.fetch("SELECT id, payload FROM xrm_sys.outbox WHERE topic = 'workflow.transition' ORDER BY id")
    assert [e["payload"]["transition"] for e in taken] == ["contact", "qualify"]
    [job] = await env.jobs()
    assert job["state"] == "done" and job["idempotency_key"] == f"{taken[1]['id']}:def:lead:on_qualify:0"


class InboxPlugin:
    """Declares a workflow trigger fired by its own outbox events, as a mail-inbox plugin would."""

    @hookimpl
    def xrm_workflow_triggers(self) -> list[WorkflowTrigger]:
        def subject_matches(parameters: dict[str, Any], payload: dict[str, Any]) -> bool:
            return parameters.get("subject_contains", "").lower() in str(payload.get("subject", "")).lower()

        return [WorkflowTrigger(
            "inbound_email", {"en": "E-mail received", "de": "E-Mail eingegangen"}, "an e-mail from the record arrived",
            topics=["inbound_email.received"], match=subject_matches,
            parameters={"type": "object", "additionalProperties": False,
                        "properties": {"subject_contains": {"type": "string", "minLength": 1}}},
        )]


@pytest.fixture
def inbox_plugin() -> Iterator[None]:
    manager = get_plugin_manager()
    manager.register(InboxPlugin(), name="inbox-test-plugin")
    try:
        yield
    finally:
        manager.unregister(name="inbox-test-plugin")


async def test_a_plugin_trigger_fired_by_its_outbox_event_runs_the_automation_once(env: Env, inbox_plugin: None) -> None:
    await env.define(lead_with({
        "name": "on_offer_mail", "run_as": "boss", "trigger": {"on": "inbound_email", "subject_contains": "offer"},
        "actions": [{"type": "create_related", "entity": "task", "values": {"title": "Answer {{ record.name }}: {{ event.payload.subject }}"},
                     "link_field": "lead"}],
    }), TASK)
    lead = await (await env.records("lead")).create({"name": "Kim"})
    other = await (await env.records("lead")).create({"name": "Lou"})
    boss = await env.platform.security().principal_for_user("boss")
    fired = await env.platform.emit("inbound_email.received", {"subject": "Your OFFER, please"}, entity="lead", record_id=lead["id"],
                                    principal=boss)
    await env.platform.emit("inbound_email.received", {"subject": "Hello"}, entity="lead", record_id=other["id"])  # no match
    await env.platform.emit("inbound_email.sent", {"subject": "offer"}, entity="lead", record_id=other["id"])  # another topic
    await env.worker.run_until_idle()
    await env.worker.run_until_idle()
    tasks = (await (await env.records("task")).list()).records
    assert [(t["title"], str(t["lead"])) for t in tasks] == [("Answer Kim: Your OFFER, please", str(lead["id"]))]
    [job] = await env.jobs()  # the same queue, key and log as the built-in triggers
    assert job["state"] == "done" and job["idempotency_key"] == f"{fired}:def:lead:on_offer_mail:0"
    assert job["payload"]["event"]["topic"] == "inbound_email.received"


async def test_a_plugin_triggers_parameters_are_checked_and_unknown_triggers_refused(env: Env, inbox_plugin: None) -> None:
    from xrm.builtins.automations.store import AutomationStore
    from xrm.errors import ValidationFailed

    store = AutomationStore(env.platform, await env.platform.security().principal_for_user("boss"))
    body = {"name": "mail", "entity": "lead", "run_as": "boss", "actions": [{"type": "set_fields", "values": {"note": "mail"}}]}
    for trigger, expected in (
        ({"on": "inbound_email", "subject_contains": 5}, ("/trigger/subject_contains", "5 is not of type 'string'")),
        ({"on": "inbound_email", "sender": "x"}, ("/trigger/sender", "does not apply to the trigger 'inbound_email'")),
        ({"on": "inbound_mail"}, ("/trigger/on", "unknown trigger 'inbound_mail'; known: created, date, inbound_email, ")),
    ):
        with pytest.raises(ValidationFailed) as error:
            await store.create({**body, "trigger": trigger})
        [(pointer, message)] = [(p.pointer, p.message) for p in error.value.problems]
        assert pointer == expected[0] and message.startswith(expected[1]), message
    await store.create({**body, "trigger": {"on": "inbound_email"}})
    with pytest.raises(ValidationFailed):  # bad topics are refused before anything is written
        await env.platform.emit("Inbound Email", {})
    assert await env.fetchval("SELECT count(*) FROM xrm_sys.outbox WHERE topic ILIKE 'inbound%'") == 0


def test_a_trigger_declared_twice_or_with_a_broken_parameter_schema_is_a_plugin_error() -> None:
    from xrm.plugins import PluginError, PluginManager

    class Declaring:
        def __init__(self, name: str, parameters: dict[str, Any]) -> None:
            self.trigger = WorkflowTrigger(name, {"en": name, "de": name}, topics=["x.happened"], parameters=parameters)

        @hookimpl
        def xrm_workflow_triggers(self) -> list[WorkflowTrigger]:
            return [self.trigger]

    manager = PluginManager()
    manager.register(Declaring("inbound_email", {}), name="first")
    manager.register(Declaring("inbound_email", {}), name="second")
    with pytest.raises(PluginError, match="'inbound_email' is declared by two plugins: 'first' and 'second'"):
        manager.workflow_triggers()
    manager = PluginManager()
    manager.register(Declaring("odd", {"type": "nope"}), name="odd-plugin")
    with pytest.raises(PluginError, match="plugin 'odd-plugin': workflow trigger 'odd' has parameters that are not a JSON Schema"):
        manager.workflow_triggers()


async def test_date_reached_trigger(env: Env) -> None:
    await env.define(lead_with({
        "name": "remind", "run_as": "boss", "trigger": {"on": "date", "field": "remind_at", "offset_minutes": 0},
        "actions": [{"type": "set_fields", "values": {"note": "reminder due"}}],
    }))
    leads = await env.records("lead")
    now = dt.datetime.now(dt.timezone.utc)
    due = await leads.create({"name": "Due", "remind_at": (now - dt.timedelta(minutes=5)).isoformat()})
    later = await leads.create({"name": "Later", "remind_at": (now + dt.timedelta(seconds=1)).isoformat()})
    never = await leads.create({"name": "Far", "remind_at": (now + dt.timedelta(days=3)).isoformat()})
    await env.worker.run_until_idle()
    assert (await leads.get(due["id"]))["note"] == "reminder due"
    assert (await leads.get(later["id"]))["note"] is None
    await asyncio.sleep(1.2)
    await env.worker.run_until_idle()
    assert (await leads.get(later["id"]))["note"] == "reminder due"
    assert (await leads.get(never["id"]))["note"] is None
    await env.worker.run_until_idle()
    assert len([j for j in await env.jobs() if j["state"] == "done"]) == 2  # once per record and date


async def test_schedule_trigger_finds_leads_not_contacted_for_a_week(env: Env) -> None:
    await env.define(lead_with({
        "name": "stale", "run_as": "boss", "trigger": {"on": "schedule", "every_minutes": 60},
        "condition": [{"field": "last_contacted", "op": "lt", "value": "today-7d"}],
        "actions": [{"type": "create_related", "entity": "task", "values": {"title": "Contact {{ record.name }} again"}, "link_field": "lead"}],
    }), TASK)
    leads = await env.records("lead")
    today = dt.date.today()
    await leads.create({"name": "Old", "last_contacted": (today - dt.timedelta(days=10)).isoformat()})
    await leads.create({"name": "Recent", "last_contacted": (today - dt.timedelta(days=2)).isoformat()})
    await env.worker.run_until_idle()
    await env.worker.run_until_idle()  # the same slot does not run again
    assert [t["title"] for t in (await (await env.records("task")).list()).records] == ["Contact Old again"]


# -- actions ------------------------------------------------------------------------------
async def test_assign_owner_round_robin_over_three_members(env: Env) -> None:
    users = UserService(env.db)
    security = SecurityService(env.db, env.platform.policy, env.platform.registry)
    await security.create_team("Sales")
    for name in ("carla", "anna", "bert"):
        await users.create_user(name, "a-long-password", ["sales"])
        await security.add_member("Sales", name)
    await env.define(lead_with({"name": "spread", "run_as": "boss", "trigger": {"on": "created"},
                                "actions": [{"type": "assign_owner", "team": "Sales"}]}))
    leads = await env.records("lead")
    created = [await leads.create({"name": f"Lead {i}"}) for i in range(4)]
    await env.worker.run_until_idle()
    owners = {r["id"]: r["name"] for r in await env.fetch("SELECT id, name FROM xrm_sys.app_user")}
    assigned = [owners[(await leads.get(lead["id"]))["owner_id"]] for lead in created]
    assert assigned == ["anna", "bert", "carla", "anna"]


class Mailbox:
    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's name
        self.messages.append(envelope)
        return "250 OK"


@pytest.fixture
def smtp_server() -> Iterator[tuple[int, Mailbox]]:
    from aiosmtpd.controller import Controller

    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    mailbox = Mailbox()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, mailbox
    finally:
        controller.stop()


async def test_send_email_through_a_real_smtp_server(env: Env, smtp_server: tuple[int, Mailbox]) -> None:
    port, mailbox = smtp_server
    env.platform.settings = Settings(data_dir=env.platform.settings.data_dir, database_url=None, schema_dir=env.platform.settings.schema_dir,
                                     secret_key=None, smtp_host="127.0.0.1", smtp_port=port, smtp_from="crm@example.org")
    await env.define(lead_with({"name": "mail", "run_as": "boss", "trigger": {"on": "created"},
                                "actions": [{"type": "send_email", "to": "{{ record.email }}", "subject": "Welcome, {{ record.name }}",
                                             "body": "Dear {{ record.name }},\nthanks for your interest."}]}))
    await (await env.records("lead")).create({"name": "Dora", "email": "dora@example.com"})
    await env.worker.run_until_idle()
    assert len(mailbox.messages) == 1
    envelope = mailbox.messages[0]
    assert envelope.rcpt_tos == ["dora@example.com"] and envelope.mail_from == "crm@example.org"
    text = envelope.content.decode()
    mail_id = await env.fetchval("SELECT id FROM xrm_sys.mail_outbox")
    assert "Subject: Welcome, Dora" in text and "Dear Dora," in text and f"Message-ID: <{mail_id}@xrm>" in text
    assert await env.fetchval("SELECT state FROM xrm_sys.mail_outbox") == "sent"
    assert [(j["kind"], j["state"]) for j in await env.jobs()] == [("action", "done"), ("mail.send", "done")]


class Receiver:
    """A real local HTTP server recording webhook calls; answers the given statuses in turn, then 200."""

    def __init__(self, statuses: list[int]) -> None:
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.statuses = statuses
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.calls.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                self.send_response(status)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver([])
    yield found
    found.close()


async def test_webhook_is_signed_and_retried_with_backoff(env: Env, receiver: Receiver) -> None:
    receiver.statuses[:] = [500, 503]
    await env.define(lead_with({"name": "notify", "run_as": "boss", "trigger": {"on": "created"},
                                "actions": [{"type": "webhook", "url": receiver.url, "max_attempts": 4}]}))
    lead = await (await env.records("lead")).create({"name": "Eve"})
    await env.worker.run_until_idle()
    [job] = await env.jobs()
    assert job["state"] == "failed" and job["attempts"] == 1 and "HTTP 500" in job["last_error"]
    assert job["run_after"] > job["started_at"]  # backoff
    for _ in range(100):
        await env.worker.run_until_idle()
        [job] = await env.jobs()
        if job["state"] == "done":
            break
        await asyncio.sleep(0.03)
    assert job["state"] == "done" and job["attempts"] == 3 and job["result"] == {"status": 200}
    assert len(receiver.calls) == 3
    secret = await env.fetchval("SELECT secret FROM xrm_sys.automation_state WHERE key = 'def:lead:notify'")
    for headers, body in receiver.calls:
        expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        assert headers["x-xrm-signature"] == f"sha256={expected}"
        assert headers["x-xrm-idempotency-key"] == job["idempotency_key"]  # the same on every attempt
    payload = json.loads(receiver.calls[-1][1])
    assert payload["record"]["id"] == str(lead["id"]) and payload["record"]["name"] == "Eve"


async def test_a_webhook_carries_no_sensitive_value_its_run_as_user_may_not_read(env: Env, receiver: Receiver) -> None:
    """The outbox event holds every field; what leaves through the webhook is what the run-as user may read."""
    security = SecurityService(env.db, env.platform.policy, env.platform.registry)
    await security.create_role("lead_reader")
    await security.grant("lead_reader", "lead", "read", "all")
    await UserService(env.db).create_user("clerk", "a-long-password", ["lead_reader"])
    secret_lead = {**LEAD, "properties": {**LEAD["properties"], "salary": {"type": "integer", "x-xrm": {"sensitive": True}}}}
    hooks = [{"name": "out", "run_as": "clerk", "trigger": {"on": "created"}, "actions": [{"type": "webhook", "url": receiver.url}]},
             {"name": "out2", "run_as": "clerk", "trigger": {"on": "updated"}, "actions": [{"type": "webhook", "url": receiver.url}]}]
    await env.define({**secret_lead, "x-xrm": {**LEAD["x-xrm"], "automations": hooks}})
    env.platform.registry = await Registry().load(env.db)
    await env.platform.policy.load(env.db)
    leads = await env.records("lead")
    lead = await leads.create({"name": "Ina", "salary": 123456})
    await leads.update(lead["id"], {"salary": 654321, "note": "raise"})
    await env.worker.run_until_idle()
    assert len(receiver.calls) == 2
    for _, body in receiver.calls:
        sent = json.loads(body)
        assert "123456" not in body.decode() and "654321" not in body.decode(), sent
        assert sent["record"]["name"] == "Ina" and "salary" not in sent["record"]
    updated = json.loads(receiver.calls[1][1])
    assert updated["event"]["payload"]["changes"]["note"] == {"old": None, "new": "raise"}


async def test_a_job_is_dead_after_max_attempts_and_an_admin_may_retry_it(env: Env, receiver: Receiver) -> None:
    receiver.statuses[:] = [500] * 10
    await env.define(lead_with({"name": "broken", "run_as": "boss", "trigger": {"on": "created"},
                                "actions": [{"type": "webhook", "url": receiver.url}]}))
    await (await env.records("lead")).create({"name": "Fay"})
    for _ in range(100):
        await env.worker.run_until_idle()
        [job] = await env.jobs()
        if job["state"] == "dead":
            break
        await asyncio.sleep(0.03)
    assert job["state"] == "dead" and job["attempts"] == 3 and "HTTP 500" in job["last_error"]
    assert len(receiver.calls) == 3
    from xrm.builtins.automations.store import AutomationStore

    store = AutomationStore(env.platform, await env.platform.security().principal_for_user("boss"))
    receiver.statuses[:] = []
    await store.retry(job["id"])
    await env.worker.run_until_idle()
    [job] = await env.jobs()
    assert job["state"] == "done" and job["attempts"] == 1


class MaskPlugin:
    """Uses the IBAN plugin's kind of action: a plugin's workflow action runs like a built-in one, held to its declaration."""

    @hookimpl
    def xrm_capabilities(self) -> dict[str, Any]:
        return {"reads": ["lead"], "writes": [], "network": False}

    @hookimpl
    def xrm_workflow_actions(self) -> list[WorkflowAction]:
        def shout(record: dict[str, Any], parameters: dict[str, Any], principal: Any) -> dict[str, Any]:
            return {"text": f"{record['name'].upper()}{parameters.get('suffix', '')}", "by": principal.name}

        return [WorkflowAction("shout", {"en": "Shout", "de": "Rufen"}, shout)]


async def test_a_plugin_action_runs_with_the_declared_principal_and_scope(env: Env) -> None:
    manager = get_plugin_manager()
    manager.register(MaskPlugin(), name="shout-test-plugin")
    try:
        await env.define(lead_with(
            {"name": "shout", "run_as": "boss", "trigger": {"on": "created"}, "actions": [{"type": "shout", "parameters": {"suffix": "!"}}]},
            {"name": "shout_save", "run_as": "boss", "trigger": {"on": "updated"},
             "actions": [{"type": "shout", "save": {"text": "note"}}]},
        ), TASK)
        leads = await env.records("lead")
        lead = await leads.create({"name": "gil"})
        await env.worker.run_until_idle()
        [job] = await env.jobs()
        assert job["state"] == "done" and job["result"] == {"text": "GIL!", "by": "boss"}
        await leads.update(lead["id"], {"score": 1})
        await env.worker.run_until_idle()
        # Saving the result would write a lead: the plugin declared it writes nothing, so the job fails.
        failed = (await env.jobs())[-1]
        assert failed["state"] == "failed" and "did not declare that it writes lead" in failed["last_error"]
        assert (await leads.get(lead["id"]))["note"] is None
    finally:
        manager.unregister(name="shout-test-plugin")


async def test_the_iban_plugins_action_is_refused_a_record_it_did_not_declare(env: Env) -> None:
    """plugins/xrm_iban declares it reads bank_account only: its mask_iban may not get a lead."""
    sys.path.insert(0, str(ROOT / "plugins" / "xrm_iban"))
    manager = get_plugin_manager()
    registered = manager.get_plugin("iban") is None
    try:
        import xrm_iban

        if registered:
            manager.register(xrm_iban, name="iban")
        await env.define(lead_with({"name": "mask", "run_as": "boss", "trigger": {"on": "created"},
                                    "actions": [{"type": "mask_iban", "parameters": {"field": "name"}}]}))
        await (await env.records("lead")).create({"name": "DE89370400440532013000"})
        await env.worker.run_until_idle()
        [job] = await env.jobs()
        assert job["state"] == "failed" and "'iban' declared it reads bank_account" in job["last_error"]
    finally:
        if registered:
            manager.unregister(name="iban")
        sys.path.remove(str(ROOT / "plugins" / "xrm_iban"))


async def test_actions_run_as_the_declared_user_with_their_permissions(env: Env) -> None:
    await UserService(env.db).create_user("reader", "a-long-password", ["service"])
    await env.define(lead_with({"name": "sneaky", "run_as": "reader", "trigger": {"on": "created"},
                                "actions": [{"type": "set_fields", "values": {"note": "changed"}}]},
                               {"name": "ghost", "run_as": "nobody", "trigger": {"on": "created"},
                                "actions": [{"type": "set_fields", "values": {"note": "changed"}}]}))
    lead = await (await env.records("lead")).create({"name": "Hal"})
    await env.worker.run_until_idle()
    errors = sorted(j["last_error"] for j in await env.jobs())
    assert "no such user" in errors[1] and "None of your roles allows read on lead" in errors[0]
    assert (await (await env.records("lead")).get(lead["id"]))["note"] is None


async def test_an_automation_run_as_the_owner_acts_with_each_owners_rights(env: Env) -> None:
    security = env.platform.security()
    await security.create_role("lead_owner")
    for action in ("create", "read", "update"):
        await security.grant("lead_owner", "lead", action, "own")
    await UserService(env.db).create_user("ann", "a-long-password", ["lead_owner"])
    await UserService(env.db).create_user("viewer", "a-long-password", ["service"])
    await env.platform.policy.load(env.db)
    await env.define(lead_with({"name": "mine", "run_as": "@owner", "trigger": {"on": "created"},
                                "actions": [{"type": "set_fields", "values": {"note": "hello {{ user.name }}"}}]}))
    ann_lead = await (await env.records("lead", "ann")).create({"name": "Ann's"})
    boss_lead = await (await env.records("lead")).create({"name": "Boss's"})
    viewers = await (await env.records("lead")).create({"name": "Viewer's"})
    await security.assign("lead", viewers["id"], user="viewer")  # before the dispatcher runs: the owner as it is then
    await env.worker.run_until_idle()
    leads = await env.records("lead")
    assert (await leads.get(ann_lead["id"]))["note"] == "hello ann" and (await leads.get(boss_lead["id"]))["note"] == "hello boss"
    assert await env.fetchval("SELECT principal_name FROM xrm_sys.audit_log WHERE record_id = $1 AND action = 'record.updated'",
                              ann_lead["id"]) == "ann"
    # An owner whose role may not read the record gets a failed job, not the record.
    failed = [j for j in await env.jobs() if j["payload"]["run_as"] == "viewer"]
    assert [j["state"] for j in failed] == ["failed"] and "None of your roles allows read on lead" in failed[0]["last_error"]
    assert (await leads.get(viewers["id"]))["note"] is None
    from xrm.builtins.automations.store import AutomationStore

    store = AutomationStore(env.platform, await env.platform.security().principal_for_user("boss"))
    created = await store.create({"name": "mine2", "entity": "lead", "run_as": "@owner", "trigger": {"on": "created"},
                                  "actions": [{"type": "notify", "title": "New lead {{ record.name }}"}]})
    assert created["run_as"] == "@owner"


# -- crash recovery -----------------------------------------------------------------------
WORKER_SCRIPT = textwrap.dedent("""
    import asyncio, os, sys, time
    from pathlib import Path
    from xrm.plugins import WorkflowAction, WorkflowTrigger, get_plugin_manager, hookimpl

    class Slow:
        @hookimpl
        def xrm_capabilities(self):
            return {"reads": ["lead"], "writes": ["task"]}

        @hookimpl
        def xrm_workflow_actions(self):
            async def create_then_block(record, records):
                created = await records("task").create({"title": "Follow up " + record["name"], "lead": str(record["id"])})
                marker = os.environ.get("XRM_TEST_BLOCK")
                if marker:
                    Path(marker).write_text(str(created["id"]))
                    await asyncio.sleep(120)  # killed here, inside the job's transaction
                return {"task": str(created["id"])}
            return [WorkflowAction("create_then_block", {"en": "x", "de": "x"}, create_then_block)]

    get_plugin_manager().register(Slow(), name="slow-test-plugin")
    from xrm.cli import main
    main(["worker", "--poll", "0.05", "--lease", "1", "--backoff", "0.05", "--name", sys.argv[1]])
""")


async def test_a_killed_worker_loses_no_job_and_the_job_completes_exactly_once(env: Env, tmp_path: Path) -> None:
    await env.define(lead_with({"name": "follow", "run_as": "boss", "trigger": {"on": "created"},
                                "actions": [{"type": "create_then_block"}]}), TASK)
    lead = await (await env.records("lead")).create({"name": "Ivy"})
    marker = tmp_path / "started"
    process_env = {**os.environ, "XRM_DATABASE_URL": env.db.admin_uri, "XRM_DATA_DIR": str(tmp_path), "XRM_TEST_BLOCK": str(marker),
                   "XRM_SCHEMA_DIR": str(tmp_path)}
    process = subprocess.Popen([sys.executable, "-c", WORKER_SCRIPT, "doomed"], env=process_env, cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while not marker.exists():
            assert process.poll() is None, process.stdout.read().decode()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the worker did not start the job"
            await asyncio.sleep(0.05)
        [job] = await env.jobs()
        assert job["state"] == "running" and job["locked_by"] == "doomed" and job["attempts"] == 1
        os.kill(process.pid, signal.SIGKILL)  # mid-job: the task is written but not committed
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        process.stdout.close()  # type: ignore[union-attr]
    assert await env.fetchval("SELECT count(*) FROM task") == 0  # nothing of the killed attempt remains
    # Another worker (with the same plugin, in this process) takes the job over once the lease has expired.
    manager = get_plugin_manager()

    class Fast:
        @hookimpl
        def xrm_capabilities(self) -> dict[str, Any]:
            return {"reads": ["lead"], "writes": ["task"]}

        @hookimpl
        def xrm_workflow_actions(self) -> list[WorkflowAction]:
            async def create_then_block(record: dict[str, Any], records: Any) -> dict[str, Any]:
                created = await records("task").create({"title": "Follow up " + record["name"], "lead": str(record["id"])})
                return {"task": str(created["id"])}

            return [WorkflowAction("create_then_block", {"en": "x", "de": "x"}, create_then_block)]

    manager.register(Fast(), name="fast-test-plugin")
    try:
        await env.worker.run_until_idle()
        assert (await env.jobs())[0]["state"] == "running"  # the lease has not expired yet
        await asyncio.sleep(1.1)
        await env.worker.run_until_idle()
        await env.worker.run_until_idle()
    finally:
        manager.unregister(name="fast-test-plugin")
    [job] = await env.jobs()
    assert job["state"] == "done" and job["attempts"] == 2 and job["locked_by"] is None
    tasks = await env.fetch("SELECT id, title, lead FROM task")
    assert [(t["title"], t["lead"]) for t in tasks] == [("Follow up Ivy", lead["id"])]
    assert job["result"] == {"task": str(tasks[0]["id"])}
    event_id = await env.fetchval("SELECT id FROM xrm_sys.outbox WHERE topic = 'record.created' AND entity = 'lead'")
    assert job["idempotency_key"] == f"{event_id}:def:lead:follow:0"


async def test_a_late_committing_transaction_is_not_skipped(env: Env) -> None:
    await env.define(lead_with({"name": "late", "run_as": "boss", "trigger": {"on": "created"},
                                "actions": [{"type": "set_fields", "values": {"note": "seen"}}]}))
    leads = await env.records("lead")
    started = asyncio.Event()
    release = asyncio.Event()

    async def slow_create() -> Any:
        async with env.db.transaction():
            created = await leads.create({"name": "Slow"})  # outbox id taken now, committed later
            started.set()
            await release.wait()
        return created

    task = asyncio.create_task(slow_create())
    await started.wait()
    fast = await leads.create({"name": "Fast"})
    await env.worker.run_until_idle()  # sees Fast's event only once Slow's transaction is over
    release.set()
    slow = await task
    await env.worker.run_until_idle()
    assert (await leads.get(fast["id"]))["note"] == "seen" and (await leads.get(slow["id"]))["note"] == "seen"


# -- definitions, admin API and pages -----------------------------------------------------
def test_the_definition_keyword_is_checked() -> None:
    from xrm.errors import DefinitionInvalid
    from xrm.schema.definition import parse_definition

    with pytest.raises(DefinitionInvalid) as error:
        parse_definition(lead_with({"name": "bad", "run_as": "boss", "trigger": {"on": "date", "field": "name"},
                                    "actions": [{"type": "set_fields", "values": {"nope": 1}}]}))
    assert {(p.pointer, p.message) for p in error.value.problems} == {
        ("/x-xrm/automations/0/trigger/field", "'name' is not a date or datetime field"),
        ("/x-xrm/automations/0/actions/0/values/nope", "'nope' is not a field of lead"),
    }


def test_admin_api_for_automations_and_jobs(api: Any) -> None:
    headers = bearer(api, "root", ["admin"])
    body = {"name": "tag_accounts", "entity": "account", "run_as": "root", "trigger": {"on": "created"},
            "actions": [{"type": "set_fields", "values": {"name": "{{ record.name }} (new)"}}]}
    created = ok(api.post("/api/v1/admin/automations", headers=headers, json=body), 201)
    assert created["key"] == "db:tag_accounts" and created["enabled"] is True
    wrong = problem(api.post("/api/v1/admin/automations", headers=headers, json={**body, "name": "x2", "run_as": "ghost",
                                                                                    "trigger": {"on": "date", "field": "name"}}), 422)
    assert any(e["pointer"] == "/trigger/field" for e in wrong["errors"])
    account = ok(api.post("/api/v1/account", headers=headers, json={"name": "ACME"}), 201)
    platform = api.app.state.platform
    api.blocking_portal.call(Worker(platform, poll_seconds=0.05).run_until_idle)
    assert ok(api.get(f"/api/v1/account/{account['id']}", headers=headers))["name"] == "ACME (new)"
    jobs = ok(api.get("/api/v1/admin/jobs?automation=tag_accounts", headers=headers))["jobs"]
    assert [j["state"] for j in jobs] == ["done"]
    assert ok(api.get("/api/v1/admin/automations/tag_accounts", headers=headers))["secret"]
    ok(api.put("/api/v1/admin/automations/tag_accounts", headers=headers, json={**body, "enabled": False}))
    assert ok(api.get("/api/v1/admin/automations", headers=headers))["automations"][0]["enabled"] is False
    user = bearer(api, "clerk", ["sales"])
    problem(api.get("/api/v1/admin/jobs", headers=user), 403)
    problem(api.post(f"/api/v1/admin/jobs/{jobs[0]['id']}/retry", headers=headers), 422)  # done: nothing to retry
    ok(api.delete("/api/v1/admin/automations/tag_accounts", headers=headers))
    problem(api.get("/api/v1/admin/automations/tag_accounts", headers=headers), 404)
    assert "/api/v1/admin/automations/{name}" in ok(api.get("/api/openapi.json"))["paths"]


def test_admin_pages_create_and_toggle_automations_and_show_the_job_log(ui: Any, ui_admin: str) -> None:
    home = ui.get("/").text
    assert 'href="/admin/automations"' in home
    page = ui.get("/admin/automations")
    assert page.status_code == 200 and "New automation" in page.text
    form = {"name": "welcome", "entity": "account", "run_as": "admin", "trigger": '{"on": "created"}', "condition": "[]",
            "actions": '[{"type": "set_fields", "values": {"website": "https://example.org"}}]', "enabled": "on"}
    refused = ui.post("/admin/automations/create", data={**form, "csrf_token": "wrong"})
    assert refused.status_code == 403
    bad = ui.post("/admin/automations/create", data={**form, "csrf_token": ui_admin, "actions": "[{"})
    assert bad.status_code == 422 and "is not valid JSON" in bad.text
    created = ui.post("/admin/automations/create", data={**form, "csrf_token": ui_admin})
    assert created.status_code == 200 and "Automation welcome created." in created.text
    toggled = ui.post("/admin/automations/toggle", data={"csrf_token": ui_admin, "name": "welcome", "enabled": "false"})
    assert "Automation welcome disabled." in toggled.text
    log = ui.get("/admin/jobs?state=dead")
    assert log.status_code == 200 and "No jobs." in log.text
    ui.post("/language", data={"csrf_token": ui_admin, "language": "de", "next": "/"})
    assert "Auftragsprotokoll" in ui.get("/admin/jobs").text
    make_user(ui, "clerk", ["sales"])
    ui.cookies.clear()
    log_in(ui, "clerk")
    assert ui.get("/admin/automations").status_code == 403
    assert 'href="/admin/automations"' not in ui.get("/").text


# -- the CRM pack's activity reminders (plugins/builtins/crm/definitions/activity.json) -------------
@pytest.fixture
async def crm_env(db: Database, tmp_path: Path, smtp_server: tuple[int, Mailbox]) -> AsyncIterator[Env]:
    """The shipped entities and the CRM pack as `xrm serve` applies them, with mail to a real SMTP server."""
    from xrm.builtins.crm import DEFINITIONS
    from xrm.schema.files import load_documents

    settings = Settings(data_dir=tmp_path, database_url=db.admin_uri, schema_dir=tmp_path, secret_key=None,
                        smtp_host="127.0.0.1", smtp_port=smtp_server[0], smtp_from="crm@example.org")
    platform = Platform(settings, db, await Registry().load(db), await RolePolicy().load(db))
    await UserService(db).create_user("boss", "a-long-password", ["admin"])
    environment = Env(platform)
    await environment.define(*[document for _, document in load_documents(ROOT / "entity_schemas")], *DEFINITIONS)
    yield environment


async def test_an_activity_reminds_its_owner_once_at_the_reminder_time(crm_env: Env, smtp_server: tuple[int, Mailbox]) -> None:
    env, (_, mailbox) = crm_env, smtp_server
    security = env.platform.security()
    await security.create_role("planner")
    await security.grant("planner", "activity", "read", "team")
    users = UserService(env.db)
    for name, language in (("alice", "de"), ("bob", "en"), ("carol", "en"), ("dan", None)):
        await users.create_user(name, "a-long-password", ["planner"], email=f"{name}@example.org")
        if language:
            async with env.db.connection() as connection:
                await connection.execute("UPDATE xrm_sys.app_user SET language = $2 WHERE name = $1", name, language)
    await security.create_team("Support")
    for name in ("carol", "dan"):
        await security.add_member("Support", name)
    await env.platform.policy.load(env.db)
    activities = await env.records("activity")
    now = dt.datetime.now(dt.timezone.utc)

    async def activity(subject: str, reminder: dt.datetime, *, user: str | None = None, team: str | None = None,
                       done: bool = False) -> dict[str, Any]:
        created = await activities.create({"kind": "call", "subject": subject, "reminder": reminder.isoformat(), "done": done})
        await security.assign("activity", created["id"], user=user, team=team)
        return created

    # Seconds ahead, with room for a slow machine: the first dispatch must come before the reminder time.
    at = now + dt.timedelta(seconds=4)
    soon = await activity("Call Müller", at, user="alice")
    await activity("Already done", now - dt.timedelta(minutes=1), user="bob", done=True)
    await activity("Team call", now - dt.timedelta(minutes=1), team="Support")
    tomorrow = await activity("Tomorrow", now + dt.timedelta(days=1), user="bob")
    finished_in_time = await activity("Done before the reminder", at, user="bob")
    await activities.update(finished_in_time["id"], {"done": True})

    async def until(moment: dt.datetime) -> None:
        await asyncio.sleep(max(0.0, (moment - dt.datetime.now(dt.timezone.utc)).total_seconds()) + 0.3)

    def sent() -> list[tuple[list[str], str]]:
        """(recipients, "Subject: ...\n" + body) of each mail received, decoded."""
        parsed = [(m.rcpt_tos, email.message_from_bytes(m.content, policy=email.policy.default)) for m in mailbox.messages]
        return [(to, f"Subject: {message['subject']}\n{message.get_content()}") for to, message in parsed]

    await env.worker.run_until_idle()
    # Due already: each member of the owning team, once; the done activity and the future ones not (yet).
    assert sorted(to for to, _ in sent()) == [["carol@example.org"], ["dan@example.org"]]
    assert all("Subject: Reminder: Team call" in text for _, text in sent())
    await until(at)
    await env.worker.run_until_idle()
    await env.worker.run_until_idle()
    assert len(sent()) == 3
    to, text = sent()[2]
    assert to == ["alice@example.org"] and "Subject: Erinnerung: Call Müller" in text
    assert "Erinnerung an Ihre Aktivität „Call Müller“." in text and f"/e/activity/{soon['id']}" in text

    # Changing the reminder re-arms it (a new time is a new reminder); nothing else is sent again.
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(seconds=4)
    await activities.update(soon["id"], {"reminder": later.isoformat()})
    await activities.update(tomorrow["id"], {"reminder": later.isoformat()})
    await env.worker.run_until_idle()
    assert len(sent()) == 3
    await until(later)
    await env.worker.run_until_idle()
    await env.worker.run_until_idle()
    assert sorted(to[0] for to, _ in sent()[3:]) == ["alice@example.org", "bob@example.org"]
    assert "Subject: Reminder: Tomorrow" in [text for to, text in sent() if to == ["bob@example.org"]][0]
    assert all(j["state"] == "done" for j in await env.jobs())
    assert "done before" not in " ".join(text.lower() for _, text in sent())
    # The jobs ran as the owners, through the one door: each job's run-as user is the one it mailed.
    runs = sorted((j["payload"]["run_as"], j["payload"]["action"]["type"]) for j in await env.jobs() if j["kind"] == "action")
    assert runs == sorted([(user, action) for user in ("alice", "alice", "bob", "carol", "dan") for action in ("send_email", "notify")])
    # And each reminder is an in-app notification of the same user (shown on /notifications until dismissed).
    notes = await env.fetch("SELECT u.name, n.title, n.record_id FROM xrm_sys.notification n JOIN xrm_sys.app_user u ON u.id = n.user_id "
                            "ORDER BY u.name, n.id")
    assert [(n["name"], n["title"]) for n in notes] == [
        ("alice", "Erinnerung: Call Müller"), ("alice", "Erinnerung: Call Müller"), ("bob", "Reminder: Tomorrow"),
        ("carol", "Reminder: Team call"), ("dan", "Reminder: Team call")]
    assert notes[0]["record_id"] == soon["id"]


@pytest.fixture
def quiet_ui(database_uri: str, tmp_path: Path) -> Iterator[Any]:
    """The web app (shipped entities) without its in-process worker: the test runs the jobs itself, with a short backoff."""
    from litestar.testing import TestClient

    from xrm.app import create_app

    settings = Settings(data_dir=tmp_path, database_url=database_uri, schema_dir=ROOT / "entity_schemas", secret_key=None, worker=False)
    with TestClient(app=create_app(settings), base_url="https://testserver.local") as client:
        yield client


def _job_rows(html: str) -> dict[str, str]:
    """The job log's rows by automation name: the row's text, tags removed and spaces collapsed."""
    rows = {}
    for row in re.findall(r'<tr id="job-\d+".*?</tr>', html, flags=re.DOTALL):
        text = " ".join(re.sub(r"<[^>]+>", " ", row).split())
        name = re.search(r"def:account:(\w+)|db:(\w+)", row)
        assert name, row
        rows[name.group(1) or name.group(2)] = text
    return rows


def test_the_job_log_shows_real_jobs_with_outcome_attempts_and_errors(quiet_ui: Any) -> None:
    ui = quiet_ui
    make_user(ui, "admin", ["admin"])
    token = log_in(ui, "admin")
    flaky, broken = Receiver([503]), Receiver([500] * 10)
    try:
        platform = ui.app.state.platform
        from xrm.builtins.automations.store import AutomationStore

        async def setup() -> None:
            store = AutomationStore(platform, await platform.security().principal_for_user("admin"))
            for name, action in (("stamp", {"type": "set_fields", "values": {"website": "https://example.org"}}),
                                 ("flaky", {"type": "webhook", "url": flaky.url, "max_attempts": 3}),
                                 ("broken", {"type": "webhook", "url": broken.url, "max_attempts": 2})):
                await store.create({"name": name, "entity": "account", "run_as": "admin", "trigger": {"on": "created"}, "actions": [action]})
            principal = await platform.security().principal_for_user("admin")
            from xrm.records.service import RecordService

            await RecordService(platform.db, platform.registry, "account", principal, platform.policy).create({"name": "ACME"})
            worker = Worker(platform, name="log-worker", backoff_seconds=0.05, poll_seconds=0.05)
            for _ in range(100):
                await worker.run_until_idle()
                async with platform.db.connection() as connection:
                    if not await connection.fetchval("SELECT count(*) FROM xrm_sys.job WHERE state IN ('queued', 'failed', 'running')"):
                        return
                await asyncio.sleep(0.03)

        ui.blocking_portal.call(setup)
        page = ui.get("/admin/jobs")
        assert page.status_code == 200
        rows = _job_rows(page.text)
        assert set(rows) == {"stamp", "flaky", "broken"}
        assert "done" in rows["stamp"] and "1 / 5" in rows["stamp"] and "Retry" not in rows["stamp"]
        assert "done" in rows["flaky"] and "2 / 3" in rows["flaky"]  # retried after the 503, then 200
        assert "An earlier attempt failed: webhook answered HTTP 503" in rows["flaky"] and '{"status": 200}' in rows["flaky"].replace("&#34;", '"')
        assert "dead" in rows["broken"] and "2 / 2" in rows["broken"] and "webhook answered HTTP 500" in rows["broken"]
        assert "Retry" in rows["broken"] and len(broken.calls) == 2
        assert set(_job_rows(ui.get("/admin/jobs?state=dead").text)) == {"broken"}
        # An admin retries the dead job from the page: queued again, attempts start over.
        broken_id = re.search(r'<tr id="job-(\d+)"[^>]*class="job-dead"', page.text).group(1)  # type: ignore[union-attr]
        retried = ui.post("/admin/jobs/retry", data={"csrf_token": token, "job": broken_id})
        assert retried.status_code == 200 and f"Job {broken_id} queued again." in retried.text
        assert "queued" in _job_rows(retried.text)["broken"] and "0 / 2" in _job_rows(retried.text)["broken"]
        # The same log in German.
        ui.post("/language", data={"csrf_token": token, "language": "de", "next": "/"})
        german = ui.get("/admin/jobs").text
        rows = _job_rows(german)
        assert "Auftragsprotokoll" in german and "Versuche" in german and "Ergebnis" in german
        assert "erledigt" in rows["stamp"] and "eingereiht" in rows["broken"]
        assert "Ein früherer Versuch schlug fehl: webhook answered HTTP 503" in rows["flaky"]
        assert '<option value="dead">aufgegeben</option>' in german
    finally:
        flaky.close()
        broken.close()


def test_a_users_e_mail_address_is_set_from_the_command_line(xrm_cli: Any, database_uri: str) -> None:
    xrm_cli("user", "create", "ada", "--password", "a-long-password", "--email", "ada@example.org")
    assert "not an e-mail address" in xrm_cli("user", "email", "ada", "ada at example", code=1)
    assert "No user named 'nobody'" in xrm_cli("user", "email", "nobody", "x@example.org", code=1)

    async def address() -> Any:
        connection = await __import__("asyncpg").connect(database_uri)
        try:
            return await connection.fetchval("SELECT email FROM xrm_sys.app_user WHERE name = 'ada'")
        finally:
            await connection.close()

    assert asyncio.run(address()) == "ada@example.org"
    xrm_cli("user", "email", "ada", "ada.lovelace@example.org")
    assert asyncio.run(address()) == "ada.lovelace@example.org"
    xrm_cli("user", "email", "ada")
    assert asyncio.run(address()) is None


def test_a_reminder_is_listed_under_notifications_until_its_user_dismisses_it(quiet_ui: Any) -> None:
    ui = quiet_ui
    platform = ui.app.state.platform

    async def setup() -> str:
        users = UserService(platform.db)
        security = platform.security()
        await security.create_role("planner")
        await security.grant("planner", "activity", "read", "own")
        for name in ("alice", "bob"):
            await users.create_user(name, "a-long-password", ["planner"], email=f"{name}@example.org")
        await platform.policy.load(platform.db)
        from xrm.records.principal import SYSTEM_PRINCIPAL
        from xrm.records.service import RecordService

        activities = RecordService(platform.db, platform.registry, "activity", SYSTEM_PRINCIPAL, platform.policy)
        past = (dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)).isoformat()
        created = await activities.create({"kind": "call", "subject": "Call Müller", "reminder": past})
        await security.assign("activity", created["id"], user="alice")
        await activities.create({"kind": "call", "subject": "Done already", "reminder": past, "done": True})
        await Worker(platform, name="ui-worker", poll_seconds=0.05, backoff_seconds=60).run_until_idle()
        return str(created["id"])

    activity_id = ui.blocking_portal.call(setup)
    token = log_in(ui, "alice")
    home = ui.get("/").text
    assert 'href="/notifications"' in home and 'href="/admin/automations"' not in home
    page = ui.get("/notifications").text
    assert page.count('id="notification-') == 1
    assert f'<a href="/e/activity/{activity_id}">Reminder: Call Müller</a>' in page and "Done already" not in page
    note_id = re.search(r'id="notification-(\d+)"', page).group(1)  # type: ignore[union-attr]
    # Another user cannot dismiss it (nor see it).
    ui.cookies.clear()
    bob = log_in(ui, "bob")
    assert 'id="no-notifications"' in ui.get("/notifications").text
    refused = ui.post("/notifications/dismiss", data={"csrf_token": bob, "id": note_id})
    assert refused.status_code == 404 and "No such notification" in refused.text
    assert ui.post("/notifications/dismiss", data={"csrf_token": "forged", "id": note_id}).status_code == 403
    ui.cookies.clear()
    token = log_in(ui, "alice")
    ui.post("/language", data={"csrf_token": token, "language": "de", "next": "/"})
    german = ui.get("/notifications").text
    assert "Benachrichtigungen" in german and "Ausblenden" in german and "Reminder: Call Müller" in german
    dismissed = ui.post("/notifications/dismiss", data={"csrf_token": token, "id": note_id})
    assert dismissed.status_code == 200 and "1 Benachrichtigung ausgeblendet." in dismissed.text
    assert "Keine Benachrichtigungen." in dismissed.text and 'id="notification-' not in ui.get("/notifications").text
