"""Evaluation of the assistant's built-in planner over the demo data: accuracy per kind, citation precision, leaks, latency.

Loads the demo (`xrm demo --seed 7`) into a fresh database, indexes it, then
asks every question of bench/assistant_questions.json as its user and
compares the answer's value with the gold answer, computed by the question's
SQL straight on the tables (no xrm code involved):

- accuracy: the value equals the gold (numbers to the cent; names as a set,
  or in order for top-N; a search question counts when one of its gold
  records is cited);
- citation precision: of the records cited, the share among the question's
  gold records (`ids_sql`);
- leaks: every question is asked again by the demo's restricted users
  (anna.vertrieb, sales; ben.service, service); a cited record they cannot
  open through RecordService is a leak. Must be 0;
- latency: p50/p95 of the whole ask (planner, tools, audit).

    .venv/bin/python bench/assistant_eval.py [--only KIND] [--verbose]
"""

from __future__ import annotations

import argparse
import asyncio
import decimal
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import _common
from _common import bench_server, print_table

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = Path(__file__).with_name("assistant_questions.json")
RESTRICTED = ("anna.vertrieb", "ben.service")


def _same_number(a: Any, b: Any) -> bool:
    try:
        return abs(decimal.Decimal(str(a)) - decimal.Decimal(str(b))) < decimal.Decimal("0.01")
    except (decimal.InvalidOperation, TypeError):
        return False


def correct(gold_type: str, gold: list[tuple[Any, ...]], value: Any, cited: set[str], ordered: bool) -> bool:
    if gold_type == "number":
        return bool(gold) and _same_number(gold[0][0], value)
    if gold_type == "money":  # rows (currency, amount)
        expected = {(str(c).strip(), decimal.Decimal(str(a)).quantize(decimal.Decimal("0.01"))) for c, a in gold if a is not None}
        if isinstance(value, list):
            got = {(str(v.get("currency") or "").strip(), decimal.Decimal(str(v["value"])).quantize(decimal.Decimal("0.01")))
                   for v in value if isinstance(v, dict)}
            return got == expected
        return len(expected) == 1 and _same_number(next(iter(expected))[1], value)
    if gold_type == "names":
        names = [str(row[0]) for row in gold]
        if not isinstance(value, list):
            return False
        return [str(v) for v in value] == names if ordered else set(map(str, value)) == set(names)
    if gold_type == "text":
        return bool(gold) and str(gold[0][0]) == str(value)
    if gold_type == "cites":
        return bool({str(row[0]) for row in gold} & cited)
    raise ValueError(f"unknown gold type {gold_type!r}")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", help="only questions of this kind")
    parser.add_argument("--verbose", action="store_true", help="print every question with its answer")
    args = parser.parse_args()
    if not QUESTIONS.exists():
        sys.exit(f"{QUESTIONS.name} is missing: the question set with gold SQL is not written yet (docs/assistant.md)")
    questions = json.loads(QUESTIONS.read_text(encoding="utf-8"))
    if args.only:
        questions = [q for q in questions if q["kind"] == args.only]

    from xrm.assistant.embedding import get_embedder
    from xrm.assistant.index import RecordIndex
    from xrm.assistant.service import AssistantService
    from xrm.errors import NotFound, PermissionDenied
    from xrm.records.service import RecordService
    from xrm.runtime import open_platform
    from xrm.settings import Settings

    async with bench_server() as server:
        print(f"server: PostgreSQL {server.version}, {server.description}")
        env = {**os.environ, "XRM_DATABASE_URL": server.uri, "XRM_SCHEMA_DIR": str(ROOT / "entity_schemas")}
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "xrm.cli", "demo", "--seed", "7"], env=env, check=True, capture_output=True)
        print(f"demo data loaded in {time.perf_counter() - started:.1f} s")
        os.environ.update({"XRM_DATABASE_URL": server.uri, "XRM_SCHEMA_DIR": str(ROOT / "entity_schemas"), "XRM_WORKER": "false"})
        async with open_platform(Settings.from_env()) as platform:
            embedder = get_embedder()
            started = time.perf_counter()
            result = await RecordIndex(platform.db, platform.registry, embedder).reindex()
            print(f"indexed {sum(s.embedded for s in result.values()):,} records in {time.perf_counter() - started:.1f} s")
            security = platform.security()
            principals = {name: await security.principal_for_user(name) for name in ("admin", *RESTRICTED)}
            by_kind: dict[str, list[bool]] = defaultdict(list)
            precision: list[float] = []
            latencies: list[float] = []
            leaks, failures = 0, []
            for question in questions:
                async with platform.db.connection() as connection:
                    gold = [tuple(r) for r in await connection.fetch(question["gold"]["sql"])]
                    gold_ids = ({str(r[0]) for r in await connection.fetch(question["ids_sql"])}
                                if question.get("ids_sql") else None)
                asker = principals[question.get("as", "admin")]
                answer = await AssistantService(platform.db, platform.registry, asker, platform.policy, embedder).ask(question["q"])
                latencies.append(answer.seconds)
                cited = {c.id for c in answer.citations}
                ok = correct(question["gold"]["type"], gold, answer.value, cited, question["gold"].get("ordered", False))
                by_kind[question["kind"]].append(ok)
                if gold_ids is not None and cited:
                    precision.append(len(cited & gold_ids) / len(cited))
                if not ok:
                    failures.append((question["id"], question["q"], answer.text[:160], gold[:5]))
                if args.verbose:
                    print(f"{'ok ' if ok else 'BAD'} [{question['kind']}] {question['q']}\n    {answer.text[:200]}")
                for name in RESTRICTED:
                    restricted = await AssistantService(platform.db, platform.registry, principals[name], platform.policy,
                                                        embedder).ask(question["q"])
                    latencies.append(restricted.seconds)
                    for citation in restricted.citations:
                        try:
                            await RecordService(platform.db, platform.registry, citation.entity, principals[name],
                                                platform.policy).get(citation.id)
                        except (NotFound, PermissionDenied):
                            leaks += 1
                            print(f"LEAK: {name} was shown {citation.entity} {citation.id} for {question['q']!r}")
            rows = [[kind, len(results), sum(results), f"{100 * sum(results) / len(results):.0f}%"]
                    for kind, results in sorted(by_kind.items())]
            total = [r for results in by_kind.values() for r in results]
            rows.append(["all", len(total), sum(total), f"{100 * sum(total) / max(1, len(total)):.0f}%"])
            print()
            print_table(["kind", "questions", "correct", "accuracy"], rows)
            ordered = sorted(latencies)
            print()
            print_table(["measure", "value"], [
                ["citation precision", f"{100 * sum(precision) / max(1, len(precision)):.0f}% over {len(precision)} answers"],
                ["leaks (restricted users' citations they cannot open)", str(leaks)],
                ["latency p50", f"{ordered[len(ordered) // 2] * 1000:.0f} ms"],
                ["latency p95", f"{ordered[int(len(ordered) * 0.95)] * 1000:.0f} ms"],
                ["asks", str(len(latencies))],
            ], align="lr")
            if failures:
                print("\nwrong answers:")
                for qid, q, text, gold in failures:
                    print(f"  {qid}: {q}\n     got:  {text}\n     gold: {gold}")


if __name__ == "__main__":
    _common  # noqa: B018 - imported for its sys.path and venv check
    asyncio.run(main())
