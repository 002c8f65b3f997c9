"""The data-subject access bundle as a zip: the JSON plus one CSV per entity and the history."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from typing import Any

from ..db.database import json_dumps

__all__ = ["write_zip"]


def write_zip(bundle: dict[str, Any], path: str) -> None:
    """bundle.json, <entity>.csv (the person's and related records, with a `relation` column), history.csv."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("bundle.json", json_dumps(bundle))
        by_entity: dict[str, list[dict[str, Any]]] = {}
        for kind, key in (("subject", "subject_records"), ("related", "related_records")):
            for item in bundle[key]:
                row = {"relation": kind, "matched_by": " ".join(item["matched_by"]), **_flat(item["record"])}
                by_entity.setdefault(item["entity"], []).append(row)
        for entity, rows in by_entity.items():
            archive.writestr(f"{entity}.csv", _csv(rows))
        history = [
            {"entity": item["entity"], "record_id": item["id"], **_flat({k: v for k, v in entry.items() if k != "record_id"})}
            for item in bundle["subject_records"] for entry in item["history"]
        ]
        archive.writestr("history.csv", _csv(history))


def _flat(record: dict[str, Any]) -> dict[str, Any]:
    """Nested values (currency, lists, changes) as compact JSON text in their cell."""
    return {k: json.loads(json_dumps(v)) if not isinstance(v, (dict, list)) else json_dumps(v) for k, v in record.items()}


def _csv(rows: list[dict[str, Any]]) -> str:
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns or ["empty"])
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
