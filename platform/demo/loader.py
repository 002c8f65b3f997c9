"""Load the demo data set through the service layer (references by display name)."""

from __future__ import annotations

import json
from decimal import Decimal
from importlib import resources
from typing import Any

from ..db.database import Database
from ..records.principal import SYSTEM_PRINCIPAL
from ..records.service import RecordService
from ..registry import Registry

__all__ = ["load_demo_data"]

ORDER = ("account", "contact", "deal")
PACK_ORDER = ("lead", "activity", "ticket", "campaign", "campaign_member", "product", "price_list", "price_list_item")
"""Entities of the built-in CRM pack (plugin crm, docs/crm-pack.md): loaded when they are defined."""


async def load_demo_data(db: Database, registry: Registry) -> dict[str, int]:
    """Insert the demo records once (skipped per entity if it has records); return counts."""
    text = resources.files("xrm.demo").joinpath("data.json").read_text(encoding="utf-8")
    data: dict[str, list[dict[str, Any]]] = json.loads(text, parse_float=Decimal)
    created: dict[str, int] = {}
    ids_by_name: dict[str, dict[str, Any]] = {}
    async with db.transaction():
        for entity in ORDER + tuple(e for e in PACK_ORDER if e in registry and e in data):
            service = RecordService(db, registry, entity, SYSTEM_PRINCIPAL)
            display = service.entity.definition.display_field
            existing = await service.count()
            if existing:
                created[entity] = 0
                page = await service.list(limit=1000)
                ids_by_name[entity] = {r[display]: r["id"] for r in page.records}
                continue
            ids_by_name[entity] = {}
            for record in data[entity]:
                values = dict(record)
                then = values.pop("_then", [])  # later updates, e.g. a ticket's status changes along its state machine
                for name, f in service.entity.fields.items():
                    if f.references and isinstance(values.get(name), str):
                        values[name] = ids_by_name[f.references][values[name]]
                    if f.type.name == "currency" and isinstance(values.get(name), dict):
                        values[name] = {**values[name], "amount": Decimal(values[name]["amount"])}
                row = await service.create(values)
                for changes in then:
                    row = await service.update(row["id"], changes)
                ids_by_name[entity][row[display]] = row["id"]
            created[entity] = len(data[entity])
    return created
