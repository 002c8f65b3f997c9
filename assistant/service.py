"""AssistantService.ask: question -> planner -> tools -> answer text with cited records, audited.

Every entry point (web chat, API, `xrm ask`) calls this with the asking
user's principal. The answer only ever holds what the tools returned through
RecordService for that principal; each question, its tool calls and the ids of
the records the assistant saw are written to the audit trail
("assistant.asked"). Record text is data: it is quoted into the answer, never
read as an instruction, so a record saying "ignore previous instructions"
changes nothing.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from babel.dates import format_date, format_datetime
from babel.numbers import format_currency, format_decimal

from xrm.audit import AuditLog
from xrm.db.database import Database, json_dumps
from xrm.errors import PermissionDenied, ValidationFailed
from xrm.records.policy import Policy
from xrm.records.principal import Principal
from xrm.registry import Registry

from .embedding import Embedder
from .planner import Filter, Intent, NamedRecord, Planner
from .tools import Toolbox, ToolCall, conditions_of

__all__ = ["Answer", "AssistantService", "Citation", "conversation"]

log = logging.getLogger(__name__)
_LOCALE = {"de": "de_DE", "en": "en_US"}
_CITED = 10


@dataclass
class Citation:
    entity: str
    id: str
    label: str

    @property
    def href(self) -> str:
        return f"/e/{self.entity}/{self.id}"


@dataclass
class Answer:
    question: str
    text: str
    language: str
    kind: str
    citations: list[Citation] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    value: Any = None
    """The number (count, sum, average) or list of names the answer states, for programs (--json, the evaluation)."""
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "question": self.question, "answer": self.text, "language": self.language, "kind": self.kind,
            "value": _jsonable(self.value),
            "citations": [{"entity": c.entity, "id": c.id, "label": c.label, "href": c.href} for c in self.citations],
            "tool_calls": [asdict(call) for call in self.tool_calls], "seconds": round(self.seconds, 3),
        }


def _jsonable(value: Any) -> Any:
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, (dt.date, uuid.UUID)):
        return str(value)
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


class AssistantService:
    def __init__(self, db: Database, registry: Registry, principal: Principal, policy: Policy | None = None,
                 embedder: Embedder | None = None, *, today: dt.date | None = None,
                 embedder_factory: Callable[[], Embedder] | None = None, chat_model: Any = "from-env") -> None:
        self.db = db
        self.registry = registry
        self.principal = principal
        self.policy = policy
        self.embedder = embedder
        self.embedder_factory = embedder_factory
        self.today = today
        if chat_model == "from-env":
            from .agent import chat_model_from_env

            chat_model = chat_model_from_env()
        self.chat_model = chat_model
        """A langchain chat model with tool calling (XRM_LLM_*), or None: the built-in planner answers."""

    async def ask(self, question: str) -> Answer:
        started = time.monotonic()
        question = (question or "").strip()
        if not question:
            raise ValidationFailed("question", [_problem("/question", "ask a question")])
        if len(question) > 2000:
            raise ValidationFailed("question", [_problem("/question", "is longer than 2,000 characters")])
        tools = Toolbox(self.db, self.registry, self.principal, self.policy, self.embedder, self.embedder_factory)
        answer = await self._agent_answer(question, tools) if self.chat_model is not None else None
        if answer is None:
            intent = await Planner(self.db, self.registry, self.policy, today=self.today).plan(question, self.principal)
            try:
                answer = await self._answer(question, intent, tools)
            except (ValidationFailed, PermissionDenied):
                answer = await self._fallback(question, intent, tools)
        answer.tool_calls = tools.calls
        answer.seconds = time.monotonic() - started
        await self._audit(answer)
        return answer

    async def _agent_answer(self, question: str, tools: Toolbox) -> Answer | None:
        """The LLM agent's answer; None (the planner answers) when the model cannot be reached or fails."""
        from .agent import run_agent
        from .language import detect_language

        try:
            text, seen = await run_agent(self.chat_model, tools, question)
        except Exception as error:  # noqa: BLE001 - an unreachable or broken model must not take the assistant down
            log.warning("the LLM agent failed (%s: %s); the built-in planner answers", type(error).__name__, error)
            tools.calls.clear()
            return None
        mentioned = [s for s in seen if s[2] and s[2] in text]
        citations = [Citation(entity, record_id, label) for entity, record_id, label in (mentioned or seen)[:_CITED]]
        return Answer(question, text, detect_language(question), "agent", citations)

    async def _audit(self, answer: Answer) -> None:
        """The audit entry and the user's conversation, in one transaction."""
        seen = list(dict.fromkeys(i for call in answer.tool_calls for i in call.record_ids))
        async with self.db.transaction() as tx:
            await tx.connection.execute(
                "INSERT INTO xrm_sys.assistant_message (user_id, question, answer) VALUES ($1, $2, $3)",
                self.principal.id, answer.question, json.loads(json_dumps(answer.as_json())))
            await AuditLog.write(tx.connection, self.principal, "assistant.asked", details={
                "question": answer.question, "kind": answer.kind, "answer": answer.text[:2000],
                "tool_calls": [{"name": c.name, "arguments": c.arguments, "record_ids": c.record_ids} for c in answer.tool_calls],
                "record_ids": seen, "cited": [c.id for c in answer.citations],
            })

    # -- composing answers -------------------------------------------------------------
    async def _answer(self, question: str, intent: Intent, tools: Toolbox) -> Answer:
        de = intent.language == "de"
        if intent.kind == "ambiguous":
            citations = [Citation(c.entity, str(c.id), c.name) for c in intent.candidates]
            text = ("Welchen Datensatz meinen Sie? " if de else "Which record do you mean? ") + "; ".join(c.label for c in citations)
            return Answer(question, text, intent.language, "ambiguous", citations, value=[c.label for c in citations])
        if intent.kind in ("search", "none") or intent.entity is None:
            return await self._fallback(question, intent, tools, searched=True)
        entity = self.registry.get(intent.entity)
        where = conditions_of(intent.filters)
        described = self._described(intent)
        if intent.kind == "lookup" and intent.record is not None:
            return await self._lookup(question, intent, tools)
        if intent.kind == "count":
            result = await tools.aggregate(intent.entity, measures=["count"], where=where)
            count = result.rows[0]["count"] if result.rows else 0
            records, _ = await tools.query_records(intent.entity, where, limit=_CITED)
            label = entity.definition.label(intent.language, plural=count != 1)
            text = f"{format_decimal(count, locale=_LOCALE[intent.language])} {label}{described}."
            return Answer(question, text, intent.language, "count", self._cite(intent.entity, records), value=count)
        if intent.kind in ("sum", "avg") and intent.measure:
            op = intent.kind
            result = await tools.aggregate(intent.entity, measures=[f"{op}:{intent.measure}", "count"], where=where)
            f = entity.fields[intent.measure]
            records, _ = await tools.query_records(intent.entity, where, order_by=[f"-{intent.measure}"], limit=_CITED)
            parts, values = [], []
            for row in result.rows:
                value = row.get(f"{op}:{intent.measure}")
                if value is None:
                    continue
                currency = row.get(f"{intent.measure}.currency")
                values.append({"value": value, "currency": currency.strip() if isinstance(currency, str) else currency})
                parts.append(self._number(value, currency, intent.language))
            what = ({"sum": "Summe", "avg": "Durchschnitt"} if de else {"sum": "Total", "avg": "Average"})[op]
            label = entity.definition.label(intent.language, plural=True)
            count = sum(row["count"] for row in result.rows)
            if not parts:
                text = (f"Keine {label}{described} mit {f.label('de')}." if de else f"No {label}{described} with a {f.label('en').lower()}.")
                return Answer(question, text, intent.language, op, [], value=None)
            of = "von" if de else "of"
            over = f" ({format_decimal(count, locale=_LOCALE[intent.language])} {label})"
            text = f"{what} {f.label(intent.language)} {of} {label}{described}: {', '.join(parts)}{over}."
            value = values[0]["value"] if len(values) == 1 else values
            return Answer(question, text, intent.language, op, self._cite(intent.entity, records), value=value)
        if intent.kind == "top" and intent.measure:
            return await self._top(question, intent, tools)
        if intent.kind == "related" and intent.record is not None:
            return await self._list(question, intent, tools)
        return await self._list(question, intent, tools)

    async def _top(self, question: str, intent: Intent, tools: Toolbox) -> Answer:
        assert intent.entity and intent.measure
        de = intent.language == "de"
        entity = self.registry.get(intent.entity)
        where = conditions_of(intent.filters)
        direction = "-" if intent.descending else ""
        if intent.group:
            result = await tools.aggregate(intent.entity, group_by=[intent.group], measures=[f"sum:{intent.measure}"],
                                           where=where + conditions_of([Filter(intent.group, "is_null", False, "")]),
                                           order_by=[f"{direction}sum:{intent.measure}"], limit=intent.limit)
            labels = result.labels.get(intent.group, {})
            lines, citations, names = [], [], []
            for row in result.rows:
                key = row[intent.group]
                name = labels.get(key)
                if name is None:
                    continue  # a record the asker may not open is not named (its deals still count to nobody shown)
                currency = row.get(f"{intent.measure}.currency")
                lines.append(f"{name}: {self._number(row[f'sum:{intent.measure}'], currency, intent.language)}")
                citations.append(Citation(intent.group_entity or "", str(key), name))
                names.append(name)
            group_label = self.registry.get(intent.group_entity).definition.label(intent.language, plural=True) if intent.group_entity else ""
            f = entity.fields[intent.measure]
            basis = f"{f.label(intent.language)} ({entity.definition.label(intent.language, plural=True)}{self._described(intent)})"
            head = f"Top {len(lines)} {group_label} nach {basis}: " if de else f"Top {len(lines)} {group_label} by {basis}: "
            if not lines:
                return await self._fallback(question, intent, tools)
            return Answer(question, head + "; ".join(lines) + ".", intent.language, "top", citations, value=names)
        where = where + conditions_of([Filter(intent.measure, "is_null", False, "")])
        records, _ = await tools.query_records(intent.entity, where, order_by=[f"{direction}{intent.measure}"], limit=intent.limit)
        f = entity.fields[intent.measure]
        lines = [f"{self._title(intent.entity, r)}: {self._value(f, r.get(intent.measure), intent.language)}" for r in records]
        label = entity.definition.label(intent.language, plural=len(records) != 1)
        by = "nach" if de else "by"
        if not records:
            return await self._fallback(question, intent, tools)
        text = f"Top {len(records)} {label} {by} {f.label(intent.language)}{self._described(intent)}: " + "; ".join(lines) + "."
        return Answer(question, text, intent.language, "top", self._cite(intent.entity, records),
                      value=[self._title(intent.entity, r) for r in records])

    async def _list(self, question: str, intent: Intent, tools: Toolbox) -> Answer:
        assert intent.entity
        de = intent.language == "de"
        entity = self.registry.get(intent.entity)
        order = [f"-{intent.measure}"] if intent.measure else None
        records, total = await tools.query_records(intent.entity, conditions_of(intent.filters), order_by=order,
                                                   limit=_CITED, with_total=True)
        label = entity.definition.label(intent.language, plural=True)
        if not records:
            none = f"Keine {label}{self._described(intent)} gefunden." if de else f"No {label}{self._described(intent)} found."
            return Answer(question, none, intent.language, "list", [], value=[])
        names = [self._title(intent.entity, r) for r in records]
        details = [self._summary(intent.entity, r, intent.language) for r in records]
        shown = f"{format_decimal(total or len(records), locale=_LOCALE[intent.language])} {entity.definition.label(intent.language, plural=(total or 0) != 1)}"
        more = (f" (die ersten {len(records)})" if de else f" (the first {len(records)})") if (total or 0) > len(records) else ""
        text = f"{shown}{self._described(intent)}{more}: " + "; ".join(details) + "."
        return Answer(question, text, intent.language, "related" if intent.kind == "related" else "list",
                      self._cite(intent.entity, records), value=names)

    async def _lookup(self, question: str, intent: Intent, tools: Toolbox) -> Answer:
        assert intent.record is not None
        de = intent.language == "de"
        record = await tools.get_record(intent.record.entity, intent.record.id)
        entity = self.registry.get(intent.record.entity)
        hidden = tools.service(entity.name).hidden_fields
        asked = [n for n in intent.fields if n in entity.fields]
        title = self._title(entity.name, record)
        citation = Citation(entity.name, str(record["id"]), title)
        if not asked:
            summary = self._summary(entity.name, record, intent.language, every=True)
            return Answer(question, summary + ".", intent.language, "lookup", [citation], value=title)
        parts, values = [], []
        for name in asked:
            f = entity.fields[name]
            if name in hidden:
                parts.append(f"{f.label(intent.language)}: " + ("(keine Berechtigung)" if de else "(you may not see this field)"))
                continue
            value = record.get(name)
            if value in (None, "", []):
                parts.append(f"{f.label(intent.language)}: " + ("nicht erfasst" if de else "not recorded"))
                values.append(None)
                continue
            shown = await self._shown_value(tools, f, value, intent.language)
            parts.append(f"{f.label(intent.language)}: {shown}")
            values.append(shown)
        of = "von" if de else "of"
        text = f"{', '.join(parts)} ({entity.definition.label(intent.language)} {title})." if len(asked) > 1 else \
            f"{parts[0].split(':', 1)[0]} {of} {title}:{parts[0].split(':', 1)[1]}."
        return Answer(question, text, intent.language, "lookup", [citation], value=values[0] if len(values) == 1 else values)

    async def _fallback(self, question: str, intent: Intent, tools: Toolbox, *, searched: bool = False) -> Answer:
        """Semantic search: the closest records, said as such (never a made-up answer)."""
        de = intent.language == "de"
        hits = []
        if tools.embedder is not None or tools.embedder_factory is not None:
            hits = await tools.search_records(question, entities=[intent.entity] if intent.entity and not searched else None)
        citations = [Citation(h.entity, str(h.id), self._title(h.entity, h.record)) for h in hits]
        if not citations:
            text = ("Dazu habe ich in den Datensätzen, die Sie sehen dürfen, nichts gefunden." if de
                    else "I found nothing about that in the records you may open.")
            return Answer(question, text, intent.language, "search", [], value=[])
        lines = [f"{c.label} ({self.registry.get(c.entity).definition.label(intent.language)})" for c in citations]
        head = ("Eine genaue Antwort kann ich nicht geben; diese Datensätze passen am besten: " if not searched and de else
                "Diese Datensätze passen am besten: " if de else
                "I cannot answer that exactly; these records come closest: " if not searched else
                "These records match best: ")
        return Answer(question, head + "; ".join(lines) + ".", intent.language, "search", citations, value=[c.label for c in citations])

    # -- words and numbers -----------------------------------------------------------
    def _described(self, intent: Intent) -> str:
        parts = [f.shown for f in intent.filters if f.shown]
        if not parts:
            return ""
        return " (" + "; ".join(parts) + ")"

    def _cite(self, entity: str, records: Sequence[Mapping[str, Any]]) -> list[Citation]:
        return [Citation(entity, str(r["id"]), self._title(entity, r)) for r in records]

    def _title(self, entity_name: str, record: Mapping[str, Any]) -> str:
        entity = self.registry.get(entity_name)
        display = entity.definition.display_field
        value = record.get(display) if display else None
        return str(value) if value not in (None, "") else str(record.get("id"))

    def _summary(self, entity_name: str, record: Mapping[str, Any], language: str, *, every: bool = False) -> str:
        """"Title (Field: value, ...)" with the select and number fields that say most about a record."""
        entity = self.registry.get(entity_name)
        title = self._title(entity_name, record)
        extras = []
        for name, f in entity.fields.items():
            if name == entity.definition.display_field or name not in record:
                continue
            value = record.get(name)
            if value in (None, "", [], {}) or f.references or f.type.name in ("long_text", "json"):
                continue
            if every or f.type.name in ("select", "currency") or name in entity.definition.search_fields[:3]:
                extras.append(f"{f.label(language)}: {self._value(f, value, language)}")
            if len(extras) >= (8 if every else 3):
                break
        return f"{title} ({', '.join(extras)})" if extras else title

    def _value(self, f: Any, value: Any, language: str) -> str:
        locale = _LOCALE[language]
        if value is None:
            return "–"
        if f.type.name == "currency" and isinstance(value, Mapping):
            return self._number(value.get("amount"), value.get("currency"), language)
        if f.type.name == "select":
            labels = (f.xrm.get("option_labels") or {}).get(value) or {}
            return str(labels.get(language) or value)
        if isinstance(value, bool):
            return ("ja" if value else "nein") if language == "de" else ("yes" if value else "no")
        if isinstance(value, dt.datetime):
            return format_datetime(value, "short", locale=locale)
        if isinstance(value, dt.date):
            return format_date(value, "medium", locale=locale)
        if isinstance(value, (int, float, decimal.Decimal)):
            return format_decimal(value, locale=locale)
        if isinstance(value, list):
            return ", ".join(str(v) for v in value)
        return str(value)

    async def _shown_value(self, tools: Toolbox, f: Any, value: Any, language: str) -> str:
        if f.references:
            try:
                names = await tools.service(f.references).display_values([value])
            except PermissionDenied:
                names = {}
            return names.get(value) or ("(kein Zugriff)" if language == "de" else "(no access)")
        return self._value(f, value, language)

    def _number(self, value: Any, currency: Any, language: str) -> str:
        locale = _LOCALE[language]
        if value is None:
            return "–"
        if isinstance(currency, str) and currency.strip():
            return format_currency(value, currency.strip(), locale=locale)
        return format_decimal(round(decimal.Decimal(value), 2), locale=locale)


async def conversation(db: Database, user_id: uuid.UUID, limit: int = 50) -> list[dict[str, Any]]:
    """The user's latest questions and answers, oldest first (only their own)."""
    async with db.connection() as connection:
        rows = await connection.fetch(
            "SELECT id, asked_at, question, answer FROM xrm_sys.assistant_message WHERE user_id = $1 ORDER BY id DESC LIMIT $2",
            user_id, limit)
    return [{"id": r["id"], "asked_at": r["asked_at"], "question": r["question"], "answer": r["answer"]} for r in reversed(rows)]


def _problem(at: str, message: str) -> Any:
    from xrm.errors import Problem

    return Problem(at, message)


__all__ += ["NamedRecord"]
