"""The Maven CRM pack: apply entity_schemas/packs/maven_crm and import the
real "CRM Sales Opportunities" CSVs with `xrm import`, in dependency order.

The CSVs are copies in tests/data/maven_crm/ (originals, with SOURCE.md, in
../shared/data/crm-sales-opportunities/); the counts and figures asserted
here are the ones SOURCE.md gives for the unedited files.
"""

from __future__ import annotations

import asyncio
import csv
import decimal
import hashlib
import io
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from xrm.cli import main
from xrm.db.database import Database
from xrm.records.principal import SYSTEM_PRINCIPAL
from xrm.records.service import RecordService
from xrm.registry import Registry
from xrm.schema.files import load_documents
from xrm.schema.service import SchemaService

ROOT = Path(__file__).resolve().parent.parent
PACK = ROOT / "entity_schemas" / "packs" / "maven_crm"
DATA = ROOT / "tests" / "data" / "maven_crm"

pytestmark = pytest.mark.skipif(not (DATA / "sales_pipeline.csv").exists(), reason=f"Maven CRM data not found in {DATA}")

# (entity, file, data rows), in the order references need.
IMPORTS = [
    ("crm_account", "accounts.csv", 85),
    ("crm_product", "products.csv", 7),
    ("crm_agent", "sales_teams.csv", 35),
    ("crm_opportunity", "sales_pipeline.csv", 8800),
]


def test_copies_match_the_checksums_in_source_md() -> None:
    table = (DATA / "SOURCE.md").read_text(encoding="utf-8")
    for _, name, rows in IMPORTS:
        line = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
        expected_md5 = re.findall(r"[0-9a-f]{32}", line)[0]
        assert hashlib.md5((DATA / name).read_bytes()).hexdigest() == expected_md5, name
        with open(DATA / name, newline="", encoding="ascii") as f:
            assert sum(1 for _ in csv.reader(f)) - 1 == rows


def test_pack_is_not_loaded_from_the_schema_folder() -> None:
    # load_documents reads *.json directly inside a folder: packs/ is opt-in.
    names = [doc["x-xrm"]["name"] for _, doc in load_documents(ROOT / "entity_schemas")]
    assert not any(name.startswith("crm_") for name in names)


async def _service(db: Database, entity: str) -> RecordService:
    return RecordService(db, await Registry().load(db), entity, SYSTEM_PRINCIPAL)


async def _all(service: RecordService) -> list[dict[str, Any]]:
    records, after = [], None
    while True:
        page = await service.list(limit=1000, after=after)
        records.extend(page.records)
        if not page.next_cursor:
            return records
        after = page.next_cursor


async def test_import_the_maven_crm_data_set(db: Database, database_uri: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    await SchemaService(db).apply([doc for _, doc in load_documents(PACK)])
    monkeypatch.setenv("XRM_DATABASE_URL", database_uri)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()

    async def xrm(*arguments: str) -> Any:
        # The CLI runs its own event loop (asyncio.run), so not on this test's loop.
        return await asyncio.to_thread(runner.invoke, main, list(arguments))

    # A dry run of the pipeline before its references exist: every row fails, nothing is written.
    dry = await xrm("import", "crm_opportunity", str(DATA / "sales_pipeline.csv"), "--dry-run", "--show-errors", "1")
    assert dry.exit_code == 1
    assert "8800 rows read, 0 would be created" in dry.output and "Dry run: nothing was written." in dry.output
    assert "row 2, column 'sales_agent': no crm_agent record is called 'Moses Frase'" in dry.output

    for entity, name, rows in IMPORTS:
        result = await xrm("import", entity, str(DATA / name))
        assert result.exit_code == 0, result.output
        assert f"{entity}: {rows} rows read, {rows} created, 0 updated, 0 not imported" in result.output
        assert (await (await _service(db, entity)).count()) == rows
        if entity == "crm_opportunity":
            # The source spells the product "GTXPro" in the pipeline, "GTX Pro" in products.csv.
            assert "column 'product': 'GTXPro' -> 'GTX Pro' (1480 rows)" in result.output
            speed = re.search(r"\(([\d.]+) s, ([\d,]+) rows/s\)", result.output)
            assert speed, result.output
            print(f"\nsales_pipeline.csv: 8,800 rows in {speed.group(1)} s ({speed.group(2)} rows/s)")

    accounts = await _service(db, "crm_account")
    opportunities = await _service(db, "crm_opportunity")
    agents = await _service(db, "crm_agent")
    products = await _service(db, "crm_product")
    account_by_id = {r["id"]: r for r in await _all(accounts)}
    product_by_id = {r["id"]: r for r in await _all(products)}
    agent_by_id = {r["id"]: r for r in await _all(agents)}

    # Self references by name, including parents that come later in the file.
    subsidiaries = {r["name"]: account_by_id[r["subsidiary_of"]]["name"] for r in account_by_id.values() if r["subsidiary_of"]}
    assert len(subsidiaries) == 15
    assert subsidiaries["Cheers"] == "Massive Dynamic" and subsidiaries["Bluth Company"] == "Acme Corporation"
    acme = next(r for r in account_by_id.values() if r["name"] == "Acme Corporation")
    assert acme["sector"] == "technolgy" and acme["year_established"] == 1996
    assert acme["revenue"] == decimal.Decimal("1100.04") and acme["employees"] == 2822
    gtx_pro = next(r for r in product_by_id.values() if r["name"] == "GTX Pro")
    assert gtx_pro["series"] == "GTX" and gtx_pro["sales_price"] == {"amount": decimal.Decimal("4821.00"), "currency": "USD"}
    agent = next(r for r in agent_by_id.values() if r["name"] == "Darcel Schlecht")
    assert agent["manager"] == "Melvin Marxen" and agent["regional_office"] == "central"

    # References resolved: blank accounts only on the 1,425 open deals.
    assert await opportunities.count(where={"account": None}) == 1425
    assert 8800 - await opportunities.count(where={"account": None}) == 8800 - 1425
    stages = {stage: await opportunities.count(where={"deal_stage": stage}) for stage in ("won", "lost", "engaging", "prospecting")}
    assert stages == {"won": 4238, "lost": 2473, "engaging": 1589, "prospecting": 500}

    # Spot check: the second data row.
    # Z063OYW0,Darcel Schlecht,GTXPro,Isdom,Won,2016-10-25,2017-03-11,4514
    (row,) = (await opportunities.list(where={"opportunity_id": "Z063OYW0"})).records
    assert agent_by_id[row["sales_agent"]]["name"] == "Darcel Schlecht"
    assert product_by_id[row["product"]]["name"] == "GTX Pro"
    assert account_by_id[row["account"]]["name"] == "Isdom"
    assert row["deal_stage"] == "won"
    assert str(row["engage_date"]) == "2016-10-25" and str(row["close_date"]) == "2017-03-11"
    assert row["close_value"] == {"amount": decimal.Decimal("4514.00"), "currency": "USD"}

    # Figures from SOURCE.md, over every imported opportunity.
    pipeline = await _all(opportunities)
    won = [r for r in pipeline if r["deal_stage"] == "won"]
    assert sum(r["close_value"]["amount"] for r in won) == 10_005_534
    assert all(r["close_value"]["amount"] == 0 for r in pipeline if r["deal_stage"] == "lost")
    assert sum(1 for r in pipeline if r["close_value"] is None) == 2089
    assert sum(1 for r in pipeline if r["engage_date"] is None) == 500
    by_product: dict[str, decimal.Decimal] = {}
    for r in won:
        name = product_by_id[r["product"]]["name"]
        by_product[name] = by_product.get(name, decimal.Decimal(0)) + r["close_value"]["amount"]
    assert by_product["GTX Pro"] == 3_510_578 and by_product["MG Special"] == 43_768
    by_manager: dict[str, decimal.Decimal] = {}
    for r in won:
        manager = agent_by_id[r["sales_agent"]]["manager"]
        by_manager[manager] = by_manager.get(manager, decimal.Decimal(0)) + r["close_value"]["amount"]
    assert by_manager["Melvin Marxen"] == 2_251_930

    # Importing the same file again with the unique key as upsert key updates in place.
    again = await xrm("import", "crm_product", str(DATA / "products.csv"), "--upsert-key", "name")
    assert again.exit_code == 0, again.output
    assert "7 rows read, 0 created, 7 updated" in again.output
    assert await products.count() == 7

    # And the export reads back: display values for references, one row per opportunity.
    exported = await xrm("export", "crm_opportunity", "--references", "display", "--where", "account=Isdom")
    assert exported.exit_code == 0, exported.output
    rows = list(csv.DictReader(io.StringIO(exported.stdout)))
    assert len(rows) == sum(1 for r in pipeline if r["account"] == row["account"])
    assert {r["account"] for r in rows} == {"Isdom"}
    assert next(r for r in rows if r["opportunity_id"] == "Z063OYW0")["product"] == "GTX Pro"
