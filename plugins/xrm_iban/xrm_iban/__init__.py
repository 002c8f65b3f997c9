"""xrm-iban: an example third-party xrm plugin.

Adds the field type `iban`, the entity `bank_account` and a workflow action
`mask_iban`, through the hooks declared in xrm.hookspecs (docs/plugins.md).
Registered by its entry point (pyproject.toml):

    [project.entry-points."xrm.plugins"]
    iban = "xrm_iban"
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import click

from xrm.plugins import WorkflowAction, hookimpl

from .field_type import IbanType
from .iban import format_iban, iban_problem, mask_iban, normalise_iban

__all__ = ["IbanType", "format_iban", "iban_problem", "mask_iban", "normalise_iban"]


@hookimpl
def xrm_capabilities() -> dict[str, Any]:
    return {
        "description": "IBAN field type (ISO 13616 mod-97) and a bank_account entity",
        "reads": ["bank_account"],
        "writes": ["bank_account"],
        "network": False,
    }


@hookimpl
def xrm_field_types() -> list[IbanType]:
    return [IbanType()]


@hookimpl
def xrm_entity_definitions() -> list[dict[str, Any]]:
    text = resources.files(__name__).joinpath("bank_account.json").read_text(encoding="utf-8")
    return [json.loads(text)]


def _mask(record: dict[str, Any], parameters: dict[str, Any] | None = None, principal: Any = None) -> dict[str, Any]:
    """The record's IBAN masked for a notification text (an automation step runs it; its result is the job's result)."""
    field = (parameters or {}).get("field", "iban")
    value = record.get(field)
    return {"text": mask_iban(value) if isinstance(value, str) else None}


@hookimpl
def xrm_workflow_actions() -> list[WorkflowAction]:
    # Run by automations (docs/workflows.md) on bank_account records, the entity this plugin declares it reads.
    return [
        WorkflowAction(
            name="mask_iban",
            label={"en": "Mask IBAN", "de": "IBAN maskieren"},
            run=_mask,
            parameters={"type": "object", "properties": {"field": {"type": "string", "default": "iban"}}},
            description="Gives the IBAN with all but country, check digits and last 4 characters hidden",
        )
    ]


@click.command("iban-check")
@click.argument("value")
def iban_check(value: str) -> None:
    """Check an IBAN (ISO 13616) and print it in groups of 4."""
    compact = normalise_iban(value)
    problem = iban_problem(compact)
    if problem:
        raise click.ClickException(problem)
    click.echo(format_iban(compact))


@hookimpl
def xrm_cli_commands() -> list[click.Command]:
    return [iban_check]
