"""The server: health and the entry page, on a real database."""

from __future__ import annotations

from pathlib import Path

import pytest
from litestar.testing import TestClient

from xrm.app import create_app
from xrm.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_health_and_entry_page_list_the_entities_from_entity_schemas(database_uri: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=database_uri, schema_dir=ROOT / "entity_schemas", secret_key=None)
    with TestClient(app=create_app(settings)) as client:
        response = client.get("/health")
        assert response.status_code == 200 and response.json() == {"status": "ok"}
        page = client.get("/", headers={"Accept-Language": "de-DE"})
        assert page.status_code == 200
        assert "Firmen" in page.text and "Verkaufschancen" in page.text
        assert "Accounts" in client.get("/").text
