"""Built-in plugin "automations": triggers and actions run from a durable job queue in PostgreSQL.

Automations are declared in entity definitions (`x-xrm` keyword
`automations`) or created by admins (web UI /admin/automations, API
/api/v1/admin/automations). Triggers are workflow triggers (xrm_workflow_triggers):
the built-in record created, updated (with changed fields), date reached,
schedule, the statemachine's transition, and any plugin's (fired by its
outbox events, xrm.events.emit). Actions are workflow actions
(xrm_workflow_actions): the built-in set_fields, create_related,
assign_owner, send_email, webhook and notify (in-app notifications,
/notifications), and any plugin's.
A dispatcher turns outbox events into jobs; workers (inside `xrm serve`, or
`xrm worker`) run them with retries and backoff. See docs/workflows.md.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import click

from xrm.errors import Problem
from xrm.plugins import MenuEntry, WorkflowAction, WorkflowTrigger, hookimpl

from .actions import builtin_actions
from .spec import AUTOMATION_SCHEMA, builtin_triggers, check_automation

__all__: list[str] = []

log = logging.getLogger("xrm.automations")
_running: dict[int, tuple[asyncio.Event, asyncio.Task[None]]] = {}


@hookimpl
def xrm_capabilities() -> dict[str, Any]:
    return {
        "description": "Automations: triggers (created, updated, transition, date, schedule) and actions run from a job queue",
        "reads": ["*"],
        "writes": ["*"],
        "network": True,
        "runs_as": "each automation's declared run_as user (its roles limit what the actions may do)",
    }


@hookimpl
def xrm_definition_vocabulary() -> dict[str, Any]:
    return {"entity": {"automations": {"type": "array", "maxItems": 50, "items": AUTOMATION_SCHEMA,
                                       "description": "Automations of this entity (docs/workflows.md)"}}}


@hookimpl
def xrm_check_definition(definition: Any, known_entities: frozenset[str] | None) -> list[Problem]:
    problems: list[Problem] = []
    specs = definition.xrm.get("automations") or []
    # Action names are not checked here: a stored definition must still load when the plugin of
    # an action is disabled; its jobs then fail with a message naming the action.
    seen: set[str] = set()
    for index, spec in enumerate(specs):
        at = f"/x-xrm/automations/{index}"
        if spec["name"] in seen:
            problems.append(Problem(f"{at}/name", f"the name {spec['name']!r} is used twice"))
        seen.add(spec["name"])
        problems += check_automation(spec, definition, at=at)
        for a, action in enumerate(spec.get("actions", [])):
            target = action.get("entity")
            if action.get("type") == "create_related" and known_entities is not None and target not in known_entities | {definition.name}:
                problems.append(Problem(f"{at}/actions/{a}/entity", f"no entity named {target!r}"))
    return problems


@hookimpl
def xrm_workflow_actions() -> list[WorkflowAction]:
    return builtin_actions()


@hookimpl
def xrm_workflow_triggers() -> list[WorkflowTrigger]:
    return builtin_triggers()


@hookimpl
def xrm_startup(platform: Any) -> None:
    """Start the in-process worker (unless XRM_WORKER=false)."""
    if not platform.settings.worker:
        return
    from .engine import Worker

    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(Worker(platform).run_forever(stop), name="xrm-automations-worker")
    _running[id(platform)] = (stop, task)


@hookimpl
def xrm_shutdown(platform: Any) -> Any:
    found = _running.pop(id(platform), None)
    if found is None:
        return None
    stop, task = found

    async def wait() -> None:
        stop.set()
        try:
            await asyncio.wait_for(task, timeout=10)
        except asyncio.TimeoutError:
            log.warning("the automation worker did not stop within 10 s; cancelled (its job runs again after the lease)")

    return wait()


@hookimpl
def xrm_redact(connection: Any, record_ids: list[Any], needles: list[str]) -> Any:
    """Erasure: rendered e-mails, notifications and job payloads that contain an erased value lose it."""

    async def redact() -> int:
        from xrm.privacy.redaction import REDACTED, like_patterns, redact_text

        patterns = like_patterns(needles)
        if not patterns:
            return 0
        mails = await connection.execute(
            "UPDATE xrm_sys.mail_outbox SET recipients = ARRAY[$2], subject = $2, body = $2 "
            "WHERE lower(array_to_string(recipients, ' ') || ' ' || subject || ' ' || body) LIKE ANY($1::text[])",
            patterns, REDACTED,
        )
        notes = await connection.execute(
            "UPDATE xrm_sys.notification SET title = $2, body = $2 WHERE lower(title || ' ' || body) LIKE ANY($1::text[])",
            patterns, REDACTED,
        )
        jobs = await connection.fetch("SELECT id, payload FROM xrm_sys.job WHERE lower(payload::text) LIKE ANY($1::text[])", patterns)
        await connection.executemany("UPDATE xrm_sys.job SET payload = $2 WHERE id = $1",
                                     [(job["id"], redact_text(job["payload"], needles)) for job in jobs])
        return int(mails.split()[-1]) + int(notes.split()[-1]) + len(jobs)

    return redact()


@hookimpl
def xrm_api_routes() -> list[Any]:
    from .api import api_handlers

    return list(api_handlers)


@hookimpl
def xrm_openapi(registry: Any) -> dict[str, Any]:
    from .api import openapi_part

    return openapi_part()


@hookimpl
def xrm_ui_routes() -> list[Any]:
    from .views import ui_handlers

    return list(ui_handlers)


@hookimpl
def xrm_menu_entries(principal: Any, language: str) -> list[MenuEntry]:
    # Every user has notifications (reminders and the like, from the notify action); admins also manage automations.
    entries = [MenuEntry("Benachrichtigungen" if language == "de" else "Notifications", "/notifications", order=55)]
    if "admin" in principal.roles:
        entries.append(MenuEntry("Automationen" if language == "de" else "Automations", "/admin/automations", order=60))
    return entries


@click.command("worker")
@click.option("--once", is_flag=True, help="Run what is due now, then exit.")
@click.option("--poll", type=float, default=None, help="Seconds between looks when idle (default XRM_WORKER_POLL_SECONDS).")
@click.option("--lease", type=float, default=None, help="Seconds a claimed job is this worker's (default XRM_JOB_LEASE_SECONDS).")
@click.option("--backoff", type=float, default=None, help="First retry delay in seconds (default XRM_JOB_BACKOFF_SECONDS).")
@click.option("--name", default=None, help="This worker's name in the job log (default host:pid:random).")
def worker_command(once: bool, poll: float | None, lease: float | None, backoff: float | None, name: str | None) -> None:
    """Run automation jobs (several workers may run at once; they share the queue with FOR UPDATE SKIP LOCKED)."""
    import signal

    from xrm.runtime import open_platform

    from .engine import Worker

    async def main() -> None:
        async with open_platform() as platform:
            worker = Worker(platform, name=name, poll_seconds=poll, lease_seconds=lease, backoff_seconds=backoff)
            if once:
                await worker.run_until_idle(timeout=3600)
                return
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            listener = await _listen(platform)
            click.echo(f"xrm worker {worker.name} running (Ctrl+C stops it after the current job)")
            try:
                await worker.run_forever(stop)
            finally:
                await listener.close()

    asyncio.run(main())


async def _listen(platform: Any) -> Any:
    """Reload the registry and the policy when another process changes them (as `xrm serve` does)."""
    import asyncpg

    from xrm.registry import SCHEMA_CHANNEL
    from xrm.security.policy import SECURITY_CHANNEL

    connection = await asyncpg.connect(platform.db.uri)
    loop = asyncio.get_running_loop()
    await connection.add_listener(SCHEMA_CHANNEL, lambda *_: loop.create_task(platform.registry.load(platform.db)))
    await connection.add_listener(SECURITY_CHANNEL, lambda *_: loop.create_task(platform.policy.load(platform.db)))
    return connection


@hookimpl
def xrm_cli_commands() -> list[click.Command]:
    return [worker_command]
