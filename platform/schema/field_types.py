"""Field types: how a value is validated, stored, constrained and read back.

Each type maps a JSON value (the form the API and the validator see) onto one
or more typed PostgreSQL columns. The JSON Schema an admin writes for a field
adds constraints (maxLength, minimum, enum, pattern, ...) to the base schema of
its type; the same constraints become CHECK constraints in the table.

FIELD_TYPES is the live registry: the built-in types below plus those plugins
add (hook `xrm_field_types`, see docs/plugins.md); the built-ins themselves
arrive through the same hook (plugin `core`, xrm.core_plugin).
"""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ..identifiers import quote_literal

if TYPE_CHECKING:
    from .definition import FieldDefinition

__all__ = ["BUILTIN_FIELD_TYPES", "FIELD_TYPES", "Column", "FieldType", "FieldTypeRegistry", "ISO_4217", "infer_field_type"]

# Active ISO 4217 alphabetic codes.
ISO_4217 = frozenset(
    """AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB
    BRL BSD BTN BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP
    DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF
    IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK
    LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN
    NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF
    SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND
    TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VES VND VUV WST XAF XCD XCG XOF XPF
    YER ZAR ZMW ZWG""".split()
)

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
_EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
_PHONE_PATTERN = r"^\+?\(?[0-9][0-9 ()./-]{2,31}$"
_URL_PATTERN = r"^https?://[^\s/?#]+[^\s]*$"


@dataclass(frozen=True)
class Column:
    """One PostgreSQL column a field is stored in."""

    name: str
    sql_type: str
    role: str = "value"
    """What part of the value it holds: "value", or "amount"/"currency"."""


def _copy_keywords(schema: Mapping[str, Any], keywords: frozenset[str]) -> dict[str, Any]:
    return {key: schema[key] for key in keywords if key in schema}


def _length_checks(column: str, schema: Mapping[str, Any]) -> list[str]:
    checks = []
    if "maxLength" in schema:
        checks.append(f"char_length({column}) <= {int(schema['maxLength'])}")
    if "minLength" in schema:
        checks.append(f"char_length({column}) >= {int(schema['minLength'])}")
    if "pattern" in schema:
        checks.append(f"{column} ~ {quote_literal(schema['pattern'])}")
    return checks


def _range_checks(column: str, schema: Mapping[str, Any]) -> list[str]:
    operators = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<"}
    checks = []
    for keyword, operator in operators.items():
        if keyword in schema:
            bound = decimal.Decimal(str(schema[keyword]))
            checks.append(f"{column} {operator} {bound}")
    return checks


def _in_list(column: str, options: list[str]) -> str:
    return f"{column} IN ({', '.join(quote_literal(o) for o in options)})"


class FieldType:
    """Base class; one instance per type in FIELD_TYPES."""

    name: ClassVar[str]
    json_type: ClassVar[str]
    """The JSON Schema `type` of values of this field type."""
    formats: ClassVar[tuple[str, ...]] = ()
    """`format` values an admin may write (the first one is implied)."""
    keywords: ClassVar[frozenset[str]] = frozenset()
    """Constraint keywords an admin may add to the field's schema."""
    sql: ClassVar[str] = "text"
    text_like: ClassVar[bool] = False
    """May serve as display field and in the full-text search column."""
    can_be_unique: ClassVar[bool] = True

    # -- storage -----------------------------------------------------------
    def columns(self, field: FieldDefinition) -> list[Column]:
        return [Column(field.name, self.sql_type(field))]

    def sql_type(self, field: FieldDefinition) -> str:
        return self.sql

    def check_predicates(self, field: FieldDefinition, columns: Mapping[str, str]) -> list[str]:
        """SQL predicates (over the quoted column expressions by role) a stored value obeys."""
        return []

    # -- validation --------------------------------------------------------
    def value_schema(self, field: FieldDefinition) -> dict[str, Any]:
        """The JSON Schema a value must satisfy (base schema plus admin constraints)."""
        schema: dict[str, Any] = {"type": self.json_type}
        if self.formats:
            schema["format"] = self.formats[0]
        schema.update(_copy_keywords(field.schema, self.keywords))
        return schema

    def to_json(self, value: Any) -> Any:
        """Bring a Python value into the JSON form the validator checks."""
        return value

    # -- database round trip ----------------------------------------------
    def to_db(self, field: FieldDefinition, value: Any) -> dict[str, Any]:
        """Turn a validated JSON-form value into column values by role."""
        return {"value": value}

    def from_db(self, field: FieldDefinition, values: Mapping[str, Any]) -> Any:
        return values["value"]

    # -- what a plugin type can add without changes to the core ---------------
    query_kind: ClassVar[str | None] = None
    """How lists filter and sort it (a kind of xrm.records.query: "text", "integer", "decimal", ...);
    None: derived from json_type."""

    def check(self, field: FieldDefinition, value: Any) -> list[str]:
        """Problems JSON Schema cannot express (a checksum, say), as messages, for a value in JSON form.

        Called by the record validator for every value that is not None (of
        any JSON type: return [] for the wrong type, the schema reports it).
        Messages returned here replace the schema's messages for the field.
        """
        return []

    def coerce(self, field: FieldDefinition, value: Any) -> Any:
        """Import: the field's value from a CSV cell (text) or a JSON Lines value; raise ValueError with a reason.

        Built-in types are coerced by xrm.transfer.coerce (with the import's
        number and date options); other types by this method. The default
        returns the value unchanged (the validator checks it).
        """
        return value

    def display_text(self, field: FieldDefinition, value: Any) -> str:
        """A value as a person reads and types it (form inputs; display), e.g. an account number in groups of 4."""
        return str(value)

    def form_widget(self, field: FieldDefinition) -> dict[str, Any]:
        """Hints for the web form (webui/forms.py) of a type it does not know by name.

        Keys (all optional): "kind" ("text" or "textarea"), "input_type" (the
        HTML input type, e.g. "text", "tel"), "attributes" (HTML attributes such
        as pattern, maxlength, placeholder, autocomplete, inputmode).
        """
        return {}


class TextType(FieldType):
    name = "text"
    json_type = "string"
    keywords = frozenset({"maxLength", "minLength", "pattern"})
    text_like = True
    default_max_length: ClassVar[int | None] = 500

    def value_schema(self, field: FieldDefinition) -> dict[str, Any]:
        schema = super().value_schema(field)
        if self.default_max_length and "maxLength" not in schema:
            schema["maxLength"] = self.default_max_length
        return schema

    def check_predicates(self, field: FieldDefinition, columns: Mapping[str, str]) -> list[str]:
        return _length_checks(columns["value"], self.value_schema(field))


class LongTextType(TextType):
    name = "long_text"
    default_max_length = 100_000
    can_be_unique = False


class EmailType(TextType):
    name = "email"
    formats = ("email",)
    keywords = frozenset({"maxLength"})
    default_max_length = 254

    def value_schema(self, field: FieldDefinition) -> dict[str, Any]:
        return {**super().value_schema(field), "pattern": _EMAIL_PATTERN}


class PhoneType(TextType):
    name = "phone"
    keywords = frozenset({"pattern"})
    default_max_length = 32

    def value_schema(self, field: FieldDefinition) -> dict[str, Any]:
        schema = super().value_schema(field)
        schema.setdefault("pattern", _PHONE_PATTERN)
        return schema


class UrlType(TextType):
    name = "url"
    formats = ("uri",)
    keywords = frozenset({"maxLength"})
    default_max_length = 2000

    def value_schema(self, field: FieldDefinition) -> dict[str, Any]:
        return {**super().value_schema(field), "pattern": _URL_PATTERN}


class IntegerType(FieldType):
    name = "integer"
    json_type = "integer"
    sql = "bigint"
    keywords = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})

    def value_schema(self, field: FieldDefinition) -> dict[str, Any]:
        schema = super().value_schema(field)
        schema.setdefault("minimum", _INT64_MIN)
        schema.setdefault("maximum", _INT64_MAX)
        return schema

    def check_predicates(self, field: FieldDefinition, columns: Mapping[str, str]) -> list[str]:
        return _range_checks(columns["value"], field.schema)

    def to_json(self, value: Any) -> Any:
        # JSON Schema counts 10.0 as an integer, but bigint input refuses "10.0".
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, decimal.Decimal) and value.is_finite() and value == value.to_integral_value():
            return int(value)
        return value


class DecimalType(FieldType):
    """Exact decimal numbers (numeric); never stored as float."""

    name = "decimal"
    json_type = "number"
    keywords = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})

    def sql_type(self, field: FieldDefinition) -> str:
        precision, scale = field.xrm.get("precision"), field.xrm.get("scale")
        if precision is not None:
            return f"numeric({int(precision)}, {int(scale or 0)})"
        return "numeric"

    def value_schema(self, field: FieldDefinition) -> dict[str, Any]:
        schema = super().value_schema(field)
        if field.xrm.get("scale") is not None:
            schema["x-xrm-scale"] = int(field.xrm["scale"])
        if field.xrm.get("precision") is not None:
            schema["x-xrm-precision"] = int(field.xrm["precision"])
        return schema

    def check_predicates(self, field: FieldDefinition, columns: Mapping[str, str]) -> list[str]:
        return _range_checks(columns["value"], field.schema)

    def to_json(self, value: Any) -> Any:
        if isinstance(value, float):
            return decimal.Decimal(repr(value))  # 0.1 stays 0.1, not 0.1000000000000000055...
        return value

    def to_db(self, field: FieldDefinition, value: Any) -> dict[str, Any]:
        return {"value": None if value is None else decimal.Decimal(value)}


class CurrencyType(FieldType):
    """An amount with its ISO 4217 code, stored as numeric + char(3)."""

    name = "currency"
    json_type = "object"
    keywords = frozenset({"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"})
    can_be_unique = False

    def columns(self, field: FieldDefinition) -> list[Column]:
        scale = int(field.xrm.get("scale", 2))
        return [
            Column(f"{field.name}_amount", f"numeric(18, {scale})", "amount"),
            Column(f"{field.name}_currency", "char(3)", "currency"),
        ]

    def value_schema(self, field: FieldDefinition) -> dict[str, Any]:
        amount: dict[str, Any] = {"type": "number", "x-xrm-scale": int(field.xrm.get("scale", 2)), "x-xrm-precision": 18}
        amount.update(_copy_keywords(field.schema, self.keywords))
        codes = field.xrm.get("currencies") or sorted(ISO_4217)
        return {
            "type": "object",
            "properties": {"amount": amount, "currency": {"type": "string", "enum": list(codes)}},
            "required": ["amount", "currency"],
            "additionalProperties": False,
        }

    def check_predicates(self, field: FieldDefinition, columns: Mapping[str, str]) -> list[str]:
        amount, currency = columns["amount"], columns["currency"]
        codes = field.xrm.get("currencies") or sorted(ISO_4217)
        return [
            f"(({amount}) IS NULL) = (({currency}) IS NULL)",
            _in_list(currency, list(codes)),
            *_range_checks(amount, field.schema),
        ]

    def to_json(self, value: Any) -> Any:
        if isinstance(value, Mapping) and isinstance(value.get("amount"), float):
            return {**value, "amount": decimal.Decimal(repr(value["amount"]))}
        return value

    def to_db(self, field: FieldDefinition, value: Any) -> dict[str, Any]:
        if value is None:
            return {"amount": None, "currency": None}
        return {"amount": decimal.Decimal(value["amount"]), "currency": value["currency"]}

    def from_db(self, field: FieldDefinition, values: Mapping[str, Any]) -> Any:
        if values["amount"] is None:
            return None
        return {"amount": values["amount"], "currency": values["currency"]}


class BooleanType(FieldType):
    name = "boolean"
    json_type = "boolean"
    sql = "boolean"
    can_be_unique = False


class DateType(FieldType):
    name = "date"
    json_type = "string"
    formats = ("date",)
    sql = "date"

    def to_json(self, value: Any) -> Any:
        if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
            return value.isoformat()
        return value

    def to_db(self, field: FieldDefinition, value: Any) -> dict[str, Any]:
        return {"value": None if value is None else dt.date.fromisoformat(value)}


def parse_aware_datetime(text: str) -> dt.datetime | None:
    """An ISO 8601 date-time with offset as a datetime; None if it is not one."""
    try:
        moment = dt.datetime.fromisoformat(text.strip().replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.utcoffset() is not None else None


def in_utc_range(moment: dt.datetime) -> bool:
    """Whether the moment exists in UTC between years 1 and 9999 (what can be read back)."""
    try:
        moment.astimezone(dt.timezone.utc)
    except OverflowError:
        return False
    return True


def _utc_text(moment: dt.datetime) -> str:
    if not in_utc_range(moment):
        return moment.isoformat()  # the validator refuses it with a message
    return moment.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


class DateTimeType(FieldType):
    """A point in time; stored as timestamptz, so an offset is required."""

    name = "datetime"
    json_type = "string"
    formats = ("date-time",)
    sql = "timestamptz"

    def to_json(self, value: Any) -> Any:
        if isinstance(value, dt.datetime):
            # A naive datetime becomes a string without offset, which the
            # date-time format rejects: the caller must say which time zone.
            return value.isoformat() if value.tzinfo is None else _utc_text(value)
        if isinstance(value, str):
            # timestamptz stores UTC anyway; converting here also lets offsets
            # RFC 3339 allows but PostgreSQL refuses (beyond +-15:59) through.
            moment = parse_aware_datetime(value)
            if moment is not None:
                return _utc_text(moment)
        return value

    def to_db(self, field: FieldDefinition, value: Any) -> dict[str, Any]:
        if value is None:
            return {"value": None}
        return {"value": dt.datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))}


class SelectType(FieldType):
    name = "select"
    json_type = "string"
    keywords = frozenset({"enum"})
    text_like = True

    def check_predicates(self, field: FieldDefinition, columns: Mapping[str, str]) -> list[str]:
        return [_in_list(columns["value"], field.schema["enum"])]


class MultiSelectType(FieldType):
    name = "multiselect"
    json_type = "array"
    sql = "text[]"
    keywords = frozenset({"minItems", "maxItems"})
    can_be_unique = False

    def options(self, field: FieldDefinition) -> list[str]:
        return list(field.schema["items"]["enum"])

    def value_schema(self, field: FieldDefinition) -> dict[str, Any]:
        schema = super().value_schema(field)
        schema["items"] = {"type": "string", "enum": self.options(field)}
        schema["uniqueItems"] = True
        return schema

    def check_predicates(self, field: FieldDefinition, columns: Mapping[str, str]) -> list[str]:
        column = columns["value"]
        options = ", ".join(quote_literal(o) for o in self.options(field))
        checks = [f"{column} <@ ARRAY[{options}]::text[]", f"array_position({column}, NULL) IS NULL"]
        if "minItems" in field.schema:
            checks.append(f"cardinality({column}) >= {int(field.schema['minItems'])}")
        if "maxItems" in field.schema:
            checks.append(f"cardinality({column}) <= {int(field.schema['maxItems'])}")
        return checks

    def to_json(self, value: Any) -> Any:
        if isinstance(value, (tuple, set, frozenset)):
            return list(value)
        return value


class ReferenceType(FieldType):
    """Many-to-one reference: a uuid column with a foreign key to the target."""

    name = "reference"
    json_type = "string"
    formats = ("uuid",)
    sql = "uuid"

    def to_json(self, value: Any) -> Any:
        return str(value) if isinstance(value, uuid.UUID) else value

    def to_db(self, field: FieldDefinition, value: Any) -> dict[str, Any]:
        return {"value": None if value is None else uuid.UUID(value)}


class JsonType(FieldType):
    """Free-form JSON object, for data without a fixed shape."""

    name = "json"
    json_type = "object"
    sql = "jsonb"
    can_be_unique = False


BUILTIN_FIELD_TYPES: tuple[FieldType, ...] = (
    TextType(),
    LongTextType(),
    IntegerType(),
    DecimalType(),
    CurrencyType(),
    BooleanType(),
    DateType(),
    DateTimeType(),
    SelectType(),
    MultiSelectType(),
    EmailType(),
    PhoneType(),
    UrlType(),
    ReferenceType(),
    JsonType(),
)


class FieldTypeRegistry(Mapping[str, FieldType]):
    """Every field type by name: the built-ins and those of the loaded plugins.

    Asks the plugin manager (xrm.plugins) on each access, which caches the
    merged table until a plugin is registered or unregistered; so the first
    access discovers the plugins, and a name clash between plugins is an
    error (xrm.plugins.PluginError) naming both.
    """

    def _types(self) -> dict[str, FieldType]:
        from ..plugins import get_plugin_manager

        return get_plugin_manager().field_types()

    def __getitem__(self, name: str) -> FieldType:
        return self._types()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._types())

    def __len__(self) -> int:
        return len(self._types())

    def __contains__(self, name: object) -> bool:
        return name in self._types()

    def __repr__(self) -> str:
        return f"FieldTypeRegistry({', '.join(self._types())})"


FIELD_TYPES: Mapping[str, FieldType] = FieldTypeRegistry()


def infer_field_type(schema: Mapping[str, Any]) -> str | None:
    """The field type a plain JSON Schema property implies, if unambiguous."""
    json_type, fmt = schema.get("type"), schema.get("format")
    if json_type is None and fmt is not None:
        json_type = "string"  # every format xrm knows describes strings
    if fmt == "uuid" and json_type == "string" and "references" in schema.get("x-xrm", {}):
        return "reference"
    if json_type == "string":
        if "enum" in schema:
            return "select"
        return {"email": "email", "uri": "url", "date": "date", "date-time": "datetime", None: "text"}.get(fmt)
    if json_type == "array" and isinstance(schema.get("items"), Mapping) and "enum" in schema["items"]:
        return "multiselect"
    return {"integer": "integer", "number": "decimal", "boolean": "boolean", "object": "json"}.get(json_type)  # type: ignore[arg-type]
