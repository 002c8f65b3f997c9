"""The built-in plugin `core`: xrm's own field types, contributed through the public hooks.

Registered through the `xrm.plugins` entry-point group (pyproject.toml), like
any third-party plugin.
"""

from __future__ import annotations

from typing import Any

from .hookspecs import hookimpl
from .schema.field_types import BUILTIN_FIELD_TYPES, FieldType


@hookimpl
def xrm_field_types() -> list[FieldType]:
    return list(BUILTIN_FIELD_TYPES)


@hookimpl
def xrm_capabilities() -> dict[str, Any]:
    return {
        "description": "xrm's built-in field types",
        "reads": [],
        "writes": [],
        "network": False,
    }
