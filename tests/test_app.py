"""The server: health and the entry page, on a real database."""

from __future__ import annotations

from pathlib import Path

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


def test_entry_page_links_the_api_browser_whose_assets_are_served_locally(database_uri: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=database_uri, schema_dir=ROOT / "entity_schemas", secret_key=None)
    with TestClient(app=create_app(settings)) as client:
        assert 'href="/api/docs"' in client.get("/").text
        docs = client.get("/api/docs").text
        for asset in ("/static/vendor/swagger-ui/swagger-ui-bundle.js", "/static/vendor/swagger-ui/swagger-ui.css"):
            assert asset in docs
            assert client.get(asset).status_code == 200
        assert "http" not in docs.split("<body>")[1].replace("xrm token", "")  # no CDN
