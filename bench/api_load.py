"""Benchmark: the REST API under load from a second process vs the same SQL through pgbench.

    .venv/bin/python bench/api_load.py [--rows 60000] [--seconds 15] [--connections 8]
                                       [--deep 50000] [--client auto|wrk|python|httpx]
                                       [--no-access-log] [--only get,list,first,deep,create] [--show-sql]

Applies the shipped entity_schemas/ (account, contact, deal), seeds --rows
deals through RecordService.create_many, creates an admin user and an API
token, and starts `xrm serve` as a separate process on a free loopback port.
Then, for --seconds each, a load generator in another process (wrk when it is
installed, else a Python client on asyncio streams in a child process;
--client httpx for httpx.AsyncClient, which needs several times the CPU) keeps --connections
connections busy with:

  GET by id              GET /api/v1/deal/<id>, a random id of the seeded set
  filtered list          GET /api/v1/deal?stage=negotiation&sort=-amount&limit=50
                         (stage has an index, from deal.json; amount has none)
  page 1                 GET /api/v1/deal?limit=50 (default order created_at, id)
  page after <deep>      the same with after=<cursor after row <deep>>, the
                         cursor taken from walking the API; keyset paging, so it
                         should cost what page 1 costs
  POST create            POST /api/v1/deal with a new record each time

Baseline: pgbench with as many clients for as long, against the same
database, running the SQL of the same request. That SQL is captured from the
app itself: each request is sent to xrm.app.create_app in this process
(Litestar's test client) and every statement it runs through asyncpg is
recorded, BEGIN/COMMIT included; values are inlined with their parameter
types, GET picks a random seeded id with \\set, create a new id. Two scripts
per request: the query alone (the ratio's baseline) and the whole request,
i.e. also the API-token check every request runs first (an UPDATE of
xrm_sys.api_token). --show-sql prints them. Client, server and PostgreSQL
share the machine's cores. Uses a throwaway embedded PostgreSQL, or a fresh
database on XRM_DATABASE_URL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import decimal
import hashlib
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (  # noqa: E402
    bench_server,
    fmt_rate,
    fmt_ratio,
    free_port,
    percentile,
    pg_program,
    print_table,
    run_child,
)

ROOT = Path(__file__).resolve().parent.parent
ENTITY = "deal"
STAGES = ["prospecting", "qualification", "negotiation", "won", "lost"]
CURRENCIES = ["EUR", "EUR", "EUR", "USD", "CHF"]
WORDS = ["Renewal", "Upsell", "Pilot", "Rollout", "Licence", "Support", "Migration", "Training", "Audit", "Expansion"]
TOKEN_LABEL = "bench api_load"


def record_id(n: int) -> uuid.UUID:
    """Seeded record n's id; PostgreSQL computes the same as md5(n::text)::uuid."""
    return uuid.UUID(hashlib.md5(str(n).encode()).hexdigest())


def seed_record(n: int, rng: random.Random) -> dict[str, Any]:
    record: dict[str, Any] = {
        "id": str(record_id(n)),
        "title": f"{rng.choice(WORDS)} {n}",
        "stage": rng.choice(STAGES),
        "probability": rng.randrange(0, 101),
        "close_date": (dt.date(2024, 1, 1) + dt.timedelta(days=rng.randrange(0, 1000))).isoformat(),
    }
    if rng.random() < 0.9:
        record["amount"] = {"amount": decimal.Decimal(rng.randrange(100_00, 5_000_000_00)).scaleb(-2), "currency": rng.choice(CURRENCIES)}
    return record


# -- the SQL of one request, as pgbench scripts ----------------------------------------


@dataclass
class Statement:
    sql: str
    args: tuple[Any, ...]


_SKIPPED = re.compile(r"\s*(SET|RESET|SELECT pg_advisory_unlock_all)\b", re.IGNORECASE)  # session set-up, pool reset


@contextlib.contextmanager
def captured_sql() -> Iterator[list[Statement]]:
    """Record every statement run on asyncpg connections (pool proxies too) in this
    process while the block runs, BEGIN/COMMIT included (asyncpg sends them through execute)."""
    import asyncpg

    calls: list[Statement] = []
    names = ("fetch", "fetchrow", "fetchval", "execute", "executemany")
    originals = {name: getattr(asyncpg.Connection, name) for name in names}

    def wrap(name: str, original: Any) -> Any:
        async def wrapper(self: Any, query: str, *args: Any, **kwargs: Any) -> Any:
            if not _SKIPPED.match(query):
                if name == "executemany":
                    calls.extend(Statement(query, tuple(a)) for a in args[0])
                else:
                    calls.append(Statement(query, args))
            return await original(self, query, *args, **kwargs)

        return wrapper

    for name, original in originals.items():
        setattr(asyncpg.Connection, name, wrap(name, original))
    try:
        yield calls
    finally:
        for name, original in originals.items():
            setattr(asyncpg.Connection, name, original)


def _quoted(text: str) -> str:
    """A string constant that pgbench leaves alone: it would read ':name' as a variable."""
    body = "'" + text.replace("'", "''") + "'"
    if not re.search(r":[A-Za-z0-9_]", text):
        return body
    marker = "~C~"
    while marker in text:
        marker = "~" + marker + "~"
    return f"replace({body.replace(':', marker)}, '{marker}', chr(58))"


def sql_literal(value: Any, pg_type: Any) -> str:
    """`value` as a constant of the parameter's type (an asyncpg Type: name, kind, schema)."""
    from xrm.db.database import json_dumps

    cast = f"{pg_type.schema}.{pg_type.name}"
    if value is None:
        return f"NULL::{cast}"
    if pg_type.kind == "array":
        element = type(pg_type)(0, pg_type.name.removesuffix("[]"), "scalar", pg_type.schema)
        return f"ARRAY[{', '.join(sql_literal(v, element) for v in value)}]::{cast}" if value else f"'{{}}'::{cast}"
    if pg_type.name in ("json", "jsonb"):
        return f"({_quoted(value if isinstance(value, str) else json_dumps(value))})::{cast}"
    if isinstance(value, bool):
        return f"{'true' if value else 'false'}::{cast}"
    if isinstance(value, (int, float, decimal.Decimal)):
        return f"{value}::{cast}"
    if isinstance(value, bytes):
        return f"'\\x{value.hex()}'::{cast}"
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        utc = value.astimezone(dt.timezone.utc)
        seconds = utc.second + utc.microsecond / 1_000_000
        return f"make_timestamptz({utc.year}, {utc.month}, {utc.day}, {utc.hour}, {utc.minute}, {seconds!r}, 'UTC')::{cast}"
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return f"({_quoted(value.isoformat())})::{cast}"
    return f"({_quoted(str(value))})::{cast}"


async def script(connection: Any, statements: list[Statement], override: Any = None) -> str:
    """A pgbench script running `statements` with their values inlined.

    `override(value)` may return SQL to use instead of a value (e.g. a random id)."""
    lines = []
    for statement in statements:
        if not statement.args:
            lines.append(statement.sql.strip().rstrip(";") + ";")
            continue
        types = (await connection.prepare(statement.sql)).get_parameters()

        def replace(match: re.Match[str], statement: Statement = statement, types: Any = types) -> str:
            n = int(match.group(1))
            value = statement.args[n - 1]
            custom = override(value) if override else None
            return "(" + (custom if custom is not None else sql_literal(value, types[n - 1])) + ")"

        text = re.sub(r"\$(\d+)", replace, statement.sql).strip().rstrip(";")
        stray = set(re.findall(r"(?<![:\w]):([A-Za-z_]\w*)", text)) - {"n"}
        assert not stray, f"pgbench would read these as variables: {stray}\n{text}"
        lines.append(text + ";")
    return "\n".join(lines)


@dataclass
class Phase:
    key: str
    label: str
    method: str
    path: str
    body: dict[str, Any] | None = None
    query_sql: str = ""
    """pgbench script: the request's SQL without the token check."""
    request_sql: str = ""
    """pgbench script: all SQL of one request, token check included."""
    expected_ids: list[str] = field(default_factory=list)


# -- load generators ------------------------------------------------------------------


@dataclass
class LoadResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int
    client_cpu: float
    server_cpu: float = 0.0
    total_cpu: float = 0.0

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def post_body(rng: random.Random, n: int) -> dict[str, Any]:
    return {
        "title": f"Load test deal {n}",
        "stage": rng.choice(STAGES),
        "amount": {"amount": round(rng.randrange(100_00, 5_000_000_00) / 100, 2), "currency": "EUR"},
        "probability": rng.randrange(0, 101),
        "close_date": (dt.date(2025, 1, 1) + dt.timedelta(days=rng.randrange(0, 700))).isoformat(),
    }


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response (Content-Length or chunked body); return its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = re.search(rb"\r\ncontent-length:[ \t]*(\d+)", head, re.IGNORECASE)
    if length:
        await reader.readexactly(int(length.group(1)))
    elif re.search(rb"\r\ntransfer-encoding:[ \t]*chunked", head, re.IGNORECASE):
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def python_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """The load generator without wrk: a fixed number of keep-alive connections, one request at a time each.

    client "python": HTTP/1.1 written by hand on asyncio streams (cheap, so the
    client takes little of the CPU the server needs); "httpx": httpx.AsyncClient.
    """
    connections, seconds, kind = spec["connections"], spec["seconds"], spec["kind"]
    ids = Path(spec["ids_file"]).read_text().split() if kind == "get" else []
    latencies: list[float] = []
    errors = 0
    started = time.perf_counter()
    deadline = started + seconds

    def target(rng: random.Random, n: int) -> tuple[str, str, bytes | None]:
        if kind == "get":
            return "GET", spec["path"] + rng.choice(ids), None
        if kind == "post":
            return "POST", spec["path"], json.dumps(post_body(rng, n)).encode()
        return "GET", spec["path"], None

    if spec["client"] == "httpx":
        import httpx

        headers = {"Authorization": f"Bearer {spec['token']}", "Accept": "application/json", "Content-Type": "application/json"}
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        async with httpx.AsyncClient(base_url=spec["base"], headers=headers, limits=limits, timeout=60) as client:

            async def one_connection(index: int) -> None:
                nonlocal errors
                rng, n = random.Random(index), 0
                while time.perf_counter() < deadline:
                    n += 1
                    method, path, body = target(rng, index * 1_000_000 + n)
                    t0 = time.perf_counter()
                    response = await client.request(method, path, content=body)
                    await response.aread()
                    latencies.append(time.perf_counter() - t0)
                    errors += response.status_code >= 400

            await asyncio.gather(*(one_connection(i) for i in range(connections)))
    else:
        host, port = spec["base"].removeprefix("http://").split(":")
        fixed = f"Host: {host}:{port}\r\nAuthorization: Bearer {spec['token']}\r\nAccept: application/json\r\n"

        async def one_connection(index: int) -> None:
            nonlocal errors
            reader, writer = await asyncio.open_connection(host, int(port))
            rng, n = random.Random(index), 0
            try:
                while time.perf_counter() < deadline:
                    n += 1
                    method, path, body = target(rng, index * 1_000_000 + n)
                    request = f"{method} {path} HTTP/1.1\r\n{fixed}"
                    if body is None:
                        data = (request + "\r\n").encode()
                    else:
                        data = (request + f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
                    t0 = time.perf_counter()
                    writer.write(data)
                    status = await _read_response(reader)
                    latencies.append(time.perf_counter() - t0)
                    errors += status >= 400
            finally:
                writer.close()

        await asyncio.gather(*(one_connection(i) for i in range(connections)))
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {
        "requests": len(latencies),
        "seconds": elapsed,
        "p50_ms": percentile(latencies, 0.50) * 1000,
        "p99_ms": percentile(latencies, 0.99) * 1000,
        "errors": errors,
    }


WRK_SCRIPT = r"""
local kind = "%(kind)s"
local prefix = "%(path)s"
local ids = {}
local counter = 0
wrk.headers["Authorization"] = "Bearer %(token)s"
wrk.headers["Accept"] = "application/json"
local stages = {"prospecting", "qualification", "negotiation", "won", "lost"}
local post_headers = {["Authorization"] = "Bearer %(token)s", ["Accept"] = "application/json", ["Content-Type"] = "application/json"}

init = function(args)
  if kind == "get" then
    for line in io.lines("%(ids_file)s") do ids[#ids + 1] = line end
  end
  math.randomseed(os.time())
end

request = function()
  counter = counter + 1
  if kind == "get" then
    return wrk.format("GET", prefix .. ids[math.random(#ids)])
  elseif kind == "post" then
    local body = string.format(
      '{"title": "Load test deal %%d", "stage": "%%s", "amount": {"amount": %%d.%%02d, "currency": "EUR"}, "probability": %%d, "close_date": "2025-%%02d-%%02d"}',
      counter, stages[math.random(#stages)], math.random(100, 5000000), math.random(0, 99),
      math.random(0, 100), math.random(1, 12), math.random(1, 28))
    return wrk.format("POST", prefix, post_headers, body)
  else
    return wrk.format("GET", prefix)
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("WRKRESULT %%d %%d %%d %%d %%d %%d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.status, e.connect + e.read + e.write + e.timeout))
end
"""


def _cpu_ticks(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _busy_seconds() -> float:
    """CPU seconds all cores spent not idle, since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def run_load(phase: Phase, spec: dict[str, Any], client: str, server_pid: int, work: Path) -> LoadResult:
    cpu0, busy0 = _cpu_ticks(server_pid), _busy_seconds()
    output = work / f"load-{phase.key}.out"
    if client == "wrk":
        script = work / f"{phase.key}.lua"
        script.write_text(WRK_SCRIPT % {**spec, "kind": spec["kind"]})
        command = [
            shutil.which("wrk") or "wrk", "-t1", f"-c{spec['connections']}", f"-d{spec['seconds']}s",
            "--timeout", "60s", "-s", str(script), spec["base"] + (spec["path"] if spec["kind"] == "path" else "/"),
        ]
    else:
        spec_file = work / f"{phase.key}.json"
        spec_file.write_text(json.dumps({**spec, "client": client}))
        command = [sys.executable, str(Path(__file__).resolve()), "--worker", str(spec_file)]
    with open(output, "w") as out:
        child = run_child(command, stdout=out, stderr=subprocess.STDOUT, timeout=spec["seconds"] + 120)
    server_cpu, total_cpu = _cpu_ticks(server_pid) - cpu0, _busy_seconds() - busy0
    text = output.read_text()
    if child.returncode != 0:
        raise SystemExit(f"load generator failed ({' '.join(command)}):\n{text}")
    if client == "wrk":
        match = re.search(r"WRKRESULT (\d+) (\d+) (\d+) (\d+) (\d+) (\d+)", text)
        if not match:
            raise SystemExit(f"no result from wrk:\n{text}")
        requests, micros, p50, p99, status_errors, socket_errors = map(int, match.groups())
        result = LoadResult(requests, micros / 1e6, p50 / 1000, p99 / 1000, status_errors + socket_errors, child.cpu_seconds)
    else:
        data = json.loads(text.strip().splitlines()[-1])
        result = LoadResult(data["requests"], data["seconds"], data["p50_ms"], data["p99_ms"], data["errors"], child.cpu_seconds)
    result.server_cpu, result.total_cpu = server_cpu, total_cpu
    return result


@dataclass
class PgbenchResult:
    tps: float
    transactions: int
    p50_ms: float
    p99_ms: float


def run_pgbench(pgbench: str, uri: str, script: str, *, name: str, clients: int, seconds: int, work: Path) -> PgbenchResult:
    script_file = work / f"{name}.sql"
    script_file.write_text(script + "\n")
    logs = work / f"log-{name}"
    logs.mkdir()
    duration = ["-T", str(seconds)] if seconds else ["-t", "3"]  # 0: a check, three transactions
    command = [
        pgbench, "-n", "-M", "prepared", *duration, "-c", str(clients), "-j", str(clients),
        "-l", f"--log-prefix={logs}/tx", "-f", str(script_file), uri,
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=seconds + 120)
    if completed.returncode != 0 or re.search(r"number of failed transactions: [1-9]", completed.stdout):
        raise SystemExit(f"pgbench failed for {name}:\n{script}\n{completed.stdout}\n{completed.stderr}")
    tps = float(re.search(r"tps = ([\d.]+)", completed.stdout).group(1))  # type: ignore[union-attr]
    transactions = int(re.search(r"number of transactions actually processed: (\d+)", completed.stdout).group(1))  # type: ignore[union-attr]
    latencies = []
    for log in logs.iterdir():
        for line in log.read_text().splitlines():
            latencies.append(int(line.split()[2]) / 1000)  # client tx_no latency_us ...
    latencies.sort()
    return PgbenchResult(tps, transactions, percentile(latencies, 0.5), percentile(latencies, 0.99))


# -- the run -------------------------------------------------------------------


async def capture_requests(uri: str, token: str, phases: list[Phase], work: Path) -> dict[str, tuple[list[Statement], Any]]:
    """Each phase's request sent once to the app in this process: the SQL it ran and its answer.

    The app is xrm.app.create_app on the bench database (Litestar's test client);
    each request goes twice and the second run counts (the first may warm caches)."""
    import logging

    from litestar.testing import AsyncTestClient

    from xrm.app import create_app

    logging.disable(logging.INFO)  # the app's and httpx's request logs
    from xrm.settings import Settings

    settings = Settings.from_env({
        "XRM_DATABASE_URL": uri, "XRM_SCHEMA_DIR": str(ROOT / "entity_schemas"), "XRM_DATA_DIR": str(work / "data"),
    })
    captured: dict[str, tuple[list[Statement], Any]] = {}
    headers = {"Authorization": f"Bearer {token}"}
    async with AsyncTestClient(create_app(settings)) as client:
        for phase in phases:
            for _ in range(2):
                with captured_sql() as calls:
                    response = await client.request(phase.method, phase.path, json=phase.body, headers=headers)
                assert response.status_code < 400, (phase.key, response.status_code, response.text)
            captured[phase.key] = (calls, response.json())
    return captured


async def build_scripts(db: Any, token: str, phases: list[Phase], captured: dict[str, tuple[list[Statement], Any]], rows: int) -> None:
    """Fill each phase's pgbench scripts from the SQL its request ran."""
    from xrm.auth import UserService

    with captured_sql() as token_calls:
        principal = await UserService(db).principal_for_token(token)
    assert principal is not None
    token_sql = [c.sql for c in token_calls]
    async with db.connection() as connection:
        for phase in phases:
            calls, answer = captured[phase.key]
            if [c.sql for c in calls[: len(token_sql)]] == token_sql:
                query = calls[len(token_sql):]
            else:  # the check is not first: leave out its statements wherever they are
                query = [c for c in calls if c.sql not in token_sql or re.match(r"\s*(BEGIN|COMMIT|ROLLBACK)", c.sql)]
            override = None
            prefix = ""
            if phase.key == "get":
                prefix = f"\\set n random(1, {rows})\n"
                override = lambda v: "md5(:n::text)::uuid" if v == record_id(1) else None  # noqa: E731
            elif phase.key == "create":
                created = uuid.UUID(answer["id"])

                def override(value: Any, created: uuid.UUID = created) -> str | None:
                    # The new rows (a list of column dicts for jsonb_to_recordset): the same values, a new id.
                    if isinstance(value, (list, tuple)) and value and isinstance(value[0], dict) and value[0].get("id") == str(created):
                        from xrm.db.database import json_dumps

                        row = {k: v for k, v in json.loads(json_dumps(value[0])).items() if k != "id"}
                        return f"jsonb_build_array(({_quoted(json.dumps(row))})::jsonb || jsonb_build_object('id', gen_random_uuid()))"
                    if value == created:
                        return "gen_random_uuid()"  # e.g. the record id an audit row names
                    return None
            else:
                phase.expected_ids = [r["id"] for r in answer["records"]]
            phase.query_sql = prefix + await script(connection, query, override)
            phase.request_sql = prefix + await script(connection, calls, override)


async def seed(db: Any, rows: int) -> float:
    from xrm.records.principal import SYSTEM_PRINCIPAL
    from xrm.records.service import RecordService
    from xrm.registry import Registry
    from xrm.schema.files import load_documents
    from xrm.schema.service import SchemaService

    documents = load_documents(ROOT / "entity_schemas")
    await SchemaService(db).apply([d for _, d in documents], principal=SYSTEM_PRINCIPAL, sources=[s for s, _ in documents])
    registry = await Registry().load(db)
    service = RecordService(db, registry, ENTITY, SYSTEM_PRINCIPAL)
    rng = random.Random(42)
    started = time.perf_counter()
    for start in range(1, rows + 1, 1000):
        await service.create_many([seed_record(n, rng) for n in range(start, min(rows, start + 999) + 1)])
    seconds = time.perf_counter() - started
    async with db.connection() as connection:
        assert await connection.fetchval(f"SELECT count(*) FROM {registry.get(ENTITY).table}") == rows
        await connection.execute("VACUUM ANALYZE")
    return seconds


def start_server(uri: str, port: int, work: Path, access_log: bool) -> subprocess.Popen[bytes]:
    env = {**os.environ, "XRM_DATABASE_URL": uri, "XRM_SCHEMA_DIR": str(ROOT / "entity_schemas"), "XRM_DATA_DIR": str(work / "data")}
    if access_log:
        command = [str(Path(sys.executable).parent / "xrm"), "serve", "--host", "127.0.0.1", "--port", str(port)]
        if not Path(command[0]).exists():
            command = [sys.executable, "-m", "xrm.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    else:
        command = [
            sys.executable, "-m", "uvicorn", "--factory", "xrm.app:create_app", "--host", "127.0.0.1",
            "--port", str(port), "--no-access-log", "--log-level", "warning",
        ]
    log = open(work / "server.log", "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


async def wait_until_up(base: str, server: subprocess.Popen[bytes], work: Path) -> None:
    import httpx

    async with httpx.AsyncClient(base_url=base) as client:
        for _ in range(600):
            if server.poll() is not None:
                raise SystemExit(f"xrm serve exited with {server.returncode}:\n{(work / 'server.log').read_text()[-3000:]}")
            try:
                if (await client.get("/health")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("xrm serve did not answer /health within 60 s")


async def deep_cursor(base: str, token: str, deep: int) -> str:
    """The API's cursor after row `deep` (default order), by walking pages of up to 1,000."""
    import httpx

    after, done = None, 0
    async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as client:
        while done < deep:
            params: dict[str, Any] = {"limit": min(1000, deep - done)}
            if after:
                params["after"] = after
            response = await client.get(f"/api/v1/{ENTITY}", params=params)
            response.raise_for_status()
            body = response.json()
            done += len(body["records"])
            after = body["next_cursor"]
            assert after, "ran out of rows before the deep page"
    return after


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=60_000, help="deals to seed (default 60000)")
    parser.add_argument("--seconds", type=int, default=15, help="duration of each phase, xrm and pgbench alike (default 15)")
    parser.add_argument("--connections", type=int, default=8, help="concurrent connections / pgbench clients (default 8)")
    parser.add_argument("--deep", type=int, default=50_000, help="rows before the deep page (default 50000)")
    parser.add_argument("--client", choices=["auto", "wrk", "python", "httpx"], default="auto",
                        help="load generator: wrk, hand-written HTTP/1.1 on asyncio (python) or httpx (auto: wrk if installed, else python)")
    parser.add_argument("--no-access-log", action="store_true", help="run uvicorn on xrm.app:create_app without access log instead of `xrm serve`")
    parser.add_argument("--show-sql", action="store_true", help="print the pgbench scripts (the SQL of each request)")
    parser.add_argument("--only", help="comma-separated phases to run: get,list,first,deep,create (default all)")
    args = parser.parse_args()
    if args.deep >= args.rows:
        parser.error("--deep must be smaller than --rows")
    client = args.client if args.client != "auto" else ("wrk" if shutil.which("wrk") else "python")
    if client == "wrk" and not shutil.which("wrk"):
        parser.error("wrk is not installed (apt-get install wrk), use --client python")
    pgbench = pg_program("pgbench")
    if pgbench is None:
        parser.error("pgbench not found (embedded server's bin/ or PATH)")
    only = set(args.only.split(",")) if args.only else None

    from xrm.auth import UserService
    from xrm.db.database import Database
    from xrm.registry import Registry

    work = Path(tempfile.mkdtemp(prefix="xrm-bench-api-"))
    server: subprocess.Popen[bytes] | None = None
    results: list[tuple[Phase, LoadResult, PgbenchResult, PgbenchResult]] = []
    try:
        async with bench_server() as pg:
            print(f"server: PostgreSQL {pg.version}, {pg.description}")
            db = await Database(pg.uri).open()
            try:
                seconds = await seed(db, args.rows)
                print(f"seeded {args.rows:,} {ENTITY} records via RecordService.create_many in {seconds:.1f} s")
                users = UserService(db)
                await users.create_user("bench_admin", "bench-password-1", ["admin"])
                token, _ = await users.create_token("bench_admin", TOKEN_LABEL)
                table = (await Registry().load(db)).get(ENTITY).table
                ids_file = work / "ids.txt"
                ids_file.write_text("\n".join(str(record_id(n)) for n in range(1, args.rows + 1)) + "\n")

                port = free_port()
                base = f"http://127.0.0.1:{port}"
                server = start_server(pg.uri, port, work, access_log=not args.no_access_log)
                await wait_until_up(base, server, work)
                how = "uvicorn xrm.app:create_app --factory --no-access-log" if args.no_access_log else "xrm serve"
                print(f"{how} on {base} (pid {server.pid}); load generator: {client}, {args.connections} connections; pgbench: {pgbench}")

                cursor = await deep_cursor(base, token, args.deep)
                phases = [
                    Phase("get", "GET by id", "GET", f"/api/v1/{ENTITY}/{record_id(1)}"),
                    Phase("list", "list stage=negotiation, sort=-amount", "GET", f"/api/v1/{ENTITY}?stage=negotiation&sort=-amount&limit=50"),
                    Phase("first", "page 1 (created_at order)", "GET", f"/api/v1/{ENTITY}?limit=50"),
                    Phase("deep", f"page after {args.deep:,} (cursor)", "GET", f"/api/v1/{ENTITY}?limit=50&after={cursor}"),
                    Phase("create", "POST create", "POST", f"/api/v1/{ENTITY}", post_body(random.Random(0), 0)),
                ]
                # The SQL of each request, from the app itself (in this process), as pgbench scripts.
                captured = await capture_requests(pg.uri, token, phases, work)
                await build_scripts(db, token, phases, captured, args.rows)
                if args.show_sql:
                    for phase in phases:
                        print(f"-- {phase.label}: query alone\n{phase.query_sql}\n-- {phase.label}: whole request\n{phase.request_sql}\n")
                for phase in phases:  # each script runs: a few transactions, one client
                    for sql, name in ((phase.query_sql, "query"), (phase.request_sql, "request")):
                        run_pgbench(pgbench, pg.uri, sql, name=f"check-{phase.key}-{name}", clients=1, seconds=0, work=work)

                # The server answers what the app in this process answered; the deep page is rows deep+1..deep+50.
                import httpx

                async with db.connection() as connection:
                    by_offset = [str(r["id"]) for r in await connection.fetch(
                        f"SELECT id FROM {table} WHERE deleted_at IS NULL ORDER BY created_at, id OFFSET {args.deep} LIMIT 50")]
                assert next(p for p in phases if p.key == "deep").expected_ids == by_offset, "the deep page is not rows deep+1..deep+50"
                async with httpx.AsyncClient(base_url=base, headers={"Authorization": f"Bearer {token}"}) as http:
                    for phase in phases:
                        if phase.expected_ids:
                            got = [r["id"] for r in (await http.get(phase.path)).json()["records"]]
                            assert got == phase.expected_ids, phase.key
                    assert (await http.get(f"/api/v1/{ENTITY}/{record_id(3)}")).json()["id"] == str(record_id(3))
                for phase in phases:
                    if phase.key == "get":
                        phase.path = f"/api/v1/{ENTITY}/"  # the load generator appends a random seeded id

                async with db.connection() as connection:
                    before = await connection.fetchval(f"SELECT count(*) FROM {table}")
                created = 0
                for phase in phases:
                    if only and phase.key not in only:
                        continue
                    kind = {"get": "get", "create": "post"}.get(phase.key, "path")
                    spec = {
                        "base": base, "token": token, "kind": kind, "path": phase.path, "ids_file": str(ids_file),
                        "seconds": args.seconds, "connections": args.connections,
                    }
                    load = run_load(phase, spec, client, server.pid, work)
                    if load.errors:
                        log = (work / "server.log").read_text(errors="replace")[-2000:]
                        raise SystemExit(f"{phase.key}: {load.errors} failed requests; end of the server log:\n{log}")
                    query = run_pgbench(pgbench, pg.uri, phase.query_sql, name=f"{phase.key}-query", clients=args.connections, seconds=args.seconds, work=work)
                    request = run_pgbench(pgbench, pg.uri, phase.request_sql, name=f"{phase.key}-request", clients=args.connections, seconds=args.seconds, work=work)
                    if phase.key == "create":
                        created = load.requests + query.transactions + request.transactions
                    results.append((phase, load, query, request))
                    print(f"  {phase.key}: xrm {load.rate:,.0f} req/s, pgbench {query.tps:,.0f} / {request.tps:,.0f} tps", flush=True)
                async with db.connection() as connection:
                    after = await connection.fetchval(f"SELECT count(*) FROM {table}")
                # wrk may count a request still in flight at the end as not done; allow the connections' worth.
                assert 0 <= (after - before) - created <= args.connections, (before, after, created)
            finally:
                if server is not None and server.poll() is None:
                    os.killpg(server.pid, signal.SIGTERM)
                    try:
                        server.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        os.killpg(server.pid, signal.SIGKILL)
                        server.wait()
                await db.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print()
    print(
        f"api_load: {args.rows:,} deals, {args.connections} connections, {args.seconds} s per run, client {client}; "
        "ratio = xrm req/s / pgbench tps (query alone)"
    )
    print_table(
        ["request", "xrm req/s", "p50 ms", "p99 ms", "pgbench tps", "p50 ms", "p99 ms", "+token tps", "vs pgbench"],
        [
            (
                phase.label, fmt_rate(load.rate), f"{load.p50_ms:.2f}", f"{load.p99_ms:.2f}",
                fmt_rate(query.tps), f"{query.p50_ms:.2f}", f"{query.p99_ms:.2f}", fmt_rate(request.tps),
                fmt_ratio(load.rate / query.tps),
            )
            for phase, load, query, request in results
        ],
    )
    print()
    print("CPU during the xrm runs, % of one core (2 cores = 200%); server CPU per request")
    print_table(
        ["request", "xrm server", "load generator", "PostgreSQL+rest", "server us/req"],
        [
            (
                phase.label,
                f"{100 * load.server_cpu / load.seconds:.0f}%",
                f"{100 * load.client_cpu / load.seconds:.0f}%",
                f"{100 * max(0.0, load.total_cpu - load.server_cpu - load.client_cpu) / load.seconds:.0f}%",
                f"{1e6 * load.server_cpu / max(1, load.requests):,.0f}",
            )
            for phase, load, _, _ in results
        ],
    )


def worker_main(spec_file: str) -> None:
    """`api_load.py --worker SPEC.json`: the Python load generator, run as its own process."""
    try:
        import uvloop  # what uvicorn uses for the server too, when installed

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass
    print(json.dumps(asyncio.run(python_worker(json.loads(Path(spec_file).read_text())))))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker_main(sys.argv[2])
    else:
        asyncio.run(main())
