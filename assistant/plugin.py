"""The assistant as a built-in plugin (entry point "assistant"): its index follower, erasure and CLI commands.

Registered through the `xrm.plugins` entry-point group like every plugin.
Inside `xrm serve` (unless XRM_WORKER=false or XRM_ASSISTANT_INDEX=false) a
task applies the outbox to the vector index every worker poll; the model
loads on the first record to embed, and embedding runs in a thread so
requests are not held up.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
import threading
import time
from typing import Any

import click

from xrm.plugins import hookimpl

__all__: list[str] = []

log = logging.getLogger(__name__)
_running: dict[int, tuple[asyncio.Event, asyncio.Task[None]]] = {}


def _load_quietly(load: Any) -> None:
    try:
        load()
    except Exception:  # noqa: BLE001 - a model that cannot load shows up (with its error) when a search needs it
        log.exception("the embedding model could not be loaded")


def index_enabled() -> bool:
    return (os.environ.get("XRM_ASSISTANT_INDEX") or "true").strip().lower() not in ("false", "0", "no", "off")


@hookimpl
def xrm_capabilities() -> dict[str, Any]:
    return {"reads": ["*"], "writes": [], "network": False,
            "description": "The chat assistant: vector index of record texts, hybrid retrieval (docs/assistant.md)"}


_WORDS = {"type": "object", "propertyNames": {"pattern": "^[a-z]{2}$"},
          "additionalProperties": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 80}}}


@hookimpl
def xrm_definition_vocabulary() -> dict[str, Any]:
    """x-xrm keywords the assistant reads (docs/assistant.md)."""
    return {
        "entity": {"assistant": {
            "oneOf": [
                {"const": False, "description": "leave the entity out of the assistant's index"},
                {"type": "object", "additionalProperties": False, "properties": {
                    "synonyms": {**_WORDS, "description": "other words people use for the entity, per language"},
                    "date_field": {"type": "string", "description": "the date a question's \"this month\" is about"},
                    "won": {"type": "object", "additionalProperties": False, "required": ["field", "value"],
                            "properties": {"field": {"type": "string"}, "value": {"type": "string"}},
                            "description": "the state whose amounts count as revenue"},
                }},
            ],
        }},
        "field": {"synonyms": {**_WORDS, "description": "other words people use for the field, per language"}},
    }


@hookimpl
def xrm_check_definition(definition: Any, known_entities: Any) -> list[Any]:
    """assistant.date_field names a date field; assistant.won a select field and one of its options."""
    from xrm.errors import Problem, pointer

    config = definition.xrm.get("assistant")
    if not isinstance(config, dict):
        return []
    problems = []
    date_field = config.get("date_field")
    if date_field is not None:
        f = definition.fields.get(date_field)
        if f is None or f.type.name not in ("date", "datetime"):
            problems.append(Problem(pointer("x-xrm", "assistant", "date_field"), f"{date_field!r} is not a date or datetime field of {definition.name}"))
    won = config.get("won")
    if won is not None:
        f = definition.fields.get(won["field"])
        if f is None or won["value"] not in (f.schema.get("enum") or []):
            problems.append(Problem(pointer("x-xrm", "assistant", "won"),
                                    f"{won['field']!r} is not a select field of {definition.name} with the option {won['value']!r}"))
    return problems


@hookimpl
def xrm_startup(platform: Any) -> None:
    # Load the embedding model in the background now, so the first question that needs a search does not wait for it.
    from .embedding import get_embedder

    # A plain thread: it needs nothing of the event loop, which may have closed before it is done.
    threading.Thread(target=_load_quietly, args=(get_embedder,), name="xrm-embedding-preload", daemon=True).start()
    if not platform.settings.worker or not index_enabled():
        return
    stop = asyncio.Event()
    task = asyncio.get_running_loop().create_task(_follow(platform, stop), name="xrm-assistant-index")
    _running[id(platform)] = (stop, task)


@hookimpl
def xrm_shutdown(platform: Any) -> Any:
    from .agent import close_chat_models

    found = _running.pop(id(platform), None)
    if found is None:
        return close_chat_models()
    stop, task = found

    async def wait() -> None:
        await close_chat_models()
        stop.set()
        try:
            await asyncio.wait_for(task, timeout=30)
        except asyncio.TimeoutError:
            log.warning("the assistant's index follower did not stop within 30 s; cancelled (the outbox is read again)")

    return wait()


@hookimpl
def xrm_redact(connection: Any, record_ids: list[Any], needles: list[str]) -> Any:
    """Erasure: the vectors of the erased records go at once (the follower embeds their redacted text again),
    and conversations that quoted an erased value are redacted."""

    async def redact() -> int:
        from xrm.privacy.redaction import REDACTED, like_patterns

        changed = 0
        if record_ids:
            status = await connection.execute("DELETE FROM xrm_index.record_embedding WHERE record_id = ANY($1::uuid[])", record_ids)
            changed += int(status.split()[-1])
        patterns = like_patterns(needles)
        if patterns:  # conversations that quoted an erased value lose the whole exchange's text
            status = await connection.execute(
                "UPDATE xrm_sys.assistant_message SET question = $2, answer = jsonb_build_object('answer', $2::text) "
                "WHERE lower(question || ' ' || answer::text) LIKE ANY($1::text[])", patterns, REDACTED)
            changed += int(status.split()[-1])
        return changed

    return redact()


async def _follow(platform: Any, stop: asyncio.Event) -> None:
    from .index import RecordIndex

    index: RecordIndex | None = None
    while not stop.is_set():
        try:
            if index is None:
                index = await _open_index(platform)
            await index.catch_up()
        except Exception:  # noqa: BLE001 - the follower must outlive a bad moment; the outbox is read again next time
            log.exception("the assistant's index could not apply the latest changes; retrying")
        try:
            await asyncio.wait_for(stop.wait(), timeout=platform.settings.worker_poll_seconds)
        except asyncio.TimeoutError:
            pass


async def _open_index(platform: Any) -> Any:
    from .embedding import get_embedder
    from .index import RecordIndex

    embedder = await asyncio.to_thread(get_embedder)
    index = RecordIndex(platform.db, platform.registry, embedder)
    await index.prepare()
    return index


@click.command("reindex")
@click.option("--entity", "entities", multiple=True, help="Only these entities (repeatable; default every searchable one).")
def reindex_command(entities: tuple[str, ...]) -> None:
    """Embed every record of the searchable entities again (unchanged texts are skipped), with progress."""
    from xrm.runtime import open_platform

    from .embedding import get_embedder
    from .index import RecordIndex

    async def main() -> None:
        async with open_platform() as platform:
            unknown = [e for e in entities if e not in platform.registry]
            if unknown:
                raise click.UsageError(f"no such entity: {', '.join(unknown)}")
            click.echo("loading the embedding model ...", err=True)
            embedder = await asyncio.to_thread(get_embedder)
            index = RecordIndex(platform.db, platform.registry, embedder)
            started = time.monotonic()
            bars: dict[str, Any] = {}

            def progress(entity: str, done: int, total: int) -> None:
                bar = bars.get(entity)
                if bar is None:
                    bar = bars[entity] = click.progressbar(length=max(total, 1), label=entity.ljust(16), file=sys.stderr)
                    bar.__enter__()
                bar.update(done - bar.pos)
                if done >= total:
                    bar.__exit__(None, None, None)

            result = await index.reindex(list(entities) or None, progress=progress)
            for bar in bars.values():
                if not bar.finished:
                    bar.__exit__(None, None, None)
            seconds = time.monotonic() - started
            for entity, stats in result.items():
                click.echo(f"{entity}: {stats.embedded} embedded, {stats.unchanged} unchanged, {stats.removed} removed")
            embedded = sum(s.embedded for s in result.values())
            click.echo(f"{embedded} records embedded in {seconds:.1f} s ({embedded / seconds if seconds else 0:.0f}/s)")

    asyncio.run(main())


@click.command("ask")
@click.option("--as", "user", required=True, help="The user who asks: the answer covers only the records they may open.")
@click.option("--json", "as_json", is_flag=True, help="Print answer, cited record ids and the tool calls as JSON.")
@click.argument("question")
def ask_command(user: str, as_json: bool, question: str) -> None:
    """Ask the assistant QUESTION (English or German) as USER."""
    import json

    from xrm.runtime import open_platform

    from .embedding import get_embedder
    from .service import AssistantService

    async def main() -> None:
        async with open_platform() as platform:
            principal = await platform.security().principal_for_user(user)
            service = AssistantService(platform.db, platform.registry, principal, platform.policy, embedder_factory=get_embedder)
            answer = await service.ask(question)
            if as_json:
                click.echo(json.dumps(answer.as_json(), ensure_ascii=False, indent=2))
                return
            click.echo(answer.text)
            for citation in answer.citations:
                click.echo(f"  [{citation.entity}] {citation.label}  {citation.href}")

    asyncio.run(main())


@hookimpl
def xrm_cli_commands() -> list[click.Command]:
    return [reindex_command, ask_command]


@hookimpl
def xrm_ui_routes() -> list[Any]:
    from .views import ui_handlers

    return list(ui_handlers)


@hookimpl
def xrm_menu_entries(principal: Any, language: str) -> list[Any]:
    from xrm.plugins import MenuEntry

    entries = [MenuEntry("Assistent" if language == "de" else "Assistant", "/assistant", order=40)]
    if "admin" in principal.roles:
        entries.append(MenuEntry("Fragen an den Assistenten" if language == "de" else "Assistant questions", "/admin/assistant", order=61))
    return entries


@hookimpl
def xrm_api_routes() -> list[Any]:
    from .api import api_handlers

    return api_handlers


@hookimpl
def xrm_openapi(registry: Any) -> dict[str, Any]:
    from .api import openapi

    return openapi(registry)
