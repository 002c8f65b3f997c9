"""The built-in planner: an English or German question -> one Intent over the entity metadata.

No model and no list of phrasings per entity: the question's words are matched
against the lexicon (entity, field and option names and labels in both
languages, declared synonyms) and against the names of records the asker may
open (found through RecordService with their principal, so a name they may not
see is never recognised). What is left decides the kind:

- count ("how many", "wie viele"), sum ("total", "Summe", "insgesamt"),
  average ("average", "Durchschnitt"), min/max;
- top-N ("top 5", "our five biggest customers by revenue", "die drei größten");
- lookup of a named record's fields ("phone number of Max Mustermann") and
  records related to a named one ("Who is the contact at Globex?");
- list with filters: select options ("in negotiation", "offene"), numbers
  ("over 50,000", "über 10.000"), date ranges ("this month", "im letzten
  Quartal", "2024"), a named record ("for ACME"), "my"/"meine";
- search: anything else with content words becomes a hybrid search.

The Intent is executed by xrm.assistant.service through the tools.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from xrm.db.database import Database
from xrm.errors import PermissionDenied
from xrm.records.policy import Policy
from xrm.records.principal import Principal
from xrm.records.service import RecordService
from xrm.registry import CompiledEntity, Registry

from .index import searchable_entities
from .language import DateRange, date_range, detect_language, normalise, number_in, tokens
from .lexicon import Lexicon, Match
from .retrieval import STOP_WORDS, query_words

__all__ = ["Filter", "Intent", "NamedRecord", "Planner"]

_COUNT = [("how", "many"), ("how", "much"), ("wie", "viele"), ("wieviele",), ("wie", "viel"), ("number", "of"),
          ("anzahl",), ("count",), ("zahl", "der")]
_SUM = [("total",), ("sum",), ("summe",), ("gesamt",), ("insgesamt",), ("gesamtwert",), ("combined",), ("altogether",),
        ("zusammen",), ("gesamtsumme",)]
_AVG = [("average",), ("avg",), ("mean",), ("durchschnitt",), ("durchschnittlich",), ("durchschnittliche",),
        ("durchschnittlichen",), ("mittel",), ("schnitt",)]
_TOP = {"top", "biggest", "largest", "best", "highest", "most", "greatest", "groessten", "groesste", "groessten",
        "wichtigsten", "besten", "hoechsten", "meisten", "umsatzstaerksten", "top-kunden"}
_BOTTOM = {"smallest", "lowest", "least", "kleinsten", "niedrigsten", "geringsten", "wenigsten"}
_MAX = {"maximum", "max", "hoechste", "hoechster", "hoechstes", "groesste", "groesster", "groesstes"}
_WHO = [("who", "is"), ("who", "are"), ("wer", "ist"), ("wer", "sind"), ("who",), ("wer",)]
_MY = {"my", "mine", "meine", "meinen", "meiner", "mein", "meines", "meinem"}
_NEGATION = {"not", "nicht", "no", "kein", "keine", "keinen", "non", "ohne", "without"}
_LIST = {"show", "list", "which", "what", "give", "find", "zeige", "zeig", "liste", "welche", "welcher", "welches",
         "gib", "finde", "nenne", "all", "alle"}
_CREATED = {"new", "neue", "neuen", "neuer", "neues", "created", "erstellt", "erstellte", "erstellten", "angelegt",
            "angelegte", "angelegten", "added", "hinzugefuegt"}
_COMPARATIVES = [
    (r"(?:more than|greater than|larger than|bigger than|above|over|exceeding|mehr als|groesser als|ueber|oberhalb von)", "gt"),
    (r"(?:at least|minimum|mindestens|ab)", "gte"),
    (r"(?:less than|smaller than|below|under|weniger als|kleiner als|unter|unterhalb von)", "lt"),
    (r"(?:at most|up to|maximum|hoechstens|bis zu|bis)", "lte"),
]
_LEGAL_FORMS = {"corp", "corporation", "inc", "gmbh", "ag", "kg", "ltd", "llc", "co", "se", "plc", "sa", "group",
                "holding", "und", "soehne", "company", "gbr", "ohg", "ug", "mbh", "kgaa", "bv", "nv", "the", "die", "der"}
_NUMERIC_KINDS = {"integer", "decimal", "currency"}


@dataclass(frozen=True)
class NamedRecord:
    entity: str
    id: uuid.UUID
    name: str


@dataclass
class Filter:
    field: str
    op: str
    value: Any
    shown: str
    """How the answer names it, e.g. "Stage: Negotiation" or "Expected close: this month"."""


@dataclass
class Intent:
    kind: str
    """count, sum, avg, max, min, top, list, lookup, related, search, ambiguous or none."""
    language: str
    entity: str | None = None
    filters: list[Filter] = field(default_factory=list)
    measure: str | None = None
    """The numeric field of sum/avg/min/max/top."""
    group: str | None = None
    """top-N over another entity: the reference field of `entity` to group by (e.g. deal.account)."""
    group_entity: str | None = None
    limit: int = 10
    descending: bool = True
    fields: list[str] = field(default_factory=list)
    """lookup: the fields asked for."""
    record: NamedRecord | None = None
    candidates: list[NamedRecord] = field(default_factory=list)
    """ambiguous: the records a name could mean."""
    search: str | None = None
    date: DateRange | None = None


class Planner:
    def __init__(self, db: Database, registry: Registry, policy: Policy | None = None, *, today: dt.date | None = None) -> None:
        self.db = db
        self.registry = registry
        self.policy = policy
        self.today = today

    def _service(self, entity: str, principal: Principal) -> RecordService:
        return RecordService(self.db, self.registry, entity, principal, self.policy)

    def _readable(self, principal: Principal) -> list[CompiledEntity]:
        readable = []
        for entity in self.registry:
            if self._service(entity.name, principal).policy_scope("read") != "none":
                readable.append(entity)
        return readable

    async def plan(self, question: str, principal: Principal) -> Intent:
        language = detect_language(question)
        words = tokens(question)
        entities = self._readable(principal)
        names = {e.name for e in entities}
        hidden = {e.name: self._service(e.name, principal).hidden_fields for e in entities}
        lexicon = Lexicon(self.registry, entities)
        matches = [m for m in lexicon.find(words)
                   if m.meaning.field is None or m.meaning.field not in hidden.get(m.meaning.entity, frozenset())]
        used: set[int] = {i for m in matches for i in range(m.start, m.end)}
        today = self.today or dt.date.today()
        found_date = date_range(words, today)
        date_words: set[int] = found_date[1] if found_date else set()
        used |= date_words

        named, candidates, name_words = await self._named_records(question, words, used, lexicon.words(), entities, principal)
        used |= name_words
        if candidates:
            return Intent("ambiguous", language, candidates=candidates)

        entity_mentions = [m for m in matches if m.meaning.kind == "entity"]
        target = self._target(entity_mentions, matches, named, names)
        intent = Intent("none", language)
        intent.record = named
        kind = self._kind(words, used)
        n = self._top_n(words)

        # Lookup: fields of the named record ("phone number of Max Mustermann", "Wie ist die E-Mail von ...").
        if named is not None and (target is None or target == named.entity) and kind in ("list", "lookup", "who"):
            asked = [m.meaning.field for m in matches if m.meaning.kind == "field" and m.meaning.entity == named.entity
                     and m.meaning.field is not None]
            if asked or target == named.entity or kind == "lookup":
                intent.kind, intent.entity, intent.fields = "lookup", named.entity, list(dict.fromkeys(asked))
                return intent

        if target is None:
            content = [w for i, w in enumerate(words) if i not in used and w not in STOP_WORDS and len(w) > 2]
            if named is not None:
                intent.kind, intent.entity = "lookup", named.entity
                return intent
            if content or words:
                intent.kind, intent.search = "search", question
            return intent

        entity = self.registry.get(target)
        intent.entity = target
        visible = {n: f for n, f in entity.fields.items() if n not in hidden.get(target, frozenset())}
        intent.filters = self._option_filters(words, matches, target, visible, language)
        if named is not None and named.entity != target:
            reference = self._reference_to(entity, visible, named.entity, matches)
            if reference is None:
                intent.kind, intent.search = "search", question
                return intent
            intent.filters.append(Filter(reference, "eq", str(named.id), f"{visible[reference].label(language)}: {named.name}"))
        if set(words) & _MY:
            intent.filters.append(Filter("owner_id", "eq", str(principal.id), "mein" if language == "de" else "mine"))
        measure = self._measure(matches, target, visible)
        intent.filters.extend(self._amount_filters(question, measure or self._default_measure(visible), visible, language))
        if found_date is not None:
            date_field = self._date_field(entity, visible, matches, words)
            shown_field = entity.fields[date_field].label(language) if date_field in entity.fields else (
                "Erstellt" if language == "de" else "Created")
            intent.date = found_date[0]
            start, end = _bound(entity, date_field, found_date[0].start), _bound(entity, date_field, found_date[0].end)
            intent.filters.append(Filter(date_field, "gte", start, f"{shown_field}: {found_date[0].words}"))
            intent.filters.append(Filter(date_field, "lt", end, ""))

        if kind in ("count",):
            intent.kind = "count"
        elif kind in ("sum", "avg"):
            intent.kind, intent.measure = kind, measure or self._default_measure(visible)
            if intent.measure is None:
                intent.kind = "count"
        elif kind in ("top", "bottom", "max"):
            intent.limit = n or (1 if kind == "max" or not self._plural(words, entity_mentions) else 5)
            intent.descending = kind != "bottom"
            own = measure if measure in visible else None
            if own is not None:
                intent.kind, intent.measure = "top", own
            else:
                grouped = self._grouped_measure(target, names, hidden)
                if grouped is None:
                    intent.kind = "list"
                else:
                    source, reference, amount = grouped
                    intent.kind, intent.entity, intent.group, intent.group_entity, intent.measure = "top", source, reference, target, amount
                    intent.filters = self._option_filters(words, matches, source, self.registry.get(source).fields, language)
                    won = self._won_filter(source)
                    if won is not None and not any(f.field == won.field for f in intent.filters):
                        intent.filters.append(won)
        elif kind == "who" and named is not None:
            intent.kind = "related"
        else:
            content = [w for i, w in enumerate(words) if i not in used and w not in STOP_WORDS and w not in _LIST
                       and len(w) > 2 and not w.isdigit()]
            if not intent.filters and content:
                intent.kind, intent.search = "search", question
            else:
                intent.kind = "list" if named is None or named.entity != target else "lookup"
                intent.measure = measure
        return intent

    # -- the parts ------------------------------------------------------------------
    def _kind(self, words: Sequence[str], used: set[int]) -> str:
        free = {w for i, w in enumerate(words) if i not in used}  # "Max Mustermann" asks for no maximum
        text = " ".join(words)
        if _has(words, _COUNT, used):
            return "count"
        if _has(words, _AVG, used):
            return "avg"
        if _has(words, _SUM, used):
            return "sum"
        if free & _TOP or re.search(r"\btop\s*\d", text):
            return "top"
        if free & _BOTTOM:
            return "bottom"
        if free & _MAX:
            return "max"
        if _has(words, _WHO, used):
            return "who"
        return "list"

    def _top_n(self, words: Sequence[str]) -> int | None:
        for i, word in enumerate(words):
            if word in _TOP | _BOTTOM:
                for neighbour in (words[i + 1] if i + 1 < len(words) else "", words[i - 1] if i else ""):
                    n = number_in(neighbour)
                    if n:
                        return n
        match = re.search(r"\btop\s*(\d{1,3})\b", " ".join(words))
        return int(match.group(1)) if match else None

    def _plural(self, words: Sequence[str], mentions: Sequence[Match]) -> bool:
        for m in mentions:
            word = words[m.end - 1]
            entity = self.registry.get(m.meaning.entity)
            plurals = {normalise(p) for p in (entity.definition.xrm.get("plural") or {}).values()}
            if word in plurals or word.endswith(("s", "en", "n")):
                return True
        return False

    def _target(self, mentions: Sequence[Match], matches: Sequence[Match], named: NamedRecord | None, names: set[str]) -> str | None:
        candidates = [m.meaning.entity for m in mentions if m.meaning.entity in names]
        if named is not None:
            others = [c for c in candidates if c != named.entity]
            if others:
                return others[0]
        if candidates:
            return candidates[0]
        # No entity named: options of one entity only ("Which deals ..." is named; "what is won this month" is not).
        options = {m.meaning.entity for m in matches if m.meaning.kind == "option" and m.meaning.entity in names}
        if len(options) == 1 and named is None:
            return options.pop()
        return None

    def _option_filters(self, words: Sequence[str], matches: Sequence[Match], entity: str,
                        visible: Mapping[str, Any], language: str) -> list[Filter]:
        chosen: dict[str, list[tuple[str, bool]]] = {}
        for m in matches:
            meaning = m.meaning
            if meaning.kind != "option" or meaning.entity != entity or meaning.field not in visible:
                continue
            negated = m.start > 0 and words[m.start - 1] in _NEGATION
            chosen.setdefault(meaning.field, [])
            if (meaning.option, negated) not in chosen[meaning.field]:
                chosen[meaning.field].append((meaning.option, negated))  # type: ignore[arg-type]
        filters = []
        for name, options in chosen.items():
            f = visible[name]
            labels = f.xrm.get("option_labels") or {}
            shown = ", ".join((labels.get(o) or {}).get(language) or o for o, _ in options)
            positive = [o for o, negated in options if not negated]
            negative = [o for o, negated in options if negated]
            if positive:
                filters.append(Filter(name, "eq" if len(positive) == 1 else "in", positive[0] if len(positive) == 1 else positive,
                                      f"{f.label(language)}: {shown}"))
            for option in negative:
                filters.append(Filter(name, "ne", option, f"{f.label(language)}: {'nicht' if language == 'de' else 'not'} {option}"))
        return filters

    def _reference_to(self, entity: CompiledEntity, visible: Mapping[str, Any], target: str, matches: Sequence[Match]) -> str | None:
        fields = [n for n, f in visible.items() if f.references == target]
        if not fields:
            return None
        mentioned = [m.meaning.field for m in matches if m.meaning.kind == "field" and m.meaning.entity == entity.name
                     and m.meaning.field in fields]
        if mentioned:
            return mentioned[0]
        return target if target in fields else fields[0]

    def _measure(self, matches: Sequence[Match], entity: str, visible: Mapping[str, Any]) -> str | None:
        for m in matches:
            if m.meaning.kind == "field" and m.meaning.entity == entity and m.meaning.field in visible:
                if _kind_of(visible[m.meaning.field]) in _NUMERIC_KINDS:
                    return m.meaning.field
        return None

    def _default_measure(self, visible: Mapping[str, Any]) -> str | None:
        numeric = [(n, f) for n, f in visible.items() if _kind_of(f) in _NUMERIC_KINDS]
        currency = [n for n, f in numeric if f.type.name == "currency"]
        return currency[0] if currency else (numeric[0][0] if numeric else None)

    def _amount_filters(self, question: str, measure: str | None, visible: Mapping[str, Any], language: str) -> list[Filter]:
        if measure is None:
            return []
        text = normalise(question)
        filters = []
        for pattern, op in _COMPARATIVES:
            for match in re.finditer(pattern + r"\s+(?:eur|euro|usd|\$|€)?\s*(\d[\d.,\s]*\d|\d)\s*(k|tsd|thousand|tausend|mio|million|millionen|m)?\b", text):
                raw, scale = match.group(1), match.group(2)
                value = _amount(raw, language)
                if value is None:
                    continue
                value *= {"k": 1e3, "tsd": 1e3, "thousand": 1e3, "tausend": 1e3, "m": 1e6, "mio": 1e6, "million": 1e6,
                          "millionen": 1e6}.get(scale or "", 1)
                if 1900 <= value <= 2100 and scale is None and "." not in raw and "," not in raw:
                    continue  # "after 2024" is a year, not an amount
                f = visible[measure]
                symbol = {"gt": ">", "gte": "≥", "lt": "<", "lte": "≤"}[op]
                filters.append(Filter(measure, op, value, f"{f.label(language)} {symbol} {_show_number(value, language)}"))
        return filters

    def _date_field(self, entity: CompiledEntity, visible: Mapping[str, Any], matches: Sequence[Match], words: Sequence[str]) -> str:
        temporal = [n for n, f in visible.items() if _kind_of(f) in ("date", "datetime")]
        for m in matches:
            if m.meaning.kind == "field" and m.meaning.entity == entity.name and m.meaning.field in temporal:
                return m.meaning.field  # type: ignore[return-value]
        if set(words) & _CREATED:
            return "created_at"
        assistant = entity.definition.xrm.get("assistant")
        declared = assistant.get("date_field") if isinstance(assistant, Mapping) else None
        if declared in temporal:
            return declared  # type: ignore[no-any-return]
        return "created_at"

    def _grouped_measure(self, target: str, names: set[str], hidden: Mapping[str, frozenset[str]]) -> tuple[str, str, str] | None:
        """For "biggest customers": an entity referencing `target` with a currency field (deals' amounts per account)."""
        for entity in self.registry:
            if entity.name not in names or entity.name == target:
                continue
            visible = {n: f for n, f in entity.fields.items() if n not in hidden.get(entity.name, frozenset())}
            references = [n for n, f in visible.items() if f.references == target]
            amount = [n for n, f in visible.items() if f.type.name == "currency"]
            if references and amount:
                reference = target if target in references else references[0]
                return entity.name, reference, amount[0]
        return None

    def _won_filter(self, entity_name: str) -> Filter | None:
        """Revenue counts what was won: a select option declared as the entity's success state (x-xrm assistant.won)."""
        entity = self.registry.get(entity_name)
        assistant = entity.definition.xrm.get("assistant")
        won = assistant.get("won") if isinstance(assistant, Mapping) else None
        if not isinstance(won, Mapping) or won.get("field") not in entity.fields:
            return None
        f = entity.fields[won["field"]]
        return Filter(won["field"], "eq", won["value"], f"{f.label('en')}: {won['value']}")

    async def _named_records(self, question: str, words: Sequence[str], used: set[int], lexicon_words: set[str],
                             entities: Sequence[CompiledEntity], principal: Principal,
                             ) -> tuple[NamedRecord | None, list[NamedRecord], set[int]]:
        """The record the question names ("ACME", "die Müller GmbH", "Max Mustermann"), among those the asker may open."""
        free = {i: w for i, w in enumerate(words) if i not in used and w not in STOP_WORDS and len(w) > 1}
        if not free:
            return None, [], set()
        search_words = [w for w in query_words(question) if normalise(w) in free.values()]
        if not search_words:
            return None, [], set()
        scored: list[tuple[float, NamedRecord, set[int]]] = []
        for entity in searchable_entities(self.registry):
            if entity not in entities or not entity.definition.display_field:
                continue
            display = entity.definition.display_field
            service = self._service(entity.name, principal)
            if display in service.hidden_fields:
                continue
            try:
                records = await _name_candidates(self.db, service, search_words, display)
            except PermissionDenied:
                continue
            for record_id, name in records:
                score, positions = _name_score(name, free, lexicon_words)
                if score > 0:
                    scored.append((score, NamedRecord(entity.name, record_id, name), positions))
        if not scored:
            return None, [], set()
        scored.sort(key=lambda s: -s[0])
        best = scored[0][0]
        top = [s for s in scored if s[0] == best]
        distinct = {(s[1].entity, s[1].id): s for s in top}
        if len(distinct) > 1:
            # Same words, several records: if one has exactly the name, it wins; else ask.
            exact = [s for s in distinct.values() if normalise(s[1].name) == " ".join(free[i] for i in sorted(s[2]))]
            if len(exact) == 1:
                return exact[0][1], [], exact[0][2]
            return None, [s[1] for s in distinct.values()][:8], top[0][2]
        return top[0][1], [], top[0][2]


def _has(words: Sequence[str], phrases: Sequence[tuple[str, ...]], used: set[int] | None = None) -> bool:
    """Does the question say one of the phrases, in words no term or name took ("phone number of" is no count)?"""
    taken = used or set()
    for phrase in phrases:
        n = len(phrase)
        if any(tuple(words[i:i + n]) == phrase and not taken & set(range(i, i + n)) for i in range(len(words) - n + 1)):
            return True
    return False


def _bound(entity: CompiledEntity, name: str, day: dt.date) -> str:
    """A date range's bound as the field compares: a date, or midnight UTC for datetimes and the system timestamps."""
    f = entity.fields.get(name)
    if f is not None and f.type.name == "date":
        return day.isoformat()
    return dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).isoformat()


def _kind_of(f: Any) -> str:
    name = f.type.name
    if name == "currency":
        return "currency"
    if name in ("integer", "decimal", "date", "datetime"):
        return name
    if name == "text" and f.schema.get("type") == "number":
        return "decimal"
    return name


def _amount(raw: str, language: str) -> float | None:
    raw = raw.replace(" ", "")
    if re.fullmatch(r"\d{1,3}([.,]\d{3})+", raw):
        return float(re.sub(r"[.,]", "", raw))  # 50,000 / 50.000: thousands
    if re.fullmatch(r"\d+[.,]\d{1,2}", raw):
        return float(raw.replace(",", "."))
    if raw.isdigit():
        return float(raw)
    return None


def _show_number(value: float, language: str) -> str:
    from babel.numbers import format_decimal

    return format_decimal(value, locale="de_DE" if language == "de" else "en_US")


def _name_score(name: str, free: Mapping[int, str], lexicon_words: set[str]) -> tuple[float, set[int]]:
    """How well the question names this record: every word of the name (2 per word), or its distinctive words with only a legal form missing."""
    parts = tokens(name)
    if not parts:
        return 0.0, set()
    positions: set[int] = set()
    matched = []
    for part in parts:
        hit = next((i for i, w in free.items() if w == part and i not in positions), None)
        if hit is not None:
            positions.add(hit)
            matched.append(part)
    if not matched:
        return 0.0, set()
    missing = [p for p in parts if p not in matched]
    distinctive = [p for p in matched if p not in _LEGAL_FORMS and p not in lexicon_words and len(p) >= 3]
    if not distinctive:
        return 0.0, set()
    if not missing:
        return 2.0 * len(parts), positions
    if all(p in _LEGAL_FORMS for p in missing):
        return 2.0 * len(matched) - 0.5, positions
    if len(parts) >= 2 and len(distinctive) == len(matched) and all(len(p) >= 4 for p in distinctive):
        return 1.0 * len(matched), positions  # a person by surname alone ("Mustermann")
    return 0.0, set()


async def _name_candidates(db: Database, service: RecordService, words: Sequence[str], display: str) -> list[tuple[uuid.UUID, str]]:
    """Records of the entity whose full text has one of the words, with their display value (permitted ones only)."""
    params: list[Any] = []
    permitted = service.read_conditions(params)
    params.append(" | ".join(f"'{w}'" for w in words))
    column = service.entity.fields[display].columns()[0].name
    async with db.connection() as connection:
        rows = await connection.fetch(
            f'SELECT id, "{column}" AS name FROM {service.entity.table}, to_tsquery(\'simple\', ${len(params)}) AS q '
            f"WHERE {permitted} AND search_vector @@ q ORDER BY ts_rank_cd(search_vector, q) DESC, id LIMIT 20", *params)
    return [(row["id"], row["name"]) for row in rows if row["name"]]
