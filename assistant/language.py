"""Words of questions in English and German: normalising, inflection, numbers, date ranges.

Everything here is plain functions over text, so the planner's rules can be
read (and tested) one at a time. Matching works on normalised tokens: lower
case, umlauts spelled out (ä -> ae, ß -> ss), so "Müller", "Mueller" and
"MÜLLER" are one word.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from dataclasses import dataclass

__all__ = ["DateRange", "date_range", "detect_language", "inflects", "normalise", "number_in", "tokens"]

_UMLAUTS = str.maketrans({"ä": "ae", "ö": "oe", "ü": "ue", "ß": "ss"})
_TOKEN = re.compile(r"[^\W_]+(?:[-'][^\W_]+)*", re.UNICODE)


def normalise(text: str) -> str:
    folded = (text or "").lower().translate(_UMLAUTS)
    # Other accents (é, ñ) go; the umlauts were spelled out first, as Germans do without them.
    return "".join(c for c in unicodedata.normalize("NFKD", folded) if not unicodedata.combining(c))


def tokens(text: str) -> list[str]:
    """Normalised words; "e-mail" and "o'brien" stay one word, other punctuation splits."""
    return _TOKEN.findall(normalise(text))


_GERMAN_MARKERS = frozenset(
    "wie viele wieviele welche welcher welches wer wen wem ist sind hat haben der die das den dem des ein eine einen "
    "und oder mit von vom bei fuer ueber unter nach zeige zeig gib nenne alle meine unsere offene offenen im letzten "
    "diesem dieses diesen monat quartal jahr woche heute gestern summe durchschnitt gesamt insgesamt groessten "
    "welchen nummer telefonnummer ansprechpartner kunden".split())
_ENGLISH_MARKERS = frozenset(
    "how many much which who whom what is are does do has have the a an and or with of at for in on show list give "
    "tell me my our open last this month quarter year week today yesterday total sum average biggest largest top "
    "number phone contact customers".split())


def detect_language(text: str) -> str:
    """"de" or "en", by which language's common words the question has more of (umlauts tip a tie to German)."""
    words = tokens(text)
    german = sum(w in _GERMAN_MARKERS for w in words)
    english = sum(w in _ENGLISH_MARKERS for w in words)
    if german == english:
        return "de" if re.search(r"[äöüß]", text.lower()) else "en"
    return "de" if german > english else "en"


_ENDINGS = ("", "s", "e", "n", "en", "er", "es", "em", "ern", "ns")


def inflects(word: str, base: str) -> bool:
    """Is `word` `base` or an inflected form of it (plural, German case endings): "offenen" ~ "offen", "deals" ~ "deal"."""
    if word == base:
        return True
    if len(base) < 3 or not word.startswith(base):
        return base.endswith("y") and word == base[:-1] + "ies"
    return word[len(base):] in _ENDINGS


_NUMBER_WORDS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
    "twelve": 12, "fifteen": 15, "twenty": 20,
    "ein": 1, "eins": 1, "einen": 1, "zwei": 2, "drei": 3, "vier": 4, "fuenf": 5, "sechs": 6, "sieben": 7, "acht": 8,
    "neun": 9, "zehn": 10, "zwoelf": 12, "fuenfzehn": 15, "zwanzig": 20,
}


def number_in(word: str) -> int | None:
    """A small count written as digits or a word ("5", "five", "fünf" normalised to "fuenf")."""
    if word.isdigit() and len(word) <= 3:
        return int(word)
    return _NUMBER_WORDS.get(word)


_AMOUNT = re.compile(r"(?<![\w.,])(\d{1,3}(?:[.,\s]\d{3})+|\d+)(?:([.,])(\d{1,2}))?\s*(k|tsd|thousand|tausend|m|mio|million|millionen)?(?![\w])",
                     re.IGNORECASE)


def amounts_in(text: str) -> list[tuple[int, float]]:
    """(position, value) of the amounts in the text: "50,000", "50.000", "50k", "1,5 Mio", "2 million"."""
    found = []
    for match in _AMOUNT.finditer(text):
        whole, _, fraction, scale = match.groups()
        digits = re.sub(r"[.,\s]", "", whole)
        value = float(digits + ("." + fraction if fraction else ""))
        multiplier = {"k": 1e3, "tsd": 1e3, "thousand": 1e3, "tausend": 1e3, "m": 1e6, "mio": 1e6, "million": 1e6,
                      "millionen": 1e6}.get((scale or "").lower(), 1)
        found.append((match.start(), value * multiplier))
    return found


@dataclass(frozen=True)
class DateRange:
    start: dt.date
    """First day in the range."""
    end: dt.date
    """First day after the range."""
    words: str
    """The words that named it, as written in the question (for the answer)."""


_MONTHS = {
    "january": 1, "february": 2, "march": 3, "april": 4, "may": 5, "june": 6, "july": 7, "august": 8,
    "september": 9, "october": 10, "november": 11, "december": 12,
    "januar": 1, "jaenner": 1, "februar": 2, "maerz": 3, "mai": 5, "juni": 6, "juli": 7, "oktober": 10, "dezember": 12,
}
_UNITS = {"day": "day", "tag": "day", "week": "week", "woche": "week", "month": "month", "monat": "month",
          "quarter": "quarter", "quartal": "quarter", "year": "year", "jahr": "year"}
_THIS = {"this", "current", "diese", "dieser", "diesem", "diesen", "dieses", "laufende", "laufenden", "laufendes", "aktuelle",
         "aktuellen", "aktuellem", "aktuellen"}
_LAST = {"last", "previous", "past", "letzte", "letzten", "letztem", "letzter", "letztes", "vergangene", "vergangenen",
         "vergangenem", "vorige", "vorigen", "vorigem", "voriges"}
_NEXT = {"next", "coming", "naechste", "naechsten", "naechstem", "naechstes", "kommende", "kommenden", "kommendem"}


def _start_of(unit: str, day: dt.date) -> dt.date:
    if unit == "day":
        return day
    if unit == "week":
        return day - dt.timedelta(days=day.weekday())
    if unit == "month":
        return day.replace(day=1)
    if unit == "quarter":
        return day.replace(month=(day.month - 1) // 3 * 3 + 1, day=1)
    return day.replace(month=1, day=1)


def _shift(unit: str, start: dt.date, steps: int) -> dt.date:
    if unit == "day":
        return start + dt.timedelta(days=steps)
    if unit == "week":
        return start + dt.timedelta(weeks=steps)
    months = {"month": 1, "quarter": 3, "year": 12}[unit] * steps
    index = start.year * 12 + start.month - 1 + months
    return dt.date(index // 12, index % 12 + 1, 1)


def date_range(words: list[str], today: dt.date) -> tuple[DateRange, set[int]] | None:
    """The date range a question names, and the positions of the words that named it; None if it names none.

    "this/last/next month|quarter|year|week" (and German: "diesen Monat", "im
    letzten Quartal", "nächstes Jahr"), "last 30 days" / "letzte 30 Tage",
    "today"/"heute", "yesterday"/"gestern", "tomorrow"/"morgen", a year
    ("2024", "in 2024"), a month with or without year ("March 2025", "im März").
    """
    for i, word in enumerate(words):
        unit = _UNITS.get(word) or _UNITS.get(word.rstrip("s")) or _UNITS.get(_singular_de(word))
        if unit is None:
            continue
        before = words[i - 1] if i > 0 else ""
        before2 = words[i - 2] if i > 1 else ""
        count = number_in(before) if before else None
        if count is not None and before2 in _LAST | _NEXT | {"within"}:
            start = _start_of("day", today)
            if before2 in _NEXT:
                return DateRange(start, _shift(unit, start, count), " ".join(words[i - 2:i + 1])), {i - 2, i - 1, i}
            begin = _shift(unit, start, -count) if unit != "day" else start - dt.timedelta(days=count)
            return DateRange(begin, start + dt.timedelta(days=1), " ".join(words[i - 2:i + 1])), {i - 2, i - 1, i}
        if before in _THIS | _LAST | _NEXT:
            start = _start_of(unit, today)
            steps = 0 if before in _THIS else (-1 if before in _LAST else 1)
            begin = _shift(unit, start, steps)
            return DateRange(begin, _shift(unit, begin, 1), f"{before} {word}"), {i - 1, i}
    for i, word in enumerate(words):
        day = {"today": 0, "heute": 0, "yesterday": -1, "gestern": -1, "tomorrow": 1, "morgen": 1}.get(word)
        if day is not None:
            start = today + dt.timedelta(days=day)
            return DateRange(start, start + dt.timedelta(days=1), word), {i}
    for i, word in enumerate(words):
        month = _MONTHS.get(word)
        if month is not None and not (word == "may" and (i + 1 >= len(words) or not words[i + 1].isdigit())):
            year = int(words[i + 1]) if i + 1 < len(words) and re.fullmatch(r"(19|20)\d\d", words[i + 1]) else None
            used = {i} | ({i + 1} if year else set())
            if year is None:
                year = today.year if month <= today.month else today.year - 1  # "in March": the latest March
            start = dt.date(year, month, 1)
            return DateRange(start, _shift("month", start, 1), " ".join(words[i:i + (2 if len(used) == 2 else 1)])), used
    for i, word in enumerate(words):
        if re.fullmatch(r"(19|20)\d\d", word):
            year = int(word)
            return DateRange(dt.date(year, 1, 1), dt.date(year + 1, 1, 1), word), {i}
    return None


def _singular_de(word: str) -> str:
    for ending in ("en", "e", "n", "s"):
        if word.endswith(ending) and word[: -len(ending)] in _UNITS:
            return word[: -len(ending)]
    return word
