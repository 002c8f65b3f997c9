"""The field type `iban`: a string, stored normalised, checked with ISO 13616 mod-97."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from xrm.schema.field_types import FieldType

from .iban import PATTERN, format_iban, iban_problem, normalise_iban

if TYPE_CHECKING:
    from xrm.schema.definition import FieldDefinition


class IbanType(FieldType):
    """An International Bank Account Number."""

    name = "iban"
    json_type = "string"
    sql = "text"
    text_like = True
    query_kind: ClassVar[str | None] = "text"

    def value_schema(self, field: FieldDefinition) -> dict[str, Any]:
        # Also the OpenAPI schema of the field (via xrm.records.validation.record_schema).
        return {
            "type": "string",
            "pattern": PATTERN,
            "minLength": 15,
            "maxLength": 34,
            "description": "IBAN (ISO 13616); spaces and lower case are accepted and stored normalised",
            "examples": ["DE89370400440532013000"],
        }

    def check_predicates(self, field: FieldDefinition, columns: Mapping[str, str]) -> list[str]:
        # The table refuses what is not in normal form, whatever writes to it.
        return [f"{columns['value']} ~ '{PATTERN}'"]

    def to_json(self, value: Any) -> Any:
        return normalise_iban(value) if isinstance(value, str) else value

    def check(self, field: FieldDefinition, value: Any) -> list[str]:
        if not isinstance(value, str):
            return []
        problem = iban_problem(normalise_iban(value))
        return [problem] if problem else []

    def coerce(self, field: FieldDefinition, value: Any) -> Any:
        return normalise_iban(value) if isinstance(value, str) else value

    def display_text(self, field: FieldDefinition, value: Any) -> str:
        return format_iban(value) if isinstance(value, str) else str(value)

    def form_widget(self, field: FieldDefinition) -> dict[str, Any]:
        return {
            "kind": "text",
            "input_type": "text",
            "attributes": {
                "maxlength": 42,
                "autocomplete": "off",
                "spellcheck": "false",
                "autocapitalize": "characters",
                "placeholder": "DE89 3704 0044 0532 0130 00",
                "data-field-type": "iban",
            },
        }
