"""The job queue, the outbox dispatcher and the worker.

Dispatcher (one at a time: an advisory lock). In one transaction it reads the
outbox events of transactions that have finished (xact below its snapshot's
xmin, so an event that commits late is never skipped), matches them against
the automations, scans date and schedule triggers, inserts one job per
(event, automation, action) with the idempotency key
"<event id>:<automation>:<action index>" (ON CONFLICT DO NOTHING), and moves
its cursor: every event is turned into jobs exactly once.

Worker. Claims a job (UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED
LIMIT 1)) with a lease, then runs it in a second transaction that first locks
the job row again: the action's writes (through RecordService) and the job's
"done" commit together. A worker killed mid-job leaves nothing of the
action behind (its transaction rolls back); once the lease has expired another
worker claims the job and runs it: it completes exactly once. External effects
(SMTP, webhooks) happen inside that transaction before the commit, so a crash
between sending and committing sends again: at-least-once, recognisable by
the Message-ID / X-Xrm-Idempotency-Key that stays the same.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import random
import socket
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import asyncpg

from xrm.errors import ValidationFailed, Veto, XrmError
from xrm.plugins import WorkflowTrigger
from xrm.records.principal import SYSTEM_PRINCIPAL, Principal
from xrm.records.query import Condition
from xrm.records.service import RecordService
from xrm.security.model import resolve_principal

from .actions import ActionContext, ActionFailed, run_action, send_mail
from .spec import OWNER, SCANNED_TRIGGERS, Automation, conditions_of, load_automations, workflow_triggers

if TYPE_CHECKING:
    from xrm.runtime import Platform

__all__ = ["Worker", "enqueue", "retry_job"]

log = logging.getLogger("xrm.automations")
DISPATCH_LOCK = 7406101
CONSUMER = "automations"
SCAN_LIMIT = 1000
EVENT_BATCH = 500


async def enqueue(connection: asyncpg.Connection, kind: str, payload: Mapping[str, Any], key: str, *,
                  automation: str | None = None, max_attempts: int | None = None, state: str = "queued",
                  error: str | None = None) -> bool:
    """Insert a job unless one with this idempotency key exists; True if inserted."""
    inserted = await connection.fetchval(
        "INSERT INTO xrm_sys.job (kind, payload, idempotency_key, automation, max_attempts, state, last_error, finished_at) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, CASE WHEN $6 = 'dead' THEN now() END) "
        "ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
        kind, dict(payload), key, automation, max_attempts or _default_attempts.get(), state, error,
    )
    return inserted is not None


class _Default:
    value = 5

    def get(self) -> int:
        return self.value


_default_attempts = _Default()


async def retry_job(connection: asyncpg.Connection, job_id: int) -> dict[str, Any] | None:
    """A dead (or failed) job runs again: attempts start over. None if there is no such job to retry."""
    row = await connection.fetchrow(
        "UPDATE xrm_sys.job SET state = 'queued', attempts = 0, run_after = now(), locked_by = NULL, locked_until = NULL, "
        "finished_at = NULL WHERE id = $1 AND state IN ('dead', 'failed') RETURNING *", job_id,
    )
    return dict(row) if row else None


class Worker:
    """Dispatches outbox events into jobs and runs jobs; several may run at once (in- or out-of-process)."""

    def __init__(self, platform: Platform, *, name: str | None = None, lease_seconds: float | None = None,
                 backoff_seconds: float | None = None, max_backoff_seconds: float = 3600, max_attempts: int | None = None,
                 poll_seconds: float | None = None, jobs_per_tick: int = 50) -> None:
        settings = platform.settings
        self.platform = platform
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.lease = float(lease_seconds if lease_seconds is not None else settings.job_lease_seconds)
        self.backoff = float(backoff_seconds if backoff_seconds is not None else settings.job_backoff_seconds)
        self.max_backoff = max_backoff_seconds
        self.max_attempts = int(max_attempts if max_attempts is not None else settings.job_max_attempts)
        self.poll = float(poll_seconds if poll_seconds is not None else settings.worker_poll_seconds)
        self.jobs_per_tick = jobs_per_tick

    @property
    def db(self) -> Any:
        return self.platform.db

    # -- the loop ----------------------------------------------------------------
    async def run_forever(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            busy = False
            try:
                busy = await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - the loop must survive a database hiccup; the job stays queued
                log.exception("automation worker tick failed")
            if busy:
                continue
            try:
                await asyncio.wait_for(stop.wait(), timeout=self.poll)
            except asyncio.TimeoutError:
                pass

    async def tick(self) -> bool:
        """Dispatch once and run the jobs that are due; True if anything happened."""
        dispatched = await self.dispatch()
        ran = 0
        while ran < self.jobs_per_tick and await self.run_one():
            ran += 1
        return bool(dispatched or ran)

    async def run_until_idle(self, timeout: float = 30) -> None:
        """Tick until nothing is left to dispatch or run now (tests, `xrm worker --once`)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while await self.tick():
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError("the worker was still busy")

    # -- dispatching --------------------------------------------------------------
    async def dispatch(self) -> int:
        """Outbox events and due date/schedule triggers into jobs; returns how many jobs were queued."""
        _default_attempts.value = self.max_attempts
        async with self.db.transaction() as tx:
            connection = tx.connection
            if not await connection.fetchval("SELECT pg_try_advisory_xact_lock($1)", DISPATCH_LOCK):
                return 0  # another dispatcher is at it
            cursor = await connection.fetchrow(
                "SELECT horizon::text AS last, pg_snapshot_xmin(pg_current_snapshot())::text AS horizon "
                "FROM xrm_sys.automation_cursor WHERE consumer = $1 FOR UPDATE", CONSUMER,
            )
            if cursor is None:
                await connection.execute(
                    "INSERT INTO xrm_sys.automation_cursor (consumer, horizon) VALUES ($1, pg_snapshot_xmin(pg_current_snapshot()))",
                    CONSUMER,
                )
                return 0
            automations = [a for a in await load_automations(connection, self.platform.registry)
                           if a.enabled and a.entity in self.platform.registry]
            queued = 0
            if cursor["last"] != cursor["horizon"]:
                events = await connection.fetch(
                    "SELECT id, topic, entity, record_id, payload FROM xrm_sys.outbox "
                    "WHERE xact >= $1::text::xid8 AND xact < $2::text::xid8 ORDER BY xact, id",
                    cursor["last"], cursor["horizon"],
                )
                by_entity: dict[str, list[Automation]] = {}
                for automation in automations:
                    by_entity.setdefault(automation.entity, []).append(automation)
                triggers = workflow_triggers()
                for event in events:
                    for automation in by_entity.get(event["entity"] or "", []):
                        try:
                            matched = _matches(automation, event, triggers)
                        except Exception as error:  # noqa: BLE001 - a plugin's match must not stop the dispatch; the log shows it
                            await enqueue(connection, "action", self._payload(automation, 0, event["record_id"],
                                                                        {"id": event["id"], "topic": event["topic"], "payload": event["payload"]}),
                                          f"{event['id']}:{automation.key}:trigger", automation=automation.key, state="dead",
                                          error=f"the trigger {automation.trigger.get('on')!r} could not match the event: "
                                                f"{type(error).__name__}: {error}")
                            continue
                        if matched:
                            queued += await self._queue_for_event(connection, automation, event)
                await connection.execute(
                    "UPDATE xrm_sys.automation_cursor SET horizon = $2::text::xid8, updated_at = now() WHERE consumer = $1",
                    CONSUMER, cursor["horizon"],
                )
            for automation in automations:
                if automation.trigger.get("on") in SCANNED_TRIGGERS:
                    queued += await self._scan(connection, automation)
            return queued

    async def _queue_for_event(self, connection: asyncpg.Connection, automation: Automation, event: Mapping[str, Any]) -> int:
        event_info = {"id": event["id"], "topic": event["topic"], "payload": event["payload"]}
        if automation.condition:
            try:
                async with connection.transaction():  # a savepoint: a failing check must not abort the dispatch
                    matched = await self._condition_holds(automation, event["record_id"])
            except (XrmError, asyncpg.PostgresError) as error:
                await enqueue(connection, "action", self._payload(automation, 0, event["record_id"], event_info),
                              f"{event['id']}:{automation.key}:condition", automation=automation.key, state="dead",
                              error=f"the condition could not be checked: {error}")
                return 0
            if not matched:
                return 0
        owner = None
        if automation.run_as == OWNER:  # the owner as it is now (an assignment may have followed the event)
            found = await self._records(automation.entity, SYSTEM_PRINCIPAL).list(
                where=[Condition("id", "eq", str(event["record_id"]))], fields=["owner_id"], limit=1)
            owner = found.records[0].get("owner_id") if found.records else None
        return await self._queue_actions(connection, automation, event["record_id"], event_info, f"{event['id']}:{automation.key}",
                                         owner=owner)

    async def _queue_actions(self, connection: asyncpg.Connection, automation: Automation, record_id: Any,
                             event_info: Mapping[str, Any], prefix: str, *, owner: Any = None) -> int:
        """One job per action; for an automation run as the record's owner, one per owning user (each member of a team)."""
        if automation.run_as != OWNER:
            users: list[tuple[str, str]] = [(automation.run_as, "")]
        else:
            users = [(name, f":{name}") for name in await owning_users(connection, owner)]
        queued = 0
        for user, suffix in users:
            for index, action in enumerate(automation.actions):
                queued += await enqueue(connection, "action", self._payload(automation, index, record_id, event_info, run_as=user),
                                        f"{prefix}{suffix}:{index}", automation=automation.key, max_attempts=action.get("max_attempts"))
        return queued

    @staticmethod
    def _payload(automation: Automation, index: int, record_id: Any, event: Mapping[str, Any], *,
                 run_as: str | None = None) -> dict[str, Any]:
        """What the job runs: a snapshot of the automation's action as matched."""
        return {"automation": automation.key, "name": automation.name, "entity": automation.entity, "run_as": run_as or automation.run_as,
                "action_index": index, "action": dict(automation.actions[index]), "record_id": str(record_id) if record_id else None,
                "event": dict(event), "as_owner": automation.run_as == OWNER}

    async def _finder(self, automation: Automation) -> Principal:
        """Who finds the records an automation applies to (condition, scans): its run-as user, or, for one run as each
        record's owner, the platform (it only picks the records; each job then reads and writes with the owner's rights)."""
        return SYSTEM_PRINCIPAL if automation.run_as == OWNER else await principal_for(self.platform, automation.run_as)

    async def _condition_holds(self, automation: Automation, record_id: Any) -> bool:
        principal = await self._finder(automation)
        now = dt.datetime.now(dt.timezone.utc)
        where = [Condition("id", "eq", str(record_id)), *conditions_of(automation.condition, now)]
        return await self._records(automation.entity, principal).count(where=where) > 0

    def _records(self, entity: str, principal: Principal) -> RecordService:
        return RecordService(self.db, self.platform.registry, entity, principal, self.platform.policy)

    async def _scan(self, connection: asyncpg.Connection, automation: Automation) -> int:
        """Date and schedule triggers: find the records due now; the idempotency keys make repeats harmless."""
        trigger = automation.trigger
        await connection.execute("INSERT INTO xrm_sys.automation_state (key) VALUES ($1) ON CONFLICT (key) DO NOTHING", automation.key)
        state = await connection.fetchrow("SELECT last_run, now() AS now FROM xrm_sys.automation_state WHERE key = $1 FOR UPDATE", automation.key)
        now: dt.datetime = state["now"]
        last: dt.datetime | None = state["last_run"]
        if trigger["on"] == "schedule":
            slot = _schedule_slot(trigger, now, last)
            if slot is None:
                return 0
        try:
            async with connection.transaction():
                principal = await self._finder(automation)
                where = conditions_of(automation.condition, now)
                extra = ["owner_id"] if automation.run_as == OWNER else []
                if trigger["on"] == "date":
                    name = trigger["field"]
                    offset = dt.timedelta(minutes=trigger.get("offset_minutes", 0))
                    start = (last or now - dt.timedelta(days=1)) - offset
                    end = now - offset
                    if self.platform.registry.get(automation.entity).fields[name].type.name == "date":
                        bounds = [Condition(name, "gt", start.date().isoformat()), Condition(name, "lte", end.date().isoformat())]
                    else:
                        bounds = [Condition(name, "gt", start.isoformat()), Condition(name, "lte", end.isoformat())]
                    page = await self._records(automation.entity, principal).list(where=bounds + where, limit=SCAN_LIMIT,
                                                                                  fields=[name, *extra])
                    keyed = [(r, f"date:{automation.key}:{r['id']}:{r[name]}") for r in page.records]
                else:
                    page = await self._records(automation.entity, principal).list(where=where, limit=SCAN_LIMIT, fields=["id", *extra])
                    keyed = [(r, f"schedule:{automation.key}:{slot}:{r['id']}") for r in page.records]
        except (XrmError, asyncpg.PostgresError) as error:
            await enqueue(connection, "action", self._payload(automation, 0, None, {"topic": f"{trigger['on']}.scan"}),
                          f"scan:{automation.key}:{now.isoformat()}", automation=automation.key, state="dead",
                          error=f"the {trigger['on']} trigger could not find its records: {error}")
            await connection.execute("UPDATE xrm_sys.automation_state SET last_run = $2 WHERE key = $1", automation.key, now)
            return 0
        queued = 0
        info = {"topic": f"{trigger['on']}.reached", "at": now.isoformat()}
        for record, prefix in keyed:
            queued += await self._queue_actions(connection, automation, record["id"], info, prefix, owner=record.get("owner_id"))
        await connection.execute("UPDATE xrm_sys.automation_state SET last_run = $2 WHERE key = $1", automation.key, now)
        return queued

    # -- running jobs --------------------------------------------------------------
    async def claim(self) -> dict[str, Any] | None:
        async with self.db.connection() as connection:
            row = await connection.fetchrow(
                "UPDATE xrm_sys.job SET state = 'running', attempts = attempts + 1, locked_by = $1, "
                "locked_until = now() + make_interval(secs => $2), started_at = now() "
                "WHERE id = (SELECT id FROM xrm_sys.job WHERE (state IN ('queued', 'failed') AND run_after <= now()) "
                "            OR (state = 'running' AND locked_until < now()) "
                "            ORDER BY run_after, id FOR UPDATE SKIP LOCKED LIMIT 1) RETURNING *",
                self.name, self.lease,
            )
        return dict(row) if row else None

    async def run_one(self) -> bool:
        """Claim and run one due job; False if there was none."""
        job = await self.claim()
        if job is None:
            return False
        if job["attempts"] > job["max_attempts"]:  # its last attempt's worker died
            await self._failed(job, "the worker stopped during the last attempt (lease expired)", final=True)
            return True
        try:
            async with self.db.transaction() as tx:
                mine = await tx.connection.fetchval(
                    "SELECT 1 FROM xrm_sys.job WHERE id = $1 AND locked_by = $2 AND state = 'running' FOR UPDATE",
                    job["id"], self.name,
                )
                if not mine:
                    return True  # the lease ran out and another worker took it over
                result = await self._execute(job)
                await tx.connection.execute(
                    "UPDATE xrm_sys.job SET state = 'done', result = $2, finished_at = now(), locked_by = NULL, "
                    "locked_until = NULL WHERE id = $1", job["id"], result,
                )
        except asyncio.CancelledError:
            raise
        except Exception as error:  # noqa: BLE001 - any failure of an action is the job's outcome, logged and retried
            if not isinstance(error, XrmError):
                log.exception("job %s (%s) failed", job["id"], job["idempotency_key"])
            await self._failed(job, _describe(error))
        return True

    async def _failed(self, job: Mapping[str, Any], message: str, *, final: bool = False) -> None:
        dead = final or job["attempts"] >= job["max_attempts"]
        delay = min(self.backoff * 2 ** max(job["attempts"] - 1, 0), self.max_backoff) * random.uniform(0.8, 1.2)
        async with self.db.connection() as connection:
            await connection.execute(
                "UPDATE xrm_sys.job SET state = $3, last_error = $2, locked_by = NULL, locked_until = NULL, "
                "run_after = now() + make_interval(secs => $4), finished_at = CASE WHEN $3 = 'dead' THEN now() END "
                "WHERE id = $1 AND locked_by = $5",
                job["id"], message[:4000], "dead" if dead else "failed", 0.0 if dead else delay, self.name,
            )

    async def _execute(self, job: Mapping[str, Any]) -> Any:
        payload = job["payload"]
        if job["kind"] == "mail.send":
            return await self._send_mail(job)
        if job["kind"] != "action":
            raise ActionFailed(f"unknown job kind {job['kind']!r}")
        entity = payload["entity"]
        if entity not in self.platform.registry:
            raise ActionFailed(f"the entity {entity!r} does not exist (any more)")
        principal = await principal_for(self.platform, payload["run_as"])
        records = self._records(entity, principal)
        record = await records.get(payload["record_id"])
        # The outbox event holds every field of the write; the action (a webhook, a mail template) sees it only
        # as far as the run-as user may read it: sensitive fields it has no grant for are left out, as in `record`.
        event = _visible_event(payload.get("event") or {}, records.hidden_fields)
        context = ActionContext(self.platform, principal, entity, record, payload["automation"], payload["action_index"],
                                job["id"], job["idempotency_key"], event, user=await _user_info(self.db, principal),
                                owner_of_job=payload.get("as_owner", False))
        return await run_action(payload["action"], context)

    async def _send_mail(self, job: Mapping[str, Any]) -> Any:
        async with self.db.connection() as connection:
            mail = await connection.fetchrow("SELECT * FROM xrm_sys.mail_outbox WHERE id = $1::uuid FOR UPDATE", job["payload"]["mail"])
            if mail is None:
                raise ActionFailed("the e-mail is no longer in the mail outbox")
            if mail["state"] == "sent":
                return {"mail": str(mail["id"]), "already_sent": True}
            await asyncio.to_thread(send_mail, self.platform.settings, dict(mail), job["idempotency_key"])
            await connection.execute("UPDATE xrm_sys.mail_outbox SET state = 'sent', sent_at = now() WHERE id = $1", mail["id"])
        return {"mail": str(mail["id"]), "to": list(mail["recipients"]), "message_id": f"<{mail['id']}@xrm>"}


async def principal_for(platform: Platform, name: str) -> Principal:
    """The run-as user's principal (roles and teams as now); an error if the user is missing or disabled."""
    async with platform.db.connection() as connection:
        row = await connection.fetchrow("SELECT id, name, roles, disabled_at FROM xrm_sys.app_user WHERE name = $1", name)
        if row is None:
            raise ActionFailed(f"the automation runs as {name!r}, and there is no such user")
        if row["disabled_at"] is not None:
            raise ActionFailed(f"the automation runs as {name!r}, and that user is disabled")
        return await resolve_principal(connection, row["id"], row["name"], row["roles"])


def _describe(error: Exception) -> str:
    """A failure as the job log shows it; a refused record names each field and why (not just "Invalid lead record")."""
    if not isinstance(error, XrmError):
        return f"{type(error).__name__}: {error}"
    if isinstance(error, ValidationFailed) and not isinstance(error, Veto) and error.problems:
        return f"{error.message}: " + "; ".join(f"{p.pointer or '/'} {p.message}" for p in error.problems)
    return error.message


async def _user_info(db: Any, principal: Principal) -> dict[str, Any]:
    async with db.connection() as connection:
        row = await connection.fetchrow("SELECT email, language FROM xrm_sys.app_user WHERE id = $1", principal.id)
    return {"name": principal.name, "email": row["email"] if row else None, "language": (row["language"] if row else None) or "en"}


async def owning_users(connection: asyncpg.Connection, owner_id: Any) -> list[str]:
    """The active users an owner stands for: the user, or each member of the team (by name); none for no owner."""
    if owner_id is None:
        return []
    rows = await connection.fetch(
        "SELECT name FROM xrm_sys.app_user WHERE id = $1 AND disabled_at IS NULL "
        "UNION SELECT u.name FROM xrm_sys.team_member m JOIN xrm_sys.app_user u ON u.id = m.user_id "
        "WHERE m.team_id = $1 AND u.disabled_at IS NULL ORDER BY name", owner_id,
    )
    return [r["name"] for r in rows]


def _matches(automation: Automation, event: Mapping[str, Any], triggers: Mapping[str, WorkflowTrigger]) -> bool:
    """Whether the event fires the automation's trigger: one of its topics and its match (built-in or a plugin's) holds."""
    declared = triggers.get(automation.trigger.get("on"))
    if declared is None or event["topic"] not in declared.topics:
        return False
    if declared.match is None:
        return True
    parameters = {key: value for key, value in automation.trigger.items() if key != "on"}
    return bool(declared.match(parameters, event["payload"] or {}))


def _schedule_slot(trigger: Mapping[str, Any], now: dt.datetime, last: dt.datetime | None) -> str | None:
    """The schedule's current slot if it is due (not yet run in it), else None."""
    if "every_minutes" in trigger:
        period = int(trigger["every_minutes"]) * 60
        slot = int(now.timestamp()) // period
        if last is not None and int(last.timestamp()) // period >= slot:
            return None
        return f"every{trigger['every_minutes']}:{slot}"
    hours, minutes = map(int, trigger["daily_at"].split(":"))
    today = now.astimezone(dt.timezone.utc).replace(hour=hours, minute=minutes, second=0, microsecond=0)
    if now < today or (last is not None and last >= today):
        return None
    return f"daily:{today.date().isoformat()}"


def _visible_event(event: Mapping[str, Any], hidden: frozenset[str]) -> dict[str, Any]:
    """The event without the values of `hidden` fields (in its changes and its created record)."""
    payload = event.get("payload")
    if not hidden or not isinstance(payload, Mapping):
        return dict(event)
    visible = dict(payload)
    for key in ("changes", "record"):
        if isinstance(visible.get(key), Mapping):
            visible[key] = {name: value for name, value in visible[key].items() if name not in hidden}
    return {**event, "payload": visible}
