"""The built-in actions (declared through xrm_workflow_actions, run like any plugin's) and how an action runs.

An action runs inside the job's transaction (xrm.builtins.automations.engine):
its writes go through RecordService with the automation's run-as principal
and commit together with the job's "done", or not at all.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import inspect
import json
import smtplib
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate
from typing import TYPE_CHECKING, Any

from xrm.db.database import json_dumps
from xrm.errors import PermissionDenied, XrmError
from xrm.plugins import WorkflowAction, get_plugin_manager
from xrm.records.principal import Principal
from xrm.records.service import RecordService
from xrm.security.model import SecurityService

from .spec import render

if TYPE_CHECKING:
    from xrm.runtime import Platform

__all__ = ["ActionContext", "ActionFailed", "builtin_actions", "run_action"]

WRITE_METHODS = frozenset({"create", "create_many", "update", "delete", "restore", "erase_personal", "purge"})


class ActionFailed(XrmError):
    """An action could not do its work (the job is retried, then dead)."""


@dataclass
class ActionContext:
    """What an action gets besides its record and parameters."""

    platform: Platform
    principal: Principal
    """The automation's run-as user."""
    entity: str
    record: dict[str, Any]
    automation: str
    """The automation's key."""
    action_index: int
    job_id: int
    idempotency_key: str
    event: Mapping[str, Any] = field(default_factory=dict)
    reads: frozenset[str] | None = None
    """Entities the action's plugin declared it reads (None: any)."""
    writes: frozenset[str] | None = None
    """Entities it declared it writes (None: any)."""
    user: Mapping[str, Any] = field(default_factory=dict)
    """The run-as user as templates see it: {"name", "email", "language"}."""
    owner_of_job: bool = False
    """The automation runs as each record's owner ("@owner"): this job is for the run-as user alone."""

    def records(self, entity: str) -> RecordService:
        """The one door as the run-as user, held to what the action's plugin declared (reads / writes)."""
        if self.reads is not None and entity not in self.reads and (self.writes is None or entity not in self.writes):
            raise PermissionDenied(f"the action's plugin did not declare that it reads or writes {entity}")
        service = RecordService(self.platform.db, self.platform.registry, entity, self.principal, self.platform.policy)
        if self.writes is None or entity in self.writes:
            return service
        return _ReadOnly(service)  # type: ignore[return-value]

    @property
    def template_context(self) -> dict[str, Any]:
        return {"record": self.record, "entity": self.entity, "event": dict(self.event), "user": dict(self.user)}


class _ReadOnly:
    """A RecordService whose write methods refuse: the plugin declared it only reads this entity."""

    def __init__(self, service: RecordService) -> None:
        self._service = service

    def __getattr__(self, name: str) -> Any:
        if name in WRITE_METHODS:
            raise PermissionDenied(f"the action's plugin did not declare that it writes {self._service.name}")
        return getattr(self._service, name)


def _declared(values: Any) -> frozenset[str] | None:
    if values is None or values == "*" or (isinstance(values, (list, tuple)) and "*" in values):
        return None
    return frozenset(values if isinstance(values, (list, tuple)) else [values])


def find_action(name: str) -> tuple[str, WorkflowAction]:
    """(plugin name, action) of a workflow action, from any plugin (xrm_workflow_actions)."""
    for plugin_name, actions in get_plugin_manager().each("xrm_workflow_actions"):
        for action in actions or []:
            if action.name == name:
                return plugin_name, action
    raise ActionFailed(f"no plugin declares the workflow action {name!r} (is the plugin installed and enabled?)")


def action_names() -> frozenset[str]:
    return frozenset(a.name for _, found in get_plugin_manager().each("xrm_workflow_actions") for a in found or [])


async def run_action(spec: Mapping[str, Any], context: ActionContext) -> Any:
    """Run one action of an automation; its return value is the job's result."""
    plugin_name, action = find_action(spec["type"])
    capabilities = get_plugin_manager().capabilities(plugin_name)
    context.reads, context.writes = _declared(capabilities.get("reads")), _declared(capabilities.get("writes"))
    if plugin_name != "automations":
        if context.reads is not None and context.entity not in context.reads:
            raise PermissionDenied(
                f"plugin {plugin_name!r} declared it reads {', '.join(sorted(context.reads)) or 'nothing'}; "
                f"its action {action.name!r} may not get a {context.entity} record"
            )
    parameters = dict(spec.get("parameters") or {}) if plugin_name != "automations" else dict(spec)
    arguments = {"record": dict(context.record), "parameters": parameters, "principal": context.principal, "context": context,
                 "records": context.records, "platform": context.platform}
    accepted = inspect.signature(action.run).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        arguments = {k: v for k, v in arguments.items() if k in accepted}
    result = action.run(**arguments)
    if inspect.isawaitable(result):
        result = await result
    if plugin_name != "automations" and spec.get("save") and isinstance(result, Mapping):
        changes = {name: result.get(key) for key, name in spec["save"].items()}
        await context.records(context.entity).update(context.record["id"], changes)
    return json.loads(json_dumps(result)) if result is not None else None


# -- the built-in actions ---------------------------------------------------------
async def _set_fields(context: ActionContext, parameters: Mapping[str, Any]) -> dict[str, Any]:
    values = render(parameters["values"], context.template_context)
    updated = await context.records(context.entity).update(context.record["id"], values)
    return {"entity": context.entity, "updated": str(updated["id"]), "version": updated["version"]}


async def _create_related(context: ActionContext, parameters: Mapping[str, Any]) -> dict[str, Any]:
    values = dict(render(parameters.get("values") or {}, context.template_context))
    if parameters.get("link_field"):
        values[parameters["link_field"]] = str(context.record["id"])
    created = await context.records(parameters["entity"]).create(values)
    return {"entity": parameters["entity"], "created": str(created["id"])}


async def _assign_owner(context: ActionContext, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Round robin over the team's enabled members (by name); the position is kept in the database."""
    async with context.platform.db.connection() as connection:
        members = await connection.fetch(
            "SELECT u.name FROM xrm_sys.team t JOIN xrm_sys.team_member m ON m.team_id = t.id "
            "JOIN xrm_sys.app_user u ON u.id = m.user_id WHERE t.name = $1 AND u.disabled_at IS NULL ORDER BY u.name",
            parameters["team"],
        )
        if not members:
            raise ActionFailed(f"the team {parameters['team']!r} does not exist or has no active members")
        key = f"{context.automation}#{context.action_index}"
        position = await connection.fetchval(
            "INSERT INTO xrm_sys.automation_state (key, round_robin) VALUES ($1, 1) "
            "ON CONFLICT (key) DO UPDATE SET round_robin = xrm_sys.automation_state.round_robin + 1 RETURNING round_robin - 1",
            key,
        )
    user = members[position % len(members)]["name"]
    security = SecurityService(context.platform.db, context.platform.policy, context.platform.registry, context.principal)
    await security.assign(context.entity, context.record["id"], user=user)
    return {"entity": context.entity, "record": str(context.record["id"]), "owner": user}


async def _send_email(context: ActionContext, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """Render the e-mail into the mail outbox and queue a job that sends it (same transaction)."""
    from .engine import enqueue

    values = render({k: parameters.get(k, "") for k in ("to", "subject", "body")}, context.template_context)
    recipients = [part.strip() for part in str(values["to"]).replace(";", ",").split(",") if part.strip()]
    if any("@" not in r or "\n" in r for r in recipients) or (not recipients and not parameters.get("to_owner")):
        raise ActionFailed(f"no valid recipient in {values['to']!r}")
    if parameters.get("to_owner"):
        recipients += [r for r in await _owner_addresses(context) if r not in recipients]
    subject = " ".join(str(values["subject"]).split())
    async with context.platform.db.connection() as connection:
        mail_id = await connection.fetchval(
            "INSERT INTO xrm_sys.mail_outbox (automation, recipients, subject, body) VALUES ($1, $2, $3, $4) RETURNING id",
            context.automation, recipients, subject, str(values["body"]),
        )
        await enqueue(connection, "mail.send", {"mail": str(mail_id)}, f"mail:{mail_id}", automation=context.automation,
                      max_attempts=parameters.get("max_attempts"))
    return {"mail": str(mail_id), "to": recipients}


async def _owner_names(context: ActionContext) -> list[str]:
    """The users the record's owner stands for (for a job run as the owner: that user alone)."""
    from .engine import owning_users

    if context.owner_of_job:
        return [context.principal.name]
    async with context.platform.db.connection() as connection:
        return await owning_users(connection, context.record.get("owner_id"))


async def _notify(context: ActionContext, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """An in-app notification for each user named and/or the record's owner, shown on /notifications until dismissed."""
    values = render({"title": parameters["title"], "body": parameters.get("body", "")}, context.template_context)
    names = [str(n) for n in parameters.get("users") or []]
    if parameters.get("to_owner", not names):
        names += [n for n in await _owner_names(context) if n not in names]
    if not names:
        raise ActionFailed(f"the {context.entity} record has no owner (or only disabled users) to notify")
    title = " ".join(str(values["title"]).split())[:500]
    async with context.platform.db.connection() as connection:
        rows = await connection.fetch(
            "INSERT INTO xrm_sys.notification (user_id, automation, entity, record_id, title, body) "
            "SELECT id, $2, $3, $4, $5, $6 FROM xrm_sys.app_user WHERE name = ANY($1::text[]) AND disabled_at IS NULL "
            "RETURNING user_id", names, context.automation, context.entity, context.record["id"], title, str(values["body"])[:10000],
        )
    if len(rows) < len(names):
        raise ActionFailed(f"no active user among {', '.join(names)} to notify" if not rows else
                           f"some users to notify do not exist or are disabled: {', '.join(names)}")
    return {"notified": sorted(names)}


async def _owner_addresses(context: ActionContext) -> list[str]:
    """E-mail addresses of the record's owner: the user's, or each active team member's; for a job run as the owner
    ("@owner", one job per owning user) only that user's. An owner without any address fails the action, saying so."""
    names = await _owner_names(context)
    if not names:
        raise ActionFailed(f"the {context.entity} record has no owner (or only disabled users) to send the e-mail to")
    async with context.platform.db.connection() as connection:
        rows = await connection.fetch("SELECT name, email FROM xrm_sys.app_user WHERE name = ANY($1::text[]) ORDER BY name", names)
    found = [r["email"] for r in rows if r["email"]]
    if not found:
        raise ActionFailed(f"the owner ({', '.join(names)}) has no e-mail address (xrm user create --email, xrm user email)")
    return found


async def _webhook(context: ActionContext, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """POST the record as JSON, signed with the automation's secret: X-Xrm-Signature: sha256=<hex HMAC of the body>."""
    import httpx

    secret = await automation_secret(context.platform.db, context.automation)
    sent_at = dt.datetime.now(dt.timezone.utc)
    body = json_dumps({
        "automation": context.automation, "entity": context.entity, "record": context.record,
        "event": dict(context.event), "idempotency_key": context.idempotency_key, "sent_at": sent_at,
    }).encode()
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {"Content-Type": "application/json", "User-Agent": "xrm-automations", "X-Xrm-Signature": f"sha256={signature}",
               "X-Xrm-Idempotency-Key": context.idempotency_key}
    try:
        async with httpx.AsyncClient(timeout=float(parameters.get("timeout_seconds", 10)), follow_redirects=False) as client:
            response = await client.post(render(parameters["url"], context.template_context), content=body, headers=headers)
    except httpx.HTTPError as error:
        raise ActionFailed(f"webhook request failed: {type(error).__name__}: {error}") from None
    if not 200 <= response.status_code < 300:
        raise ActionFailed(f"webhook answered HTTP {response.status_code}: {response.text[:200]}")
    return {"status": response.status_code}


async def automation_secret(db: Any, key: str) -> str:
    """The automation's webhook signing secret, created on first use and committed at once (outside any job's transaction)."""
    assert db.engine is not None and db.engine.pool is not None
    async with db.engine.pool.acquire() as connection:
        return await connection.fetchval(  # type: ignore[no-any-return]
            "INSERT INTO xrm_sys.automation_state (key) VALUES ($1) ON CONFLICT (key) DO UPDATE SET key = EXCLUDED.key RETURNING secret", key,
        )


def builtin_actions() -> list[WorkflowAction]:
    def action(name: str, en: str, de: str, run: Any, description: str) -> WorkflowAction:
        async def call(context: ActionContext, parameters: Mapping[str, Any]) -> Any:
            return await run(context, parameters)

        return WorkflowAction(name=name, label={"en": en, "de": de}, run=call, description=description)

    return [
        action("set_fields", "Set fields", "Felder setzen", _set_fields, "Change fields of the record (values may use {{ record.field }})"),
        action("create_related", "Create a related record", "Verknüpften Datensatz anlegen", _create_related,
               "Create a record of another entity, e.g. a follow-up task referencing this one"),
        action("assign_owner", "Assign owner (round robin)", "Besitzer zuweisen (reihum)", _assign_owner,
               "Make the next member of a team (round robin) the record's owner"),
        action("send_email", "Send e-mail", "E-Mail senden", _send_email, "Send an e-mail through SMTP (templated with the record)"),
        action("webhook", "Call a webhook", "Webhook aufrufen", _webhook, "POST the record as signed JSON to a URL"),
        action("notify", "Notify in the app", "In der App benachrichtigen", _notify,
               "A notification for the record's owner (or named users), shown under Notifications until dismissed"),
    ]


# -- sending a queued e-mail --------------------------------------------------------
def send_mail(settings: Any, mail: Mapping[str, Any], idempotency_key: str) -> None:
    """Send one e-mail of the mail outbox through SMTP (blocking; run in a thread)."""
    if not settings.smtp_host:
        raise ActionFailed("no mail server is configured (XRM_SMTP_HOST)")
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = ", ".join(mail["recipients"])
    message["Subject"] = mail["subject"]
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = f"<{mail['id']}@xrm>"
    message["X-Xrm-Idempotency-Key"] = idempotency_key
    message.set_content(mail["body"])
    try:
        with smtplib.SMTP(settings.smtp_host, settings.smtp_port, timeout=30) as smtp:
            if settings.smtp_starttls:
                smtp.starttls()
            if settings.smtp_user:
                smtp.login(settings.smtp_user, settings.smtp_password or "")
            smtp.send_message(message)
    except (OSError, smtplib.SMTPException) as error:
        raise ActionFailed(f"sending the e-mail failed: {type(error).__name__}: {error}") from None


def new_uuid() -> uuid.UUID:
    return uuid.uuid4()
