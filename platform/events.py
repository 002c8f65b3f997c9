"""Outbox events: the one function that tells the workers (automations, webhooks) that something happened.

An event is a row of ``xrm_sys.outbox`` written on the connection of the
change's own transaction, so it exists exactly when the change does; the
automations' dispatcher reads it only after that transaction has finished
(docs/workflows.md). RecordService (record.created/updated/...), the security
model (record.assigned) and the state machine (workflow.transition) write
their events here; a plugin fires its own workflow trigger the same way:

    from xrm.events import emit
    await emit(connection, "inbound_email.received", {"from": "ada@example.org"},
               entity="contact", record_id=contact["id"], principal=principal)

or, outside a transaction of its own, ``await platform.emit(...)``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .db.database import json_dumps
from .errors import Problem, ValidationFailed

if TYPE_CHECKING:
    import asyncpg

    from .records.principal import Principal

__all__ = ["TOPIC_PATTERN", "emit"]

TOPIC_PATTERN = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+$")
"""Topics are dotted lower-case names, "<area>.<what happened>" (record.created, inbound_email.received)."""


async def emit(connection: asyncpg.Connection, topic: str, payload: Mapping[str, Any] | None = None, *,
               entity: str | None = None, record_id: Any = None, principal: Principal | None = None) -> int:
    """Write one outbox event on `connection` (in its transaction, if one is open); returns the event's id.

    `entity` and `record_id` name the record the event is about: automations of
    that entity run on that record. `payload` must be a JSON object (dates and
    UUIDs are turned into strings); `principal` is who caused it (None: nobody).
    """
    if not isinstance(topic, str) or not TOPIC_PATTERN.match(topic):
        raise ValidationFailed("event", [Problem("/topic", f"{topic!r} is not a topic like 'area.event' (lower case, dotted)")])
    if payload is not None and not isinstance(payload, Mapping):
        raise ValidationFailed("event", [Problem("/payload", "must be a JSON object")])
    if record_id is not None and entity is None:
        raise ValidationFailed("event", [Problem("/entity", "an event about a record names its entity")])
    return await connection.fetchval(  # type: ignore[no-any-return]
        "INSERT INTO xrm_sys.outbox (topic, entity, record_id, principal_id, payload) VALUES ($1, $2, $3, $4, $5) RETURNING id",
        topic, entity, record_id, principal.id if principal is not None else None, json.loads(json_dumps(dict(payload or {}))),
    )
