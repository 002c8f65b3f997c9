"""Benchmark: `xrm import` and `xrm export` of a large CSV vs PostgreSQL's COPY.

    .venv/bin/python bench/import_export.py [--rows 1000000] [--sample 100000] [--profile 50000] [--keep]

Creates entity "bench_import" (name text required, city text, quantity
integer, price decimal(12,2), signed_on date, stage select, region select)
through SchemaService and writes a CSV of --rows deterministic rows
(random.Random(42)): about a third of the dates in German format (31.12.2021),
some cells empty, region = one of 10 options in turn. Then:

  COPY (plain table)          asyncpg copy_to_table of the file into a plain table
                              with the same columns (+ id uuid primary key default
                              gen_random_uuid()), DateStyle ISO, DMY so German
                              dates read: the floor, and the baseline of the ratios
  COPY (entity table shape)   the same into CREATE TABLE ... (LIKE bench_import
                              INCLUDING ALL): checks, generated search column, indexes
  xrm import (CLI)            `xrm import bench_import FILE --json` in a child process:
                              counting the rows for the progress bar, coercion,
                              validation, create_many per chunk of 500 with outbox
                              events; wall time, CPU time and peak memory of the child
    of which import_file      the import's own time from its report (no start-up, no count)
      reading + coercion      in this process, no database, on the first --sample rows:
      validation              the importer reading and coercing the cells
                              (Importer._prepare), then the records' JSON Schema
                              validation as create_many runs it: the Python shares
  COPY ... TO (export floor)  COPY (SELECT ... ORDER BY created_at, id) TO STDOUT into a file
  xrm export                  `xrm export bench_import --format csv|jsonl -o FILE`
                              in a child process, all rows; and with --where
                              region=<one of 10> (a tenth of the rows) and one
                              row, to show that peak memory does not grow with the rows

The script checks the row counts, that the imported values equal the COPY'd
ones (count, sums, min/max of every column), and the lines of every export.
--profile N runs import_file in-process on the first N rows under cProfile
and prints where the time goes. Uses a throwaway embedded PostgreSQL, or a
fresh database on XRM_DATABASE_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import csv
import datetime as dt
import json
import os
import pstats
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import ChildResult, bench_server, checkpoint, fmt_rate, fmt_ratio, fmt_seconds, print_table, run_child, timed  # noqa: E402

from xrm.db.database import Database  # noqa: E402
from xrm.records.principal import SYSTEM_PRINCIPAL  # noqa: E402
from xrm.registry import Registry  # noqa: E402

ENTITY = "bench_import"
STAGES = ["lead", "qualified", "proposal", "negotiation", "won", "lost"]
REGIONS = ["north", "south", "east", "west", "centre", "alps", "coast", "islands", "lakes", "plains"]


def document(name: str) -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "x-xrm": {"name": name, "label": {"en": "Bench import"}},
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "maxLength": 200},
            "city": {"type": "string", "maxLength": 100},
            "quantity": {"type": "integer", "minimum": 0},
            "price": {"type": "number", "minimum": 0, "x-xrm": {"precision": 12, "scale": 2}},
            "signed_on": {"type": "string", "format": "date"},
            "stage": {"type": "string", "enum": STAGES},
            "region": {"type": "string", "enum": REGIONS},
        },
    }


COLUMNS = list(document(ENTITY)["properties"])
RAW_TYPES = {"name": "text NOT NULL", "city": "text", "quantity": "bigint", "price": "numeric(12, 2)", "signed_on": "date", "stage": "text", "region": "text"}
FIRST = ["Anna", "Ben", "Clara", "David", "Eva", "Felix", "Greta", "Hugo", "Ida", "Jonas", "Klara", "Luis"]
LAST = ["Meyer", "Schmidt", "Novak", "Rossi", "Dubois", "Smith", "Jansen", "Kowalski", "Berg", "Lund"]
CITIES = ["Berlin", "Hamburg", "München", "Köln", "Wien", "Zürich", "Leipzig", "Graz", "Basel", "Dresden"]


def write_csv(path: Path, rows: int) -> None:
    rng = random.Random(42)
    start = dt.date(2015, 1, 1)
    with open(path, "w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        for i in range(rows):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            quantity = "" if rng.random() < 0.05 else str(rng.randrange(0, 10_000))
            price = "" if rng.random() < 0.1 else f"{rng.randrange(0, 100_000_00) / 100:.2f}"
            day = start + dt.timedelta(days=rng.randrange(0, 3650))
            roll = rng.random()
            signed_on = "" if roll < 0.1 else day.strftime("%d.%m.%Y") if roll < 0.4 else day.isoformat()
            writer.writerow([f"{first} {last} {i}", rng.choice(CITIES), quantity, price, signed_on, rng.choice(STAGES), REGIONS[i % 10]])


def summary_sql(table: str) -> str:
    """One row that changes if any imported value differs from the COPY'd one."""
    return (
        f"SELECT count(*), count(city), count(quantity), sum(quantity), count(price), sum(price), "
        f"count(signed_on), min(signed_on), max(signed_on), sum(signed_on - date '2000-01-01'), "
        f"sum(length(name)), sum(length(city)), count(DISTINCT stage), sum(hashtext(stage)::bigint), "
        f"sum(hashtext(region)::bigint) FROM {table}"
    )


def xrm_command() -> list[str]:
    script = Path(sys.executable).parent / "xrm"
    return [str(script)] if script.exists() else [sys.executable, "-m", "xrm.cli"]


def run_xrm(arguments: list[str], env: dict[str, str], work: Path, name: str) -> tuple[ChildResult, str]:
    out_path, err_path = work / f"{name}.out", work / f"{name}.err"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        result = run_child(xrm_command() + arguments, env=env, stdout=out, stderr=err)
    if result.returncode != 0:
        raise SystemExit(f"xrm {' '.join(arguments)} failed ({result.returncode}):\n{err_path.read_text()[-3000:]}\n{out_path.read_text()[-2000:]}")
    return result, out_path.read_text()


def count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))


def head_of(source: Path, rows: int, target: Path) -> Path:
    """The header and the first `rows` data rows of `source` (no quoted line breaks in ours)."""
    with open(source, encoding="utf-8") as src, open(target, "w", encoding="utf-8") as dst:
        for i, line in enumerate(src):
            if i > rows:
                break
            dst.write(line)
    return target


def python_shares(db: Database, registry: Registry, sample: Path) -> tuple[float, float, int] | None:
    """Seconds for reading + coercing the sample's cells the importer's way, and for
    validating the records as create_many does; no database. Uses the importer's
    internals (Importer._map_header/_prepare): None when they have changed."""
    from xrm.transfer.importer import Importer
    from xrm.transfer.sources import open_source

    try:
        importer = Importer(db, registry, ENTITY)
        source = open_source(sample)
        try:
            started = time.perf_counter()
            importer.mapper.exclusive = True
            importer._map_header(source)
            prepared = [importer._prepare(number, raw, source.columns) for number, raw in source.rows()]
            read = time.perf_counter() - started
        finally:
            source.close()
        records = [row.values for row in prepared if row is not None and not row.errors]
    except (AttributeError, TypeError) as error:
        print(f"  (skipping the Python shares: the importer's internals changed: {error})")
        return None
    validator = registry.get(ENTITY).validator
    started = time.perf_counter()
    for values in records:
        problems = validator.problems(validator.to_json_form(values))
        assert not problems, problems
    return read, time.perf_counter() - started, len(records)


async def profile_import(db: Database, source: Path, rows: int, work: Path) -> None:
    """import_file on the first `rows` rows, in this process, under cProfile."""
    from xrm.schema.service import SchemaService
    from xrm.transfer.importer import import_file

    name = "bench_profile"
    await SchemaService(db).apply([document(name)], principal=SYSTEM_PRINCIPAL)
    registry = await Registry().load(db)
    sample = head_of(source, rows, work / "profile.csv")
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    report = await import_file(db, registry, name, sample)
    profiler.disable()
    seconds = time.perf_counter() - started
    assert report.created == rows and report.skipped == 0, report.as_dict()
    print(f"\nprofile: import_file of {rows:,} rows in-process, {seconds:.1f} s under cProfile ({rows / seconds:,.0f} rows/s)")
    stats = pstats.Stats(profiler)
    stats.sort_stats("cumulative").print_stats(30)
    stats.sort_stats("tottime").print_stats(20)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows of the CSV (default 1000000)")
    parser.add_argument("--sample", type=int, default=100_000, help="rows for the no-database Python shares of the import (default 100000)")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="also profile import_file on the first N rows (default off)")
    parser.add_argument("--keep", action="store_true", help="keep the generated and exported files (prints the folder)")
    args = parser.parse_args()
    tenth = len(range(0, args.rows, 10))  # rows with region REGIONS[0]

    work = Path(tempfile.mkdtemp(prefix="xrm-bench-io-"))
    try:
        source = work / "bench_import.csv"
        seconds = time.perf_counter()
        write_csv(source, args.rows)
        print(f"wrote {args.rows:,} rows to {source} ({source.stat().st_size / 1e6:,.0f} MB) in {time.perf_counter() - seconds:.1f} s")

        async with bench_server() as server:
            print(f"server: PostgreSQL {server.version}, {server.description}")
            env = {**os.environ, "XRM_DATABASE_URL": server.uri, "XRM_DATA_DIR": str(work / "data")}
            db = await Database(server.uri).open()
            try:
                from xrm.schema.service import SchemaService

                await SchemaService(db).apply([document(ENTITY)], principal=SYSTEM_PRINCIPAL)
                table = (await Registry().load(db)).get(ENTITY).table
                imports: list[tuple[str, int, float, ChildResult | None]] = []
                exports: list[tuple[str, int, float, ChildResult | None, int]] = []

                # -- import baselines: COPY the file
                async with db.connection() as connection:
                    body = ", ".join(f"{c} {RAW_TYPES[c]}" for c in COLUMNS)
                    await connection.execute(f"CREATE TABLE raw_copy (id uuid PRIMARY KEY DEFAULT gen_random_uuid(), {body})")
                    await connection.execute(f"CREATE TABLE raw_like (LIKE {table} INCLUDING ALL)")
                    await connection.execute("SET DateStyle = 'ISO, DMY'")
                    for target, label in (("raw_copy", "COPY (plain table)"), ("raw_like", "COPY (entity table shape)")):
                        await checkpoint(connection)
                        seconds, _ = await timed(connection.copy_to_table(target, source=source, columns=COLUMNS, format="csv", header=True))
                        assert await connection.fetchval(f"SELECT count(*) FROM {target}") == args.rows
                        imports.append((label, args.rows, seconds, None))
                        print(f"  {label}: {seconds:.1f} s", flush=True)
                    await connection.execute("RESET DateStyle")
                    await checkpoint(connection)

                # -- xrm import, the CLI in a child process
                result, output = run_xrm(["import", ENTITY, str(source), "--json"], env, work, "import")
                report = json.loads(output)
                assert report["created"] == args.rows and report["skipped"] == 0, {k: report[k] for k in ("rows", "created", "skipped", "errors")}
                imports.append(("xrm import (CLI, wall)", args.rows, result.seconds, result))
                imports.append(("  of which import_file", args.rows, report["seconds"], None))
                print(f"  xrm import: {result.seconds:.1f} s (import_file {report['seconds']:.1f} s)", flush=True)
                sample_rows = min(args.sample, args.rows)
                shares = python_shares(db, await Registry().load(db), head_of(source, sample_rows, work / "sample.csv"))
                if shares is not None:
                    read, validation, checked = shares
                    assert checked == sample_rows, checked
                    imports.append(("    reading + coercion (no DB)", sample_rows, read, None))
                    imports.append(("    validation (no DB)", sample_rows, validation, None))
                async with db.connection() as connection:
                    assert await connection.fetchval(f"SELECT count(*) FROM {table}") == args.rows
                    assert await connection.fetchval("SELECT count(*) FROM xrm_sys.outbox WHERE entity = $1", ENTITY) == args.rows
                    copied, imported = await connection.fetchrow(summary_sql("raw_copy")), await connection.fetchrow(summary_sql(table))
                    assert tuple(copied) == tuple(imported), (copied, imported)
                    await connection.execute("VACUUM ANALYZE")
                    await checkpoint(connection)

                # -- export floor: COPY ... TO in the export's order
                columns = ", ".join(["id", *COLUMNS])
                target = work / "copy_out.csv"
                async with db.connection() as connection:
                    seconds, _ = await timed(connection.copy_from_query(
                        f"SELECT {columns} FROM {table} WHERE deleted_at IS NULL ORDER BY created_at, id",
                        output=target, format="csv", header=True))
                assert count_lines(target) == args.rows + 1
                exports.append(("COPY (SELECT ...) TO file", args.rows, seconds, None, target.stat().st_size))
                print(f"  COPY TO: {seconds:.1f} s", flush=True)

                # -- xrm export, the CLI in a child process
                with open(source, encoding="utf-8") as f:
                    f.readline()
                    one_name = next(csv.reader([f.readline()]))[0]
                runs = [
                    ("csv", [], args.rows, f"all {args.rows:,} rows"),
                    ("jsonl", [], args.rows, f"all {args.rows:,} rows"),
                    ("csv", ["--where", f"region={REGIONS[0]}"], tenth, f"region={REGIONS[0]}: {tenth:,} rows"),
                    ("jsonl", ["--where", f"region={REGIONS[0]}"], tenth, f"region={REGIONS[0]}: {tenth:,} rows"),
                    ("csv", ["--where", f"name={one_name}"], 1, "one row (start-up floor)"),
                ]
                for index, (fmt, where, expected, what) in enumerate(runs):
                    target = work / f"export-{index}.{fmt}"
                    result, _ = run_xrm(["export", ENTITY, "--format", fmt, "-o", str(target), *where], env, work, f"export-{index}")
                    lines = count_lines(target)
                    assert lines == expected + (1 if fmt == "csv" else 0), (what, fmt, lines, expected)
                    exports.append((f"xrm export {fmt}, {what}", expected, result.seconds, result, target.stat().st_size))
                    print(f"  export {fmt} {what}: {result.seconds:.1f} s, peak RSS {result.max_rss_kib / 1024:.0f} MiB", flush=True)

                if args.profile:
                    await profile_import(db, source, min(args.profile, args.rows), work)
            finally:
                await db.close()
    finally:
        if args.keep:
            print(f"files kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    def mib(result: ChildResult | None) -> str:
        return "" if result is None else f"{result.max_rss_kib / 1024:,.0f}"

    def cpu(result: ChildResult | None) -> str:
        return "" if result is None else fmt_seconds(result.cpu_seconds)

    baseline = imports[0][2] / imports[0][1]
    print()
    print(f"import_export: {args.rows:,} rows; import ratio = time per row / COPY FROM's, export ratio = time per row / COPY TO's")
    print_table(
        ["import", "rows", "seconds", "rows/s", "vs COPY", "CPU s", "peak RSS MiB"],
        [(label, f"{n:,}", fmt_seconds(s), fmt_rate(n / s), fmt_ratio((s / n) / baseline), cpu(r), mib(r)) for label, n, s, r in imports],
    )
    baseline = exports[0][2] / exports[0][1]
    print()
    print_table(
        ["export", "rows", "seconds", "rows/s", "vs COPY", "MB", "CPU s", "peak RSS MiB"],
        [
            (label, f"{n:,}", fmt_seconds(s), fmt_rate(n / s), fmt_ratio((s / n) / baseline) if n > 1 else "", f"{size / 1e6:,.1f}", cpu(r), mib(r))
            for label, n, s, r, size in exports
        ],
    )


if __name__ == "__main__":
    asyncio.run(main())
