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
import hashlib
import hmac
import json
import os
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
from xrm.plugins import WorkflowAction, get_plugin_manager, hookimpl
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


async def test_transition_trigger(env: Env) -> None:
    await env.define(lead_with({
        "name": "on_qualify", "run_as": "boss", "trigger": {"on": "transition", "transition": "qualify", "to": "qualified"},
        "actions": [{"type": "create_related", "entity": "task", "values": {"title": "Send offer to {{ record.name }}"}, "link_field": "lead"}],
    }), TASK)
    lead = await (await env.records("lead")).create({"name": "Cy"})
    async with env.db.connection() as connection:
        for transition, to in (("contact", "contacted"), ("qualify", "qualified")):
            await connection.execute(
                "INSERT INTO xrm_sys.outbox (topic, entity, record_id, payload) VALUES ('workflow.transition', 'lead', $1, $2)",
                lead["id"], {"field": "status", "transition": transition, "from": "new", "to": to, "version": 2},
            )
    await env.worker.run_until_idle()
    assert [t["title"] for t in (await (await env.records("task")).list()).records] == ["Send offer to Cy"]


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


# -- crash recovery -----------------------------------------------------------------------
WORKER_SCRIPT = textwrap.dedent("""
    import asyncio, os, sys, time
    from pathlib import Path
    from xrm.plugins import WorkflowAction, get_plugin_manager, hookimpl

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
