"""The words of questions: normalising, German inflection, numbers, date ranges (no database)."""

from __future__ import annotations

import datetime as dt

import pytest

from xrm.assistant.language import date_range, detect_language, inflects, number_in, tokens

TODAY = dt.date(2026, 12, 3)  # a Thursday in Q4


def test_umlauts_and_case_fold_to_one_word() -> None:
    assert tokens("Müller GmbH") == tokens("MUELLER gmbh") == ["mueller", "gmbh"]
    assert tokens("E-Mail von O'Brien?") == ["e-mail", "von", "o'brien"]


@pytest.mark.parametrize(("question", "language"), [
    ("How many open tickets does Müller GmbH have?", "en"),
    ("Wie viele offene Tickets hat die Müller GmbH?", "de"),
    ("Wer ist Ansprechpartner bei Globex?", "de"),
    ("Who is the contact at Globex?", "en"),
    ("Umsatz Müller", "de"),
])
def test_the_language_of_a_question(question: str, language: str) -> None:
    assert detect_language(question) == language


def test_inflected_forms_match_their_base() -> None:
    assert inflects("offenen", "offen") and inflects("deals", "deal") and inflects("companies", "company")
    assert inflects("firmen", "firma") is False  # an irregular plural needs its own label (the definition's plural)
    assert not inflects("wonderful", "won") and not inflects("os", "o")


def test_small_numbers_in_digits_and_words() -> None:
    assert [number_in(w) for w in ("5", "five", "fuenf", "drei", "many")] == [5, 5, 5, 3, None]


@pytest.mark.parametrize(("words", "start", "end"), [
    ("this month", dt.date(2026, 12, 1), dt.date(2027, 1, 1)),
    ("last month", dt.date(2026, 11, 1), dt.date(2026, 12, 1)),
    ("im letzten Quartal", dt.date(2026, 7, 1), dt.date(2026, 10, 1)),
    ("dieses Jahr", dt.date(2026, 1, 1), dt.date(2027, 1, 1)),
    ("next quarter", dt.date(2027, 1, 1), dt.date(2027, 4, 1)),
    ("last week", dt.date(2026, 11, 23), dt.date(2026, 11, 30)),
    ("in the last 30 days", dt.date(2026, 11, 3), dt.date(2026, 12, 4)),
    ("letzte 2 Wochen", dt.date(2026, 11, 19), dt.date(2026, 12, 4)),
    ("today", dt.date(2026, 12, 3), dt.date(2026, 12, 4)),
    ("gestern", dt.date(2026, 12, 2), dt.date(2026, 12, 3)),
    ("in 2024", dt.date(2024, 1, 1), dt.date(2025, 1, 1)),
    ("im März 2025", dt.date(2025, 3, 1), dt.date(2025, 4, 1)),
    ("in March", dt.date(2026, 3, 1), dt.date(2026, 4, 1)),
])
def test_date_ranges(words: str, start: dt.date, end: dt.date) -> None:
    found = date_range(tokens(f"deals closing {words}"), TODAY)
    assert found is not None and (found[0].start, found[0].end) == (start, end)


def test_may_is_a_month_only_with_a_year() -> None:
    assert date_range(tokens("who may see deals"), TODAY) is None
    found = date_range(tokens("deals in May 2025"), TODAY)
    assert found is not None and found[0].start == dt.date(2025, 5, 1)
