"""English and German for the web UI: gettext catalogs (Babel) and locale-aware formatting.

Templates and handlers write English; the .po files in
`webui/locale/de/LC_MESSAGES/` hold the German (messages.po, and one file per
UI area so that areas can be worked on side by side). The catalog is read with Babel at start (no compile step,
no .mo files in the repository). Entity, field and option labels come from the
definitions (`label.en` / `label.de`), not from the catalog. Numbers and dates
are formatted for the language (1.234,56 and 31.12.2024 in German).
"""

from __future__ import annotations

import datetime as dt
import decimal
import gettext
import io
from functools import cache
from pathlib import Path
from typing import Any

from babel import Locale
from babel.dates import format_date, format_datetime
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal

__all__ = ["LANGUAGES", "Translator", "pick_language", "read_catalog", "translator"]

LANGUAGES = ("en", "de")
LOCALE_DIR = Path(__file__).resolve().parent / "locale"


def read_catalog(language: str) -> Catalog:
    """Every .po file of the language merged: messages.po, plus one file per UI area (e.g. designer.po)."""
    merged = Catalog(locale=language)
    for path in sorted((LOCALE_DIR / language / "LC_MESSAGES").glob("*.po")):
        with path.open("rb") as po:
            for message in read_po(po, locale=language):
                if message.id and message.string:
                    merged.add(message.id, message.string)
    return merged


@cache
def _catalog(language: str) -> gettext.NullTranslations:
    catalog = read_catalog(language)
    if not len(catalog):
        return gettext.NullTranslations()
    buffer = io.BytesIO()
    write_mo(buffer, catalog)
    buffer.seek(0)
    return gettext.GNUTranslations(buffer)


class Translator:
    """The strings and formats of one language."""

    def __init__(self, language: str) -> None:
        self.language = language if language in LANGUAGES else "en"
        self._translations = _catalog(self.language)
        self.locale = Locale.parse(self.language)

    def gettext(self, message: str, **values: Any) -> str:
        text = self._translations.gettext(message)
        return text % values if values else text

    def ngettext(self, singular: str, plural: str, n: int, **values: Any) -> str:
        text = self._translations.ngettext(singular, plural, n)
        return text % {"num": n, **values}

    def number(self, value: int | float | decimal.Decimal) -> str:
        return format_decimal(value, locale=self.locale)

    def money(self, amount: decimal.Decimal, currency: str) -> str:
        return f"{format_decimal(amount, format='#,##0.00', locale=self.locale)} {currency}"

    def date(self, value: dt.date) -> str:
        return format_date(value, format="medium" if self.language == "en" else "dd.MM.yyyy", locale=self.locale)

    def datetime(self, value: dt.datetime) -> str:
        pattern = "MMM d, yyyy, HH:mm" if self.language == "en" else "dd.MM.yyyy, HH:mm"
        return format_datetime(value, pattern, tzinfo=dt.timezone.utc, locale=self.locale) + " UTC"


@cache
def translator(language: str) -> Translator:
    return Translator(language)


def pick_language(preferred: str | None, accept_language: str) -> str:
    """The user's saved language, else the browser's first of en/de, else English."""
    if preferred in LANGUAGES:
        return preferred  # type: ignore[return-value]
    for part in accept_language.split(","):
        code = part.split(";")[0].strip().lower()[:2]
        if code in LANGUAGES:
            return code
    return "en"
