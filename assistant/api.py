"""REST endpoints of the assistant.

POST /api/v1/_assistant/ask           {"question": "..."} -> answer, citations, tool calls (as the caller)
GET  /api/v1/_assistant/conversation  the caller's latest questions and answers
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from litestar import Request, Response, get, post

from xrm.api.common import platform_of, principal_of, read_json
from xrm.api.problems import BadRequest, json_response
from xrm.api.spec import error_responses as _errors

from .embedding import get_embedder
from .service import AssistantService, conversation

__all__ = ["api_handlers", "openapi"]


def assistant_for(request: Request[Any, Any, Any], principal: Any) -> AssistantService:
    platform = platform_of(request)
    return AssistantService(platform.db, platform.registry, principal, platform.policy, embedder_factory=get_embedder)


@post("/api/v1/_assistant/ask", status_code=200)
async def ask(request: Request[Any, Any, Any]) -> Response[bytes]:
    principal = await principal_of(request)
    body = await read_json(request)
    if not isinstance(body, Mapping) or not isinstance(body.get("question"), str):
        raise BadRequest('The body must be a JSON object {"question": "..."}')
    answer = await assistant_for(request, principal).ask(body["question"])
    return json_response(answer.as_json())


@get("/api/v1/_assistant/conversation")
async def conversation_of_caller(request: Request[Any, Any, Any]) -> Response[bytes]:
    principal = await principal_of(request)
    messages = await conversation(platform_of(request).db, principal.id)
    return json_response({"messages": [{**m, "asked_at": m["asked_at"].isoformat()} for m in messages]})


api_handlers = [ask, conversation_of_caller]

_ANSWER = {
    "type": "object", "required": ["question", "answer", "language", "kind", "citations", "tool_calls"],
    "properties": {
        "question": {"type": "string"},
        "answer": {"type": "string", "description": "The answer in the question's language (English or German)"},
        "language": {"enum": ["en", "de"]},
        "kind": {"enum": ["count", "sum", "avg", "top", "list", "related", "lookup", "search", "ambiguous", "agent"]},
        "value": {"description": "The number or names the answer states (null when it states none)"},
        "citations": {"type": "array", "items": {
            "type": "object", "required": ["entity", "id", "label", "href"],
            "properties": {"entity": {"type": "string"}, "id": {"type": "string"}, "label": {"type": "string"},
                           "href": {"type": "string", "description": "The record's page in the web UI"}}}},
        "tool_calls": {"type": "array", "items": {
            "type": "object", "required": ["name", "arguments", "record_ids"],
            "properties": {"name": {"type": "string"}, "arguments": {"type": "object"},
                           "record_ids": {"type": "array", "items": {"type": "string"}}}}},
        "seconds": {"type": "number"},
    },
}


def openapi(registry: Any) -> dict[str, Any]:
    return {
        "schemas": {"Assistant.Question": {"type": "object", "required": ["question"], "additionalProperties": True,
                                           "properties": {"question": {"type": "string", "minLength": 1, "maxLength": 2000}}},
                    "Assistant.Answer": _ANSWER},
        "paths": {
            "/api/v1/_assistant/ask": {"post": {
                "operationId": "assistant_ask", "tags": ["Assistant"],
                "summary": "Ask the assistant a question (English or German)",
                "description": "Answers from the records the caller may open, through the same permission checks as every "
                               "read; cites the records it used. The question, the tool calls and the record ids are "
                               "written to the audit trail (assistant.asked).",
                "requestBody": {"required": True, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Assistant.Question"}}}},
                "responses": {"200": {"description": "The answer", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Assistant.Answer"}}}},
                              **_errors("400", "401", "413", "422")},
            }},
            "/api/v1/_assistant/conversation": {"get": {
                "operationId": "assistant_conversation", "tags": ["Assistant"],
                "summary": "The caller's latest questions and answers",
                "responses": {"200": {"description": "Oldest first", "content": {"application/json": {"schema": {
                    "type": "object", "required": ["messages"], "properties": {"messages": {"type": "array", "items": {
                        "type": "object", "required": ["id", "asked_at", "question", "answer"],
                        "properties": {"id": {"type": "integer"}, "asked_at": {"type": "string", "format": "date-time"},
                                       "question": {"type": "string"}, "answer": {"$ref": "#/components/schemas/Assistant.Answer"}}}}}}}}},
                              **_errors("401")},
            }},
        },
    }
