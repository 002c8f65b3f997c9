"""Settings read from the environment (the public contract names them)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Settings"]


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    """Folder of the embedded PostgreSQL and other local state (XRM_DATA_DIR)."""
    database_url: str | None
    """An external PostgreSQL >= 15 with pgvector (XRM_DATABASE_URL); None means embedded."""
    schema_dir: Path
    """Entity definitions loaded at start (XRM_SCHEMA_DIR, default ./entity_schemas)."""
    secret_key: str | None

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        return cls(
            data_dir=Path(env.get("XRM_DATA_DIR") or ".xrm").resolve(),
            database_url=env.get("XRM_DATABASE_URL") or None,
            schema_dir=Path(env.get("XRM_SCHEMA_DIR") or "entity_schemas").resolve(),
            secret_key=env.get("XRM_SECRET_KEY") or None,
        )
