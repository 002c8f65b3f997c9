"""Building blocks of OpenAPI operations, shared by the core's and the plugins' parts of /api/openapi.json."""

from __future__ import annotations

from typing import Any

__all__ = ["error_responses", "json_content", "ok_response", "ref"]


def ref(name: str) -> dict[str, str]:
    """A reference to a schema in components.schemas."""
    return {"$ref": f"#/components/schemas/{name}"}


def json_content(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def error_responses(*codes: str) -> dict[str, Any]:
    """The shared problem+json responses (components.responses.Problem<code>) for these status codes."""
    return {code: {"$ref": f"#/components/responses/Problem{code}"} for code in codes}


def ok_response(description: str, schema: dict[str, Any], code: str = "200") -> dict[str, Any]:
    return {code: {"description": description, "content": json_content(schema)}}
