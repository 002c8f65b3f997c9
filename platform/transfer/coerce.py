"""From cell text to field values: the importer's coercion rules.

Each function takes what a CSV cell or a JSON Lines value holds and returns
the value RecordService expects (date, datetime, Decimal, int, bool, list,
{"amount", "currency"}), or raises CoercionError with a sentence a user can
act on. The rules are documented in docs/import-export.md; keep both in step.

Reference fields are not coerced here: xrm.transfer.references resolves them.
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..errors import XrmError
from ..schema.field_types import ISO_4217

if TYPE_CHECKING:
    from ..schema.definition import FieldDefinition

__all__ = [
    "CoercionError",
    "CoercionOptions",
    "NumberFormat",
    "coerce_value",
    "parse_boolean",
    "parse_currency",
    "parse_date",
    "parse_datetime",
    "parse_integer",
    "parse_multiselect",
    "parse_number",
    "match_option",
]

NumberFormat = Literal["auto", "de", "en"]

TRUE_WORDS = frozenset({"true", "yes", "ja", "1", "x", "y", "j", "wahr", "on"})
FALSE_WORDS = frozenset({"false", "no", "nein", "0", "n", "falsch", "off"})

# Currency symbols the importer reads as a code. "$" is read as USD (the
# common meaning in CRM exports); write "CAD 5" etc. for other dollars.
CURRENCY_SYMBOLS = {"€": "EUR", "$": "USD", "US$": "USD", "£": "GBP"}

_DIGITS = frozenset("0123456789")
_SPACES = " \u00a0\u202f\u2009"
_GROUPING = "'" + _SPACES
_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_GERMAN_DATE = re.compile(r"^(\d{1,2})\.(\d{1,2})\.(\d{4}|\d{2})$")
_GERMAN_DATETIME = re.compile(r"^(\d{1,2}\.\d{1,2}\.(?:\d{4}|\d{2}))[ T,]+(\d{1,2}):(\d{2})(?::(\d{2}))?$")
_MIDNIGHT = re.compile(r"^(.+?)[ T]00:00(?::00(?:\.0+)?)?$")
_CURRENCY_PREFIX = re.compile(r"^(US\$|[€$£]|[A-Za-z]{3}(?![A-Za-z]))\s*")
_CURRENCY_SUFFIX = re.compile(r"\s*(US\$|[€$£]|(?<![A-Za-z])[A-Za-z]{3})$")


class CoercionError(ValueError):
    """A value cannot be read as the field's type; str() is the reason."""


@dataclass(frozen=True)
class CoercionOptions:
    number_format: NumberFormat = "auto"
    """How "." and "," are read in numbers (see parse_number)."""
    timezone: str | None = None
    """IANA zone for datetimes without an offset; None refuses them."""
    default_currency: str | None = None
    """Currency for amounts written without one."""
    date_format: str | None = None
    """An extra strptime pattern tried first for dates and datetimes, e.g. "%m/%d/%Y"."""

    def __post_init__(self) -> None:
        if self.number_format not in ("auto", "de", "en"):
            raise XrmError(f"number format must be auto, de or en, not {self.number_format!r}")
        if self.timezone is not None:
            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise XrmError(f"{self.timezone!r} is not a time zone (use an IANA name such as Europe/Berlin)") from None
        if self.default_currency is not None and self.default_currency.upper() not in ISO_4217:
            raise XrmError(f"{self.default_currency!r} is not an ISO 4217 currency code")

    @property
    def zone(self) -> dt.tzinfo | None:
        return ZoneInfo(self.timezone) if self.timezone else None


# -- numbers -------------------------------------------------------------------
def parse_number(text: str, number_format: NumberFormat = "auto") -> decimal.Decimal:
    """A decimal from "1234.56", "1.234,56", "1,234.56", "-12,5", "1 234,56", "1'234.56".

    The decimal separator is "." for number format "en", "," for "de". In
    "auto": when both occur, the last one is the decimal separator; a separator
    that occurs once is the decimal separator ("1,5" = 1.5, "1.234" = 1.234);
    one that occurs several times groups thousands ("1.234.567"). Grouping
    separators (also space and apostrophe) must separate groups of 3 digits.
    """
    original = text
    s = text.strip().replace("\u2212", "-")
    sign = ""
    if s[:1] in ("+", "-"):
        sign, s = s[0], s[1:].lstrip()
    if not s or any(c not in _DIGITS and c not in ".," + _GROUPING for c in s) or not any(c in _DIGITS for c in s):
        raise CoercionError(f"{original!r} is not a number")
    dots, commas = s.count("."), s.count(",")
    if number_format == "en":
        point = "." if dots else None
    elif number_format == "de":
        point = "," if commas else None
    elif dots and commas:
        point = "." if s.rfind(".") > s.rfind(",") else ","
    elif dots == 1:
        point = "."
    elif commas == 1:
        point = ","
    else:
        point = None
    if point is not None:
        whole, _, fraction = s.rpartition(point)
        if point in whole or not fraction or not set(fraction) <= _DIGITS:
            raise CoercionError(f"{original!r} is not a number")
    else:
        whole, fraction = s, ""
    grouping = {c for c in whole if c not in _DIGITS}
    if len(grouping) > 1 or not _grouped_correctly(whole, grouping):
        raise CoercionError(f"{original!r} is not a number (thousands separators must separate groups of 3 digits)")
    digits = "".join(c for c in whole if c in _DIGITS) or "0"
    return decimal.Decimal(sign + digits + ("." + fraction if fraction else ""))


def _grouped_correctly(whole: str, grouping: set[str]) -> bool:
    if not grouping:
        return True
    separator = next(iter(grouping))
    parts = whole.split(separator)
    return 1 <= len(parts[0]) <= 3 and all(set(p) <= _DIGITS for p in parts) and all(len(p) == 3 for p in parts[1:])


def parse_integer(text: str, number_format: NumberFormat = "auto") -> int:
    """A whole number; "1.234" is 1234 only with number format "de" (1.234 otherwise)."""
    value = parse_number(text, number_format)
    if value != value.to_integral_value():
        hint = ""
        if re.fullmatch(r"\s*[+-]?\d{1,3}([.,]\d{3})\s*", text):
            hint = " (if the separator groups thousands here, use the number format 'de' or 'en')"
        raise CoercionError(f"{text!r} is not a whole number{hint}")
    return int(value)


# -- dates and times -----------------------------------------------------------
def parse_date(text: str, date_format: str | None = None) -> dt.date:
    """A date from "2024-12-31", "31.12.2024" or "31.12.24" (also with a midnight time)."""
    s = text.strip()
    if date_format:
        try:
            return dt.datetime.strptime(s, date_format).date()
        except ValueError:
            pass
    midnight = _MIDNIGHT.match(s)
    if midnight:
        s = midnight.group(1)
    try:
        if _ISO_DATE.match(s):
            return dt.date.fromisoformat(s)
        german = _GERMAN_DATE.match(s)
        if german:
            day, month, year = german.groups()
            return dt.date(_full_year(year), int(month), int(day))
    except ValueError:
        pass
    raise CoercionError(f"{text!r} is not a valid date (expected e.g. 2024-12-31 or 31.12.2024)")


def _full_year(year: str) -> int:
    """Two-digit years as strptime's %y reads them: 69-99 -> 19xx, 00-68 -> 20xx."""
    if len(year) == 4:
        return int(year)
    return dt.datetime.strptime(year, "%y").year


def parse_datetime(text: str, zone: dt.tzinfo | None = None, date_format: str | None = None) -> dt.datetime:
    """A point in time from ISO 8601 ("2024-12-31T17:30:00+01:00", "...Z", a space
    instead of T) or German "31.12.2024 17:30". Without an offset, `zone` says
    where the wall-clock time was read; with no zone such values are refused."""
    s = text.strip()
    value: dt.datetime | None = None
    if date_format:
        try:
            value = dt.datetime.strptime(s, date_format)
        except ValueError:
            value = None
    if value is None:
        german = _GERMAN_DATETIME.match(s)
        try:
            if german:
                day = parse_date(german.group(1))
                hour, minute, second = int(german.group(2)), int(german.group(3)), int(german.group(4) or 0)
                value = dt.datetime.combine(day, dt.time(hour, minute, second))
            elif _GERMAN_DATE.match(s):
                value = dt.datetime.combine(parse_date(s), dt.time())
            else:
                value = dt.datetime.fromisoformat(s.replace("z", "Z"))
        except (ValueError, CoercionError):
            raise CoercionError(f"{text!r} is not a valid date and time (expected e.g. 2024-12-31T17:30:00+01:00)") from None
    if value.tzinfo is None:
        if zone is None:
            raise CoercionError(
                f"{text!r} has no time zone offset; write one (e.g. 2024-12-31T17:30:00+01:00) or set a default time zone"
            )
        value = value.replace(tzinfo=zone)
    return value


# -- booleans, options ---------------------------------------------------------
def parse_boolean(text: str) -> bool:
    """true/false, yes/no, ja/nein, 1/0, x (ticked), case-insensitive."""
    word = text.strip().casefold()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise CoercionError(f"{text!r} is not a yes/no value (expected true/false, yes/no, ja/nein, 1/0 or x)")


def _fold(text: str) -> str:
    return " ".join(text.split()).casefold()


def match_option(text: str, options: list[str], labels: Mapping[str, Mapping[str, str]] | None = None) -> str:
    """The option `text` names: the option itself, then case-insensitively, then
    by one of its labels (any language). Unknown text is returned unchanged, so
    the validator reports it with the list of options."""
    if text in options:
        return text
    folded = _fold(text)
    for option in options:
        if _fold(option) == folded:
            return option
    for option, by_language in (labels or {}).items():
        if option in options and any(_fold(label) == folded for label in by_language.values()):
            return option
    return text


def parse_multiselect(value: Any, options: list[str], labels: Mapping[str, Mapping[str, str]] | None = None) -> list[str]:
    """Options from a JSON array, or text separated by "," or ";" ("a, b; c").

    An option that itself contains a separator is still found: the longest run
    of pieces that names an option wins.
    """
    if isinstance(value, str):
        s = value.strip()
        if s.startswith("["):
            try:
                value = json.loads(s)
            except json.JSONDecodeError:
                raise CoercionError(f"{value!r} is not a valid JSON array") from None
        else:
            return _split_options(s, options, labels)
    if not isinstance(value, list):
        raise CoercionError("must be a list of options")
    return [match_option(item, options, labels) if isinstance(item, str) else item for item in value]


def _split_options(text: str, options: list[str], labels: Mapping[str, Mapping[str, str]] | None) -> list[str]:
    pieces = re.split(r"([,;])", text)  # keeps the separators at odd positions
    chosen: list[str] = []
    start = 0
    while start < len(pieces):
        for end in range(len(pieces), start, -2):
            candidate = "".join(pieces[start:end]).strip()
            matched = match_option(candidate, options, labels) if candidate else ""
            if end == start + 1 or matched in options:
                if candidate:
                    chosen.append(matched)
                start = end + 1
                break
    return chosen


# -- currency ------------------------------------------------------------------
def parse_currency(text: str, number_format: NumberFormat = "auto") -> tuple[decimal.Decimal, str | None]:
    """Amount and code (None if the text has none) from "1.234,56 EUR",
    "EUR 1234.56", "€ 12,50", "12,50 €", "$5", "-€ 3" or "1234.56"."""
    s = text.strip().replace("\u2212", "-")
    sign = ""
    if s[:1] in ("+", "-"):
        sign, s = s[0], s[1:].lstrip()
    code = None
    prefix = _CURRENCY_PREFIX.match(s)
    if prefix:
        code, s = prefix.group(1), s[prefix.end() :]
    suffix = _CURRENCY_SUFFIX.search(s)
    if suffix:
        if code is not None:
            raise CoercionError(f"{text!r} names two currencies")
        code, s = suffix.group(1), s[: suffix.start()]
    if code is not None:
        code = CURRENCY_SYMBOLS.get(code) or code.upper()
        if code not in ISO_4217:
            raise CoercionError(f"{text!r}: {code!r} is not an ISO 4217 currency code")
    try:
        amount = parse_number(sign + s, number_format)
    except CoercionError:
        raise CoercionError(f"{text!r} is not an amount (expected e.g. 1234.56 EUR, 1.234,56 €, USD 5)") from None
    return amount, code


# -- one value of one field ----------------------------------------------------
def coerce_value(field: FieldDefinition, value: Any, options: CoercionOptions, currency: str | None = None) -> Any:
    """The value of `field` from a cell (str) or a JSON value; None for "no value".

    `currency` is the code from a companion "<field>_currency" column. Reference
    fields are returned unchanged (text), for the resolver.
    """
    if value is None:
        return None
    if isinstance(value, str) and not value.strip():
        return None
    name = field.type.name
    if name == "reference":
        return value.strip() if isinstance(value, str) else value
    if name in ("text", "long_text", "email", "phone", "url"):
        if isinstance(value, (int, decimal.Decimal)) and not isinstance(value, bool):
            return str(value)
        if name in ("email", "url") and isinstance(value, str):
            return value.strip()
        return value
    if name == "select":
        if not isinstance(value, str):
            return value
        return match_option(value.strip(), list(field.schema.get("enum", [])), field.xrm.get("option_labels"))
    if name == "multiselect":
        return parse_multiselect(value, list(field.schema["items"]["enum"]), field.xrm.get("option_labels"))
    if name == "integer":
        if isinstance(value, bool):
            return value  # the validator names the type
        if isinstance(value, int):
            return value
        if isinstance(value, decimal.Decimal):
            if value != value.to_integral_value():
                raise CoercionError(f"{value} is not a whole number")
            return int(value)
        if isinstance(value, str):
            return parse_integer(value, options.number_format)
        return value
    if name == "decimal":
        if isinstance(value, (int, decimal.Decimal)) and not isinstance(value, bool):
            return decimal.Decimal(value)
        if isinstance(value, str):
            return parse_number(value, options.number_format)
        return value
    if name == "boolean":
        return parse_boolean(value) if isinstance(value, str) else value
    if name == "date":
        return parse_date(value, options.date_format) if isinstance(value, str) else value
    if name == "datetime":
        return parse_datetime(value, options.zone, options.date_format) if isinstance(value, str) else value
    if name == "currency":
        return _coerce_currency(field, value, options, currency)
    if name == "json":
        if isinstance(value, str):
            try:
                return json.loads(value, parse_float=decimal.Decimal)
            except json.JSONDecodeError as error:
                raise CoercionError(f"is not valid JSON: {error.msg} at character {error.pos + 1}") from None
        return value
    try:  # a type from a plugin: it knows how to read its values (FieldType.coerce)
        return field.type.coerce(field, value.strip() if isinstance(value, str) else value)
    except ValueError as error:
        raise CoercionError(str(error)) from None


def _coerce_currency(field: FieldDefinition, value: Any, options: CoercionOptions, currency: str | None) -> Any:
    code: str | None
    if isinstance(value, Mapping):
        amount, code = value.get("amount"), value.get("currency")
        if isinstance(amount, str):
            amount = parse_number(amount, options.number_format)
        elif isinstance(amount, (int, decimal.Decimal)) and not isinstance(amount, bool):
            amount = decimal.Decimal(amount)
        if isinstance(code, str):
            code = code.strip().upper()
        if code is None:
            code = _default_currency(field, options, currency)
        return {**value, "amount": amount, "currency": code}
    if isinstance(value, (int, decimal.Decimal)) and not isinstance(value, bool):
        amount, code = decimal.Decimal(value), None
    elif isinstance(value, str):
        amount, code = parse_currency(value, options.number_format)
    else:
        return value
    column_code = currency.strip().upper() if isinstance(currency, str) and currency.strip() else None
    if code and column_code and code != column_code:
        raise CoercionError(f"{value!r} is in {code}, but its currency column says {column_code}")
    return {"amount": amount, "currency": code or _default_currency(field, options, column_code)}


def _default_currency(field: FieldDefinition, options: CoercionOptions, column_code: str | None) -> str:
    if column_code:
        return column_code
    if options.default_currency:
        return options.default_currency.upper()
    if field.xrm.get("default_currency"):
        return str(field.xrm["default_currency"])
    allowed = field.xrm.get("currencies") or []
    if len(allowed) == 1:
        return str(allowed[0])
    raise CoercionError("has no currency; write one (e.g. 12.50 EUR) or set a default currency")

