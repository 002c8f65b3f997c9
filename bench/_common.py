"""Shared helpers for the benchmark scripts (not a benchmark itself).

- `bench_server()`: a PostgreSQL server URI and a fresh database on it
  (an embedded throwaway server, or the server in XRM_DATABASE_URL);
- `timed()`: wall-clock timing of an awaitable;
- `print_table()`: a plain-text table.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
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
