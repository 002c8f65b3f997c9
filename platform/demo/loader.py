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


async def load_demo_data(db: Database, registry: Registry) -> dict[str, int]:
    """Insert the demo records once (skipped per entity if it has records); return counts."""
    text = resources.files("xrm.demo").joinpath("data.json").read_text(encoding="utf-8")
    data: dict[str, list[dict[str, Any]]] = json.loads(text, parse_float=Decimal)
    created: dict[str, int] = {}
    ids_by_name: dict[str, dict[str, Any]] = {}
    async with db.transaction():
        for entity in ORDER:
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
                for name, f in service.entity.fields.items():
                    if f.references and isinstance(values.get(name), str):
                        values[name] = ids_by_name[f.references][values[name]]
                for key in ("annual_revenue", "amount"):
                    if isinstance(values.get(key), dict):
                        values[key] = {**values[key], "amount": Decimal(values[key]["amount"])}
                row = await service.create(values)
                ids_by_name[entity][row[display]] = row["id"]
            created[entity] = len(data[entity])
    return created
