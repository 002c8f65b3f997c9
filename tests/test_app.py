"""The server: health and the entry page, on a real database."""

from __future__ import annotations

from pathlib import Path

from litestar.testing import TestClient

from xrm.app import create_app
from xrm.settings import Settings

ROOT = Path(__file__).resolve().parent.parent


def test_health_and_the_entry_page_asks_for_a_login_in_the_browsers_language(database_uri: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=database_uri, schema_dir=ROOT / "entity_schemas", secret_key=None)
    with TestClient(app=create_app(settings)) as client:
        response = client.get("/health")
        assert response.status_code == 200 and response.json() == {"status": "ok"}
        page = client.get("/", headers={"Accept-Language": "de-DE"})
        assert page.status_code == 200 and str(page.url).endswith("/login?next=%2F")
        assert "Anmelden" in page.text and "Passwort" in page.text
        assert "Log in" in client.get("/").text  # the entity list behind it: tests/test_webui.py


def test_entry_page_links_the_api_browser_whose_assets_are_served_locally(database_uri: str, tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, database_url=database_uri, schema_dir=ROOT / "entity_schemas", secret_key=None)
    with TestClient(app=create_app(settings)) as client:
        assert 'href="/api/docs"' in client.get("/").text
        docs = client.get("/api/docs").text
        for asset in ("/static/vendor/swagger-ui/swagger-ui-bundle.js", "/static/vendor/swagger-ui/swagger-ui.css"):
            assert asset in docs
            assert client.get(asset).status_code == 200
        assert "http" not in docs.split("<body>")[1].replace("xrm token", "")  # no CDN
