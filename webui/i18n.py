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
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

from babel import Locale
from babel.dates import format_date, format_datetime
from babel.messages.catalog import Catalog
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal

__all__ = ["LANGUAGES", "N_", "PROBLEM_MESSAGES", "Translator", "pick_language", "read_catalog", "translator"]

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

    def problem(self, message: str, entity_label: Callable[[str], str] | None = None) -> str:
        """A validation or error message of the platform (English, as the API sends it) in this language.

        The platform's messages stay English (the API's contract); the UI finds the
        message's pattern in PROBLEM_MESSAGES and shows its translation, with the
        parameters (numbers for the language, known words translated, entity names
        through `entity_label`). A message of no known pattern (a plugin's veto, say)
        is shown as it is.
        """
        if not message or self.language == "en":
            return message
        for pattern, msgid in PROBLEM_MESSAGES:
            match = pattern.fullmatch(message)
            if match:
                return self.gettext(msgid, **{name: self._parameter(name, value, entity_label)
                                              for name, value in match.groupdict().items()})
        return message

    def _parameter(self, name: str, value: str, entity_label: Callable[[str], str] | None) -> str:
        words = _PROBLEM_WORDS.get(name, {})
        if value in words:
            return self.gettext(words[value])
        if name in ("count", "limit"):
            try:
                number = decimal.Decimal(value)
            except decimal.InvalidOperation:
                return value
            if number.is_finite():
                return self.number(number, places=max(0, -int(number.as_tuple().exponent)))
        if name == "entity" and entity_label is not None:
            return entity_label(value)
        return value

    def number(self, value: int | float | decimal.Decimal, places: int | None = None) -> str:
        """1.234,5 (German) / 1,234.5; with `places`, exactly that many decimal places (1.234,50)."""
        if places is None:
            return format_decimal(value, locale=self.locale)
        return format_decimal(value, format="#,##0" + ("." + "0" * places if places > 0 else ""), locale=self.locale,
                              decimal_quantization=False)

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


def N_(message: str) -> str:
    """Marks a message for the catalog (pybabel extracts N_) where it is translated later."""
    return message


# -- the platform's messages in the UI's languages ------------------------------------------------
# Every message a record write can produce (xrm.records.validation, xrm.records.service, the form
# conversion in webui/forms.py), and the errors pages show, as a pattern and the message id of its
# translation; the named groups are the parameters (tests/test_webui_german.py checks that every
# message those modules define has a pattern here). The first pattern that matches the whole
# message wins. Parameters: count/limit are numbers (formatted for the language), entity an entity
# name (its label), the others are shown as they are unless _PROBLEM_WORDS translates them.
_VALUE = r"(?P<value>.+)"
PROBLEM_MESSAGES: tuple[tuple[re.Pattern[str], str], ...] = tuple((re.compile(pattern, re.DOTALL), msgid) for pattern, msgid in (
    # xrm.records.validation
    (r"is required", N_("is required")),
    (r"is not a field of this entity", N_("is not a field of this entity")),
    (r"is not allowed here", N_("is not allowed here")),
    (r"must be of type (?P<type>\S+)", N_("must be of type %(type)s")),
    (_VALUE + r" is not one of the options: (?P<options>.*)", N_("%(value)s is not one of the options: %(options)s")),
    (r"is longer than (?P<count>\d+) characters", N_("is longer than %(count)s characters")),
    (r"is shorter than (?P<count>\d+) characters", N_("is shorter than %(count)s characters")),
    (_VALUE + r" does not have the expected form", N_("%(value)s does not have the expected form")),
    (_VALUE + r" is not a valid date \(expected e\.g\. 2024-12-31\)", N_("%(value)s is not a valid date (expected e.g. 2024-12-31)")),
    (_VALUE + r" is not a valid date-time \(expected e\.g\. 2024-12-31T17:30:00\+01:00\)",
     N_("%(value)s is not a valid date-time (expected e.g. 2024-12-31T17:30:00+01:00)")),
    (_VALUE + r" is not a valid uuid \(expected e\.g\. a record id \(uuid\)\)", N_("%(value)s is not a valid record id (uuid)")),
    (_VALUE + r" is not a valid email \(expected e\.g\. name@example\.com\)",
     N_("%(value)s is not a valid email (expected e.g. name@example.com)")),
    (_VALUE + r" is not a valid uri \(expected e\.g\. uri\)", N_("%(value)s is not a valid web address (expected e.g. https://example.com)")),
    (_VALUE + r" is not a valid (?P<format>\S+) \(expected e\.g\. (?P<example>.+)\)",
     N_("%(value)s is not a valid %(format)s (expected e.g. %(example)s)")),
    (r"must not be less than (?P<limit>\S+)", N_("must not be less than %(limit)s")),
    (r"must not be greater than (?P<limit>\S+)", N_("must not be greater than %(limit)s")),
    (r"must not be less than or equal to (?P<limit>\S+)", N_("must not be less than or equal to %(limit)s")),
    (r"must not be greater than or equal to (?P<limit>\S+)", N_("must not be greater than or equal to %(limit)s")),
    (r"contains an option twice", N_("contains an option twice")),
    (r"has more than (?P<count>\d+) decimal places", N_("has more than %(count)s decimal places")),
    (r"is too large: at most (?P<count>-?\d+) digits before the decimal point",
     N_("is too large: at most %(count)s digits before the decimal point")),
    (r"must be a finite number", N_("must be a finite number")),
    (_VALUE + r" is out of range \(years 1 to 9999, in UTC\)", N_("%(value)s is out of range (years 1 to 9999, in UTC)")),
    (r"must not contain the NUL character \(\\u0000\)", N_("must not contain the NUL character (\\u0000)")),
    (r"a key must not contain the NUL character \(\\u0000\)", N_("a key must not contain the NUL character (\\u0000)")),
    # jsonschema's own messages (keywords the validator has no message of its own for: a multiselect's minItems/maxItems)
    (_VALUE + r" should be non-empty", N_("%(value)s should be non-empty")),
    (_VALUE + r" is too short", N_("%(value)s is too short")),
    (_VALUE + r" is expected to be empty", N_("%(value)s is expected to be empty")),
    (_VALUE + r" is too long", N_("%(value)s is too long")),
    # xrm.records.service
    (r"(?P<name>.+): is a sensitive field you may not read, so it cannot be (?P<what>.+) \(it needs a field grant, see docs/security\.md\)",
     N_("%(name)s: is a sensitive field you may not read, so it cannot be %(what)s (it needs a field grant, see docs/security.md)")),
    (r"(?P<name>.+): is a sensitive field you may read but not change \(it needs an update field grant, see docs/security\.md\)",
     N_("%(name)s: is a sensitive field you may read but not change (it needs an update field grant, see docs/security.md)")),
    (r"must be text", N_("must be text")),
    (r"a record must be a JSON object", N_("a record must be a JSON object")),
    (r"changes must be a JSON object", N_("changes must be a JSON object")),
    (_VALUE + r" is not a valid record id \(uuid\)", N_("%(value)s is not a valid record id (uuid)")),
    (r"is set by the system and cannot be written", N_("is set by the system and cannot be written")),
    (r"a record with this id exists already", N_("a record with this id exists already")),
    (r"this value is already used by another record", N_("this value is already used by another record")),
    (r"no (?P<entity>.+) record has this id", N_("no %(entity)s record has this id")),
    (r"violates the field's rules", N_("violates the field's rules")),
    # webui/forms.py (reading form input)
    (_VALUE + r" is not a whole number", N_("%(value)s is not a whole number")),
    (_VALUE + r" is not a number", N_("%(value)s is not a number")),
    (r"must be a JSON object", N_("must be a JSON object")),
    (r"is not valid JSON \(line (?P<line>\d+), column (?P<column>\d+)\)", N_("is not valid JSON (line %(line)s, column %(column)s)")),
    # error pages (NotFound, PermissionDenied)
    (r"No deleted (?P<entity>\w+) record with id (?P<id>\S+)", N_("No deleted %(entity)s record with id %(id)s")),
    (r"No (?P<entity>\w+) record with id (?P<id>\S+)", N_("No %(entity)s record with id %(id)s")),
    (r"No record with id (?P<id>.+)", N_("No record with id %(id)s")),
    (r"Unknown entity (?P<value>.+)", N_("Unknown entity %(value)s")),
    (r"Invalid (?P<entity>\w+) record", N_("Invalid %(entity)s record")),
    (r"You may not (?P<action>\w+) this (?P<entity>\w+) record", N_("You may not %(action)s this %(entity)s record")),
    (r"None of your roles allows (?P<action>\w+) on (?P<entity>\w+)", N_("None of your roles allows %(action)s on %(entity)s")),
    (r"CSRF token missing or invalid: .*", N_("The form's security token is missing or invalid; reload the page and try again.")),
))

_PROBLEM_WORDS: dict[str, dict[str, str]] = {
    "type": {"string": N_("text"), "integer": N_("whole number"), "number": N_("number"), "boolean": N_("yes or no"),
             "object": N_("object"), "array": N_("list")},
    "what": {"selected": N_("selected"), "expanded": N_("expanded"), "filtered on": N_("filtered on"),
             "sorted by": N_("sorted by"), "written": N_("written")},
    "action": {"create": N_("create"), "read": N_("read"), "update": N_("update"), "delete": N_("delete"),
               "export": N_("export"), "assign": N_("assign"), "share": N_("share")},
    "entity": {"the referenced entity": N_("the referenced entity")},
}
"""Parameters that are English words, by parameter name: their message ids."""
