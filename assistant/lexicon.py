"""What the words of a question can mean, read off the entity metadata (no hand-made list per entity).

For every entity: its name, labels and plurals in English and German and the
synonyms its definition declares (x-xrm assistant.synonyms); for every field:
its name, labels and synonyms (x-xrm synonyms); for every select field: its
options and their labels. A term is a tuple of normalised tokens; the planner
finds the longest terms in the question (`find`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from xrm.registry import CompiledEntity, Registry

from .language import inflects, tokens

__all__ = ["Lexicon", "Match", "Meaning", "TYPE_SYNONYMS"]

TYPE_SYNONYMS: dict[str, tuple[str, ...]] = {
    "phone": ("phone number", "telephone", "telephone number", "number", "Telefonnummer", "Rufnummer", "Nummer", "Tel"),
    "email": ("email address", "e-mail address", "mail", "mail address", "E-Mail-Adresse", "Mailadresse", "Mail"),
    "url": ("web site", "homepage", "web address", "Internetseite", "Homepage"),
}
"""Words for a field of a type, whatever its label: people ask for "the phone number", not "the Phone"."""


@dataclass(frozen=True)
class Meaning:
    kind: str
    """"entity", "field" or "option"."""
    entity: str
    field: str | None = None
    option: str | None = None


@dataclass(frozen=True)
class Match:
    meaning: Meaning
    start: int
    end: int
    """Token positions [start, end) in the question."""


def _labels(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, Mapping):
        return [v for v in value.values() if isinstance(v, str)]
    return []


def _synonyms(value: Any) -> list[str]:
    if isinstance(value, Mapping):
        return [w for words in value.values() if isinstance(words, list) for w in words if isinstance(w, str)]
    if isinstance(value, list):
        return [w for w in value if isinstance(w, str)]
    return []


class Lexicon:
    def __init__(self, registry: Registry, entities: Iterable[CompiledEntity] | None = None) -> None:
        self.terms: dict[tuple[str, ...], set[Meaning]] = {}
        for entity in entities if entities is not None else registry:
            definition = entity.definition
            xrm = definition.xrm
            assistant = xrm.get("assistant") if isinstance(xrm.get("assistant"), Mapping) else {}
            meaning = Meaning("entity", entity.name)
            for text in [entity.name.replace("_", " "), *_labels(xrm.get("label")), *_labels(xrm.get("plural")),
                         *_synonyms(assistant.get("synonyms"))]:
                self._add(text, meaning)
            for name, f in entity.fields.items():
                field_meaning = Meaning("field", entity.name, name)
                for text in [name.replace("_", " "), *_labels(f.xrm.get("label")), *_synonyms(f.xrm.get("synonyms")),
                             *TYPE_SYNONYMS.get(f.type.name, ())]:
                    self._add(text, field_meaning)
                options = f.schema.get("enum") or (f.schema.get("items") or {}).get("enum") or []
                option_labels = f.xrm.get("option_labels") or {}
                for option in options:
                    if not isinstance(option, str):
                        continue
                    option_meaning = Meaning("option", entity.name, name, option)
                    for text in [option.replace("_", " "), *_labels(option_labels.get(option))]:
                        self._add(text, option_meaning)
        self.longest = max((len(t) for t in self.terms), default=1)

    def _add(self, text: str, meaning: Meaning) -> None:
        words = tuple(tokens(text))
        if words:
            self.terms.setdefault(words, set()).add(meaning)

    def words(self) -> set[str]:
        """Every token some term uses (a record name made only of these is no name)."""
        return {w for term in self.terms for w in term}

    def find(self, words: Sequence[str]) -> list[Match]:
        """Terms in the question, longest first at each position; a word inflected ("offenen", "deals") still matches."""
        found: list[Match] = []
        i = 0
        while i < len(words):
            matched = False
            for length in range(min(self.longest, len(words) - i), 0, -1):
                window = words[i:i + length]
                meanings = self._lookup(window)
                if meanings:
                    found.extend(Match(m, i, i + length) for m in sorted(meanings, key=_order))
                    i += length
                    matched = True
                    break
            if not matched:
                i += 1
        return found

    def _lookup(self, window: Sequence[str]) -> set[Meaning]:
        exact = self.terms.get(tuple(window))
        if exact:
            return exact
        # Inflection on the last word only ("open tickets" -> "ticket"; "offenen" -> "offen").
        head, last = tuple(window[:-1]), window[-1]
        found: set[Meaning] = set()
        for term, meanings in self.terms.items():
            if len(term) == len(window) and term[:-1] == head and inflects(last, term[-1]):
                found |= meanings
        return found


def _order(meaning: Meaning) -> tuple[int, str, str, str]:
    return ({"entity": 0, "option": 1, "field": 2}[meaning.kind], meaning.entity, meaning.field or "", meaning.option or "")
