"""The server: health and the entry page, on a real database."""

from __future__ import annotations

import json
from pathlib import Path

from litestar.testing import TestClient

from xrm.app import create_app
from xrm.settings import Settings

from conftest import bearer

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


def test_a_definition_file_is_applied_again_only_when_it_changed(database_uri: str, tmp_path: Path) -> None:
    """An admin's change of a shipped entity (designer, API) survives a restart; a changed file is applied."""
    folder = tmp_path / "schemas"
    folder.mkdir()
    shipped = {"type": "object", "x-xrm": {"name": "gadget", "label": {"en": "Gadget", "de": "Gerät"}},
               "properties": {"name": {"type": "string"}}}
    (folder / "gadget.json").write_text(json.dumps(shipped), encoding="utf-8")
    settings = Settings(data_dir=tmp_path, database_url=database_uri, schema_dir=folder, secret_key=None)
    designed = json.loads(json.dumps(shipped))
    designed["x-xrm"]["label"]["en"] = "Device"  # a change the file would undo without a destructive step
    with TestClient(app=create_app(settings)) as client:
        admin = bearer(client, "root", ["admin"])
        applied = client.post("/api/v1/meta/apply", headers=admin, json={"definitions": [designed]})
        assert applied.status_code == 200, applied.text
    with TestClient(app=create_app(settings)) as client:  # a restart keeps the admin's version
        entity = client.get("/api/v1/meta/entities/gadget", headers=admin).json()["definition"]
        assert entity["x-xrm"]["label"]["en"] == "Device", entity
    changed = json.loads(json.dumps(shipped))
    changed["properties"]["size"] = {"type": "integer"}
    (folder / "gadget.json").write_text(json.dumps(changed, indent=2), encoding="utf-8")
    with TestClient(app=create_app(settings)) as client:  # the file changed: it is applied
        entity = client.get("/api/v1/meta/entities/gadget", headers=admin).json()["definition"]
        assert "size" in entity["properties"] and entity["x-xrm"]["label"]["en"] == "Gadget", entity
