"""Plugins extend definitions, the REST API, the OpenAPI document and the web UI without core changes.

One small plugin object, registered with the process's plugin manager for these
tests: a `x-xrm.rating_scale` keyword with its own check, an endpoint with its
OpenAPI path, a UI page, a panel on every detail page and a menu entry.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from litestar import Request, get
from litestar.params import FromPath
from markupsafe import Markup, escape

from conftest import ROOT, bearer, log_in, make_user, ok, problem
from xrm.errors import DefinitionInvalid, Problem
from xrm.plugins import MenuEntry, Panel, get_plugin_manager, hookimpl
from xrm.schema.definition import parse_definition

SUPPLIER: dict[str, Any] = {
    "type": "object",
    "x-xrm": {"name": "supplier", "label": {"en": "Supplier"}, "rating_scale": {"max": 5}},
    "properties": {"name": {"type": "string"}, "rating": {"type": "integer", "x-xrm": {"rated": True}}},
}


@get("/api/v1/_ratings/{entity:str}", sync_to_thread=False)
def ratings(entity: FromPath[str]) -> dict[str, Any]:
    return {"entity": entity, "scale": 5}


@get("/ratings", sync_to_thread=False)
def ratings_page(request: Request[Any, Any, Any]) -> str:
    return "<h1>Ratings</h1>"


class RatingsPlugin:
    @hookimpl
    def xrm_definition_vocabulary(self) -> dict[str, Any]:
        return {"entity": {"rating_scale": {"type": "object", "required": ["max"], "additionalProperties": False,
                                            "properties": {"max": {"type": "integer", "minimum": 2, "maximum": 10}}}},
                "field": {"rated": {"type": "boolean"}}}

    @hookimpl
    def xrm_check_definition(self, definition: Any) -> list[Problem]:
        problems = []
        for name, f in definition.fields.items():
            if f.xrm.get("rated") and f.type.name != "integer":
                problems.append(Problem(f"/properties/{name}/x-xrm/rated", "only whole-number fields can be rated"))
        return problems

    @hookimpl
    def xrm_api_routes(self) -> list[Any]:
        return [ratings]

    @hookimpl
    def xrm_openapi(self, registry: Any) -> dict[str, Any]:
        return {"paths": {"/api/v1/_ratings/{entity}": {"get": {
            "operationId": "ratings", "summary": "The rating scale of an entity",
            "parameters": [{"name": "entity", "in": "path", "required": True, "schema": {"type": "string", "pattern": "^[a-z]+$"}}],
            "responses": {"200": {"description": "The scale", "content": {"application/json": {"schema": {"type": "object"}}}}}}}}}

    @hookimpl
    def xrm_ui_routes(self) -> list[Any]:
        return [ratings_page]

    @hookimpl
    def xrm_detail_panels(self, entity: str, record: Any, language: str) -> Any:
        async def panel() -> list[Panel]:
            title = "Bewertung" if language == "de" else "Rating"
            return [Panel(title, escape(f"<{entity}> {record.get('rating', '–')} / 5"))] if entity == "supplier" else []

        return panel()

    @hookimpl
    def xrm_menu_entries(self, principal: Any) -> list[MenuEntry]:
        return [MenuEntry("Ratings", "/ratings")] if "admin" in principal.roles else []


@pytest.fixture
def ratings_plugin() -> Iterator[RatingsPlugin]:
    plugin = RatingsPlugin()
    manager = get_plugin_manager()
    manager.register(plugin, name="ratings-test-plugin")
    try:
        yield plugin
    finally:
        manager.unregister(name="ratings-test-plugin")


@pytest.fixture
def app_with_plugin(ratings_plugin: RatingsPlugin, database_uri: str, tmp_path: Path) -> Iterator[Any]:
    """The app created while the plugin is registered (routes are gathered at creation)."""
    from litestar.testing import TestClient

    from xrm.app import create_app
    from xrm.settings import Settings

    schemas = tmp_path / "schemas"
    schemas.mkdir()
    for source in (ROOT / "entity_schemas").glob("*.json"):
        (schemas / source.name).write_text(source.read_text())
    (schemas / "supplier.json").write_text(__import__("json").dumps(SUPPLIER))
    settings = Settings(data_dir=tmp_path, database_url=database_uri, schema_dir=schemas, secret_key=None)
    with TestClient(app=create_app(settings), base_url="https://testserver.local") as client:
        yield client


def test_a_plugin_keyword_is_part_of_the_definition_language(ratings_plugin: RatingsPlugin) -> None:
    assert parse_definition(SUPPLIER).xrm["rating_scale"] == {"max": 5}
    wrong = {**SUPPLIER, "x-xrm": {**SUPPLIER["x-xrm"], "rating_scale": {"max": 50}}}
    with pytest.raises(DefinitionInvalid) as error:
        parse_definition(wrong)
    assert error.value.problems[0].pointer == "/x-xrm/rating_scale/max"
    text_rated = {**SUPPLIER, "properties": {"name": {"type": "string", "x-xrm": {"rated": True}}}}
    with pytest.raises(DefinitionInvalid) as error:
        parse_definition(text_rated)
    assert [(p.pointer, p.message) for p in error.value.problems] == [("/properties/name/x-xrm/rated", "only whole-number fields can be rated")]


def test_without_the_plugin_its_keyword_is_unknown() -> None:
    with pytest.raises(DefinitionInvalid) as error:
        parse_definition(SUPPLIER)
    assert {p.pointer for p in error.value.problems} == {"/x-xrm/rating_scale", "/properties/rating/x-xrm/rated"}


def test_a_plugin_adds_an_endpoint_its_openapi_and_ui_parts(app_with_plugin: Any) -> None:
    client = app_with_plugin
    headers = bearer(client, "root", ["admin"])
    assert ok(client.get("/api/v1/_ratings/supplier", headers=headers)) == {"entity": "supplier", "scale": 5}
    spec = ok(client.get("/api/openapi.json"))
    assert spec["paths"]["/api/v1/_ratings/{entity}"]["get"]["operationId"] == "ratings"
    created = ok(client.post("/api/v1/supplier", headers=headers, json={"name": "Teile AG", "rating": 4}), 201)
    problem(client.post("/api/v1/supplier", headers=headers, json={"name": 3}), 422)

    make_user(client, "admin", ["admin"])
    log_in(client, "admin")
    home = client.get("/").text
    assert '<a href="/ratings" dir="ltr">Ratings</a>' in home  # the menu entry
    assert "<h1>Ratings</h1>" in client.get("/ratings").text  # the plugin's page, inside the UI router
    detail = client.get(f"/e/supplier/{created['id']}").text
    assert "<h2>Rating</h2>" in detail and "&lt;supplier&gt; 4 / 5" in detail  # escaped by the plugin, shown once
    assert "<h2>Rating</h2>" not in client.get("/e/account").text
