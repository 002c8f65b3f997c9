"""Load the CRM demo data set through the service layer: the well-known records of data.json plus generated ones.

Every record is written by RecordService as the system principal, so
validation, plugin hooks (the state machines, the ticket SLA follow-up), the
audit trail and outbox events apply as for any write. A record's `_then`
lists the updates that follow its create — a deal's stage and a ticket's
status move along their state machines one transition at a time, never by a
jump; a record of data.json in a later state gets the shortest path there.
A lead's `_convert` is converted by the CRM pack's real lead conversion,
`_deal` then moves the new deal on. References hold keys: the referenced
record's display value, its `_key`, or the value of one of its unique fields
(a contact's e-mail, a product's SKU).

Records go in chunks, one transaction per chunk (create_many, then the
chunk's updates): a medium data set takes seconds, and a failure leaves the
chunks before it.
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Callable, Mapping
from datetime import date
from decimal import Decimal
from importlib import resources
from typing import Any

from ..db.database import Database
from ..errors import XrmError
from ..records.principal import SYSTEM_PRINCIPAL
from ..records.service import RecordService
from ..registry import Registry
from .generator import SIZES, generate

__all__ = ["CHUNK", "ORDER", "PACK_ORDER", "demo_records", "load_demo_data", "stage_path"]

ORDER = ("account", "contact", "deal")
PACK_ORDER = ("lead", "activity", "ticket", "campaign", "campaign_member", "campaign_response", "product", "price_list",
              "price_list_item")
"""Entities of the built-in CRM pack (plugin crm, docs/crm-pack.md): loaded when they are defined."""
CHUNK = 250
"""Records per transaction."""
DEFAULT_SEED = 1


def _machine(definition: Any) -> Any:
    try:
        from xrm.builtins.statemachine.machine import machine_of
    except ImportError:  # without the plugin there is no machine: states are set directly
        return None
    return machine_of(definition)


def stage_path(machine: Any, start: str, target: str) -> list[str]:
    """The states after `start` on a shortest way to `target` along the machine's transitions (guards aside)."""
    if start == target:
        return []
    seen, queue = {start: [start]}, deque([start])
    while queue:
        state = queue.popleft()
        for transition in machine.transitions:
            if transition.leaves(state) and transition.target not in seen:
                seen[transition.target] = [*seen[state], transition.target]
                if transition.target == target:
                    return seen[target][1:]
                queue.append(transition.target)
    raise XrmError(f"demo data: no transition of {machine.entity}.{machine.field} leads from {start!r} to {target!r}")


class _Loader:
    def __init__(self, db: Database, registry: Registry, progress: Callable[[str, int], None] | None) -> None:
        self.db = db
        self.registry = registry
        self.keys: dict[str, dict[str, Any]] = {}
        self.progress = progress

    def service(self, entity: str) -> RecordService:
        return RecordService(self.db, self.registry, entity, SYSTEM_PRINCIPAL)

    def _key_fields(self, service: RecordService) -> list[str]:
        entity = service.entity
        return [entity.definition.display_field, *(n for n, f in entity.fields.items() if f.xrm.get("unique"))]

    def remember(self, service: RecordService, row: Mapping[str, Any], key: str | None = None) -> None:
        found = self.keys.setdefault(service.name, {})
        for name in self._key_fields(service):
            if row.get(name) is not None:
                found.setdefault(str(row[name]), row["id"])  # the first of equal display values wins
        if key:
            found[key] = row["id"]

    async def known(self, service: RecordService) -> None:
        """The keys of an entity that already has records (the demo left it as it is)."""
        after = None
        while True:
            page = await service.list(limit=1000, after=after, fields=["id", *self._key_fields(service)])
            for row in page.records:
                self.remember(service, row)
            after = page.next_cursor
            if not after:
                return

    def resolve(self, service: RecordService, values: dict[str, Any]) -> bool:
        """References from keys to ids; False when one names a record of this entity not written yet (flush first)."""
        for name, f in service.entity.fields.items():
            value = values.get(name)
            if not f.references or not isinstance(value, str):
                continue
            found = self.keys.get(f.references, {}).get(value)
            if found is None:
                if f.references == service.name:
                    return False
                raise XrmError(f"demo data: {service.name}.{name} refers to {f.references} {value!r}, which does not exist")
            values[name] = found
        return True

    async def load(self, entity: str, records: list[dict[str, Any]]) -> int:
        service = self.service(entity)
        if await service.count():
            await self.known(service)
            return 0
        machine = _machine(service.entity.definition)
        batch: list[dict[str, Any]] = []
        for record in records:
            item = self._prepare(service, machine, record)
            if not self.resolve(service, item["values"]):
                await self._flush(service, batch)
                batch = []
                if not self.resolve(service, item["values"]):
                    raise XrmError(f"demo data: {entity} {record!r} refers to a record of its own entity that comes later")
            batch.append(item)
            if len(batch) >= CHUNK:
                await self._flush(service, batch)
                batch = []
        await self._flush(service, batch)
        return len(records)

    def _prepare(self, service: RecordService, machine: Any, record: Mapping[str, Any]) -> dict[str, Any]:
        values = {k: v for k, v in record.items() if not k.startswith("_")}
        for name, f in service.entity.fields.items():
            if f.type.name == "currency" and isinstance(values.get(name), dict):
                values[name] = {**values[name], "amount": Decimal(str(values[name]["amount"]))}
        then = [dict(changes) for changes in record.get("_then", [])]
        if machine is not None and not then:
            # A record of data.json in a later state starts where every record starts and takes the transitions there.
            start = service.entity.fields[machine.field].default if service.entity.fields[machine.field].has_default else None
            target = values.get(machine.field)
            if start is not None and target is not None and target != start:
                values[machine.field] = start
                then = [{machine.field: state} for state in stage_path(machine, start, target)]
        return {"values": values, "then": then, "key": record.get("_key"), "convert": record.get("_convert"),
                "deal": record.get("_deal")}

    async def _flush(self, service: RecordService, batch: list[dict[str, Any]]) -> None:
        if not batch:
            return
        async with self.db.transaction():
            rows = await service.create_many([item["values"] for item in batch])
            for row, item in zip(rows, batch, strict=True):
                for changes in item["then"]:
                    row = await service.update(row["id"], changes)
                self.remember(service, row, item["key"])
                if item["convert"] is not None:
                    await self._convert(row, item["convert"], item["deal"] or {})
        if self.progress:
            self.progress(service.name, len(batch))

    async def _convert(self, lead: Mapping[str, Any], options: Mapping[str, Any], deal_changes: Mapping[str, Any]) -> None:
        """The CRM pack's lead conversion (account, contact, deal in stage prospecting), then the deal moves on."""
        from xrm.builtins.crm.service import convert_lead

        options = dict(options)
        if isinstance(options.get("amount"), Mapping):  # data.json writes amounts as text, like currency fields
            options["amount"] = {**options["amount"], "amount": Decimal(str(options["amount"]["amount"]))}
        result = await convert_lead(self.db, self.registry, SYSTEM_PRINCIPAL, None, lead["id"], options)
        accounts, contacts, deals = self.service("account"), self.service("contact"), self.service("deal")
        if result["account"]:
            self.remember(accounts, result["account"])
        self.remember(contacts, result["contact"])
        deal = result["deal"]
        changes = dict(deal_changes)
        target = changes.pop("stage", deal["stage"])
        machine = _machine(deals.entity.definition)
        path = stage_path(machine, deal["stage"], target) if machine is not None else [target]
        probability = {"qualification": 30, "negotiation": 60}
        for index, state in enumerate(path):
            step = {"stage": state, "probability": probability.get(state, 10)}
            if index == len(path) - 1:
                step.update(changes)
            deal = await deals.update(deal["id"], step)
        if not path and changes:
            deal = await deals.update(deal["id"], changes)
        self.remember(deals, deal)


def _core() -> dict[str, list[dict[str, Any]]]:
    text = resources.files("xrm.demo").joinpath("data.json").read_text(encoding="utf-8")
    return json.loads(text, parse_float=Decimal)  # type: ignore[no-any-return]


def demo_records(seed: int = DEFAULT_SEED, accounts: int = SIZES["small"], today: date | None = None) -> dict[str, list[dict[str, Any]]]:
    """The whole demo data set as plain data: data.json's well-known records, then `accounts` generated ones and theirs."""
    core = _core()
    names = {a["name"] for a in core["account"]} | {lead["company"] for lead in core["lead"] if lead.get("company")}
    emails = {c["email"] for c in core["contact"] if c.get("email")} | {lead["email"] for lead in core["lead"] if lead.get("email")}
    generated = generate(seed, accounts, today, reserved_names=names, reserved_emails=emails)
    return {entity: [*core.get(entity, []), *generated.get(entity, [])] for entity in (*ORDER, *PACK_ORDER)}


async def load_demo_data(db: Database, registry: Registry, *, seed: int = DEFAULT_SEED, accounts: int = SIZES["small"],
                         today: date | None = None, progress: Callable[[str, int], None] | None = None) -> dict[str, int]:
    """Insert the demo records once (an entity that has records is left as it is); return the counts created."""
    data = demo_records(seed, accounts, today)
    loader = _Loader(db, registry, progress)
    created: dict[str, int] = {}
    for entity in (*ORDER, *(e for e in PACK_ORDER if e in registry)):
        created[entity] = await loader.load(entity, data[entity])
    return created
