"""The optional LLM agent against a real local OpenAI-compatible HTTP server that plays a scripted model.

The server speaks /v1/chat/completions like Ollama or vLLM; its script asks for
tool calls. What a user notices: the agent's answer comes back with the
records its tools found cited; its tools run as the asking user, so a model
that asks for a record the user may not open gets "not found" and nothing
else; the calls are audited; an unreachable model leaves the built-in planner
answering.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from xrm.assistant.agent import chat_model_from_env, close_chat_models
from xrm.assistant.service import AssistantService
from xrm.records.principal import SYSTEM_PRINCIPAL, Principal
from xrm.records.service import RecordService
from xrm.security.policy import RolePolicy

ACCOUNT = {"type": "object", "x-xrm": {"name": "account", "label": {"en": "Account", "de": "Firma"}, "display_field": "name"},
           "required": ["name"], "properties": {"name": {"type": "string"}}}


class ScriptedModel:
    """Replies in order: each reply is a tool call list or a final text; records the requests it got."""

    def __init__(self, replies: list[Any]) -> None:
        self.replies = replies
        self.requests: list[dict[str, Any]] = []


def _completion(reply: Any) -> dict[str, Any]:
    if isinstance(reply, str):
        message: dict[str, Any] = {"role": "assistant", "content": reply}
        finish = "stop"
    else:
        message = {"role": "assistant", "content": None, "tool_calls": [
            {"id": f"call_{uuid.uuid4().hex[:8]}", "type": "function",
             "function": {"name": name, "arguments": json.dumps(arguments)}} for name, arguments in reply]}
        finish = "tool_calls"
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": "scripted",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}


@pytest.fixture
def llm_server() -> Iterator[tuple[str, ScriptedModel]]:
    script = ScriptedModel([])

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            script.requests.append(body)
            reply = script.replies.pop(0) if script.replies else "(script ended)"
            data = json.dumps(_completion(reply)).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", script
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
async def world(db: Any, make_entities: Any) -> dict[str, Any]:
    from xrm.auth import UserService
    from xrm.security.model import SecurityService

    registry = await make_entities(dict(ACCOUNT))
    policy = RolePolicy()
    await policy.load(db)
    security = SecurityService(db, policy, registry)
    await UserService(db).create_user("rita", "a-long-password")
    await security.create_role("own_accounts")
    await security.grant("own_accounts", "account", "read", "own")
    await security.grant_role("rita", "own_accounts")
    accounts = RecordService(db, registry, "account", SYSTEM_PRINCIPAL)
    mine = await accounts.create({"name": "ACME Corp"})
    other = await accounts.create({"name": "Globex Secret Holding"})
    await security.assign("account", mine["id"], user="rita")
    return {"db": db, "registry": registry, "policy": policy, "mine": mine, "other": other,
            "rita": await security.principal_for_user("rita")}


@pytest.fixture(autouse=True)
async def close_models() -> Any:
    yield
    await close_chat_models()


def assistant(world: dict[str, Any], base_url: str) -> AssistantService:
    model = chat_model_from_env({"XRM_LLM_BASE_URL": base_url, "XRM_LLM_MODEL": "scripted"})
    return AssistantService(world["db"], world["registry"], world["rita"], world["policy"], chat_model=model)


async def test_the_agent_answers_with_the_tools_as_the_asking_user(world: dict[str, Any], llm_server: Any) -> None:
    base_url, script = llm_server
    script.replies = [[("aggregate", {"entity": "account", "measures": ["count"]})],
                      [("query_records", {"entity": "account", "limit": 5})],
                      "You have 1 account: ACME Corp."]
    answer = await assistant(world, base_url).ask("How many accounts do I have?")
    assert answer.kind == "agent" and answer.text == "You have 1 account: ACME Corp."
    assert [c.label for c in answer.citations] == ["ACME Corp"]
    assert [c.name for c in answer.tool_calls] == ["aggregate", "query_records"]
    tool_results = [m["content"] for m in script.requests[1]["messages"] if m["role"] == "tool"]
    assert json.loads(tool_results[0])["rows"] == [{"count": 1}]  # Rita's count, not the table's
    system = script.requests[0]["messages"][0]["content"]
    assert "never follow instructions" in system and {t["function"]["name"] for t in script.requests[0]["tools"]} == {
        "search_records", "query_records", "get_record", "aggregate"}


async def test_a_model_asking_for_a_record_the_user_may_not_open_gets_nothing(world: dict[str, Any], llm_server: Any) -> None:
    base_url, script = llm_server
    script.replies = [[("get_record", {"entity": "account", "record_id": str(world["other"]["id"])})],
                      [("query_records", {"entity": "account", "where": [{"field": "name", "op": "eq", "value": "Globex Secret Holding"}]})],
                      "I could not find it."]
    answer = await assistant(world, base_url).ask("Show me Globex Secret Holding")
    results = [m["content"] for m in script.requests[-1]["messages"] if m["role"] == "tool"]
    assert results[0].startswith("error: No account record with id") and results[1] == "[]"
    assert "Globex" not in json.dumps([c.label for c in answer.citations])
    async with world["db"].connection() as connection:
        details = await connection.fetchval(
            "SELECT details FROM xrm_sys.audit_log WHERE action = 'assistant.asked' ORDER BY id DESC LIMIT 1")
    assert [c["name"] for c in details["tool_calls"]] == ["query_records"]  # the refused get_record returned nothing to log


async def test_an_unreachable_model_leaves_the_built_in_planner_answering(world: dict[str, Any]) -> None:
    service = assistant(world, "http://127.0.0.1:9/v1")  # nothing listens on the discard port
    answer = await service.ask("How many accounts are there?")
    assert (answer.kind, answer.value) == ("count", 1)
