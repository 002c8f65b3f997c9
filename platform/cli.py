"""The `xrm` command line. Every command has --help."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from .db.database import json_dumps
from .errors import XrmError
from .runtime import Platform, open_platform
from .schema.files import load_documents
from .settings import Settings

T = TypeVar("T")


def run(function: Callable[..., Awaitable[Any]]) -> Callable[..., Any]:
    """Run an async command; user errors print cleanly and exit 1 (no traceback)."""

    @wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return asyncio.run(function(*args, **kwargs))
        except XrmError as error:
            click.echo(f"Error: {error}", err=True)
            sys.exit(1)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="xrm")
def main() -> None:
    """xrm: a low-code xRM platform.

    Settings come from the environment: XRM_DATA_DIR (embedded database folder,
    default ./.xrm), XRM_DATABASE_URL (an external PostgreSQL >= 15 with
    pgvector instead), XRM_SCHEMA_DIR (default ./entity_schemas).
    """


# -- db ------------------------------------------------------------------------
@main.group()
def db() -> None:
    """The database (embedded by default)."""


@db.command("uri")
def db_uri() -> None:
    """Print the database URI (starting the embedded server if needed)."""
    from .db.database import database_uri

    click.echo(database_uri(Settings.from_env()))


# -- serve / demo ------------------------------------------------------------
@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
def serve(host: str, port: int) -> None:
    """Run the web server (web UI at /, health at /health)."""
    import uvicorn

    from .app import create_app

    click.echo(f"xrm listening on http://{host}:{port}/")
    uvicorn.run(create_app(), host=host, port=port, log_level="info")


@main.command()
@run
async def demo() -> None:
    """Apply entity_schemas/ and load the CRM demo data set (once)."""
    from .demo.loader import load_demo_data

    async with open_platform() as platform:
        await _apply_schema_folder(platform)
        missing = [n for n in ("account", "contact", "deal") if n not in platform.registry]
        if missing:
            raise XrmError(f"The demo needs the entities {', '.join(missing)} (from entity_schemas/); they are not defined")
        created = await load_demo_data(platform.db, platform.registry)
        for entity, count in created.items():
            click.echo(f"{entity}: {count} demo records created" if count else f"{entity}: already has records, left as is")


async def _apply_schema_folder(platform: Platform) -> None:
    plan, warning = await platform.load_schema_folder()
    if warning:
        click.echo(f"Warning: {warning}", err=True)
    elif plan and plan.steps:
        click.echo(f"Applied entity definitions from {platform.settings.schema_dir}:\n{plan.render()}")


# -- schema --------------------------------------------------------------------
@main.group()
def schema() -> None:
    """Entity definitions: plan, apply, revert, history, archives."""


def _documents(path: str) -> tuple[list[Any], list[str]]:
    loaded = load_documents(Path(path))
    return [d for _, d in loaded], [s for s, _ in loaded]


@schema.command("plan")
@click.argument("path", type=click.Path(exists=True))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@run
async def schema_plan(path: str, as_json: bool) -> None:
    """Show what applying PATH (a file or folder of definitions) would change."""
    documents, sources = _documents(path)
    async with open_platform() as platform:
        plan = await platform.schema.plan(documents, sources=sources)
    click.echo(json_dumps(plan.as_dict()) if as_json else plan.render())
    if plan.refusals:
        sys.exit(1)


@schema.command("apply")
@click.argument("path", type=click.Path(exists=True))
@click.option("--allow-destructive", is_flag=True, help="Also run steps that archive fields or entities.")
@run
async def schema_apply(path: str, allow_destructive: bool) -> None:
    """Apply PATH (a file or folder of definitions) in one transaction."""
    documents, sources = _documents(path)
    async with open_platform() as platform:
        plan = await platform.schema.apply(documents, sources=sources, allow_destructive=allow_destructive)
    click.echo(plan.render())
    if plan.changeset_id:
        click.echo(f"Applied as change {plan.changeset_id}. Undo with `xrm schema revert`.")


@schema.command("remove")
@click.argument("entity")
@click.option("--allow-destructive", is_flag=True, required=True, help="Confirm: the table moves to the archive.")
@run
async def schema_remove(entity: str, allow_destructive: bool) -> None:
    """Remove ENTITY; its table and records move to the archive (restorable)."""
    async with open_platform() as platform:
        plan = await platform.schema.apply([], remove=[entity], allow_destructive=allow_destructive)
    click.echo(plan.render())


@schema.command("revert")
@run
async def schema_revert() -> None:
    """Undo the newest schema change still in effect, restoring the data it touched."""
    async with open_platform() as platform:
        plan = await platform.schema.revert()
    click.echo(plan.render())


@schema.command("history")
@click.argument("entity", required=False)
@click.option("--json", "as_json", is_flag=True, help="Include the definitions, as JSON.")
@run
async def schema_history(entity: str | None, as_json: bool) -> None:
    """List definition versions (of ENTITY, or of all entities), newest first."""
    async with open_platform() as platform:
        rows = await platform.schema.history(entity)
    if as_json:
        click.echo(json_dumps(rows))
        return
    for row in rows:
        state = "removed" if row["definition"] is None else f"v{row['version']}"
        reverted = f" (reverted by change {row['reverted_by']})" if row["reverted_by"] else ""
        click.echo(f"{row['created_at']:%Y-%m-%d %H:%M:%S}  change {row['changeset_id']:<4} {row['kind']:<8} {row['name']} {state}{reverted}")


@schema.command("archives")
@run
async def schema_archives() -> None:
    """List archived fields and entities that can be restored."""
    async with open_platform() as platform:
        rows = await platform.schema.archives()
    if not rows:
        click.echo("The archive is empty.")
    for row in rows:
        if row["kind"] == "field":
            click.echo(f"field  #{row['id']:<5} {row['entity']}.{row['field']}  {row['reason']}, {row['row_count']} values, {row['created_at']:%Y-%m-%d %H:%M}")
        else:
            click.echo(f"entity {row['name']}  removed {row['removed_at']:%Y-%m-%d %H:%M} (table xrm_archive.{row['archived_table']})")


@schema.command("restore-field")
@click.argument("archive_id", type=int)
@run
async def schema_restore_field(archive_id: int) -> None:
    """Bring back a removed field with its values (ARCHIVE_ID from `xrm schema archives`)."""
    async with open_platform() as platform:
        plan = await platform.schema.restore_field(archive_id)
    click.echo(plan.render())


@schema.command("restore-entity")
@click.argument("entity")
@run
async def schema_restore_entity(entity: str) -> None:
    """Bring back a removed entity with all its records."""
    async with open_platform() as platform:
        plan = await platform.schema.restore_entity(entity)
    click.echo(plan.render())


@schema.command("show")
@click.argument("entity")
@run
async def schema_show(entity: str) -> None:
    """Print the current definition of ENTITY."""
    async with open_platform() as platform:
        definition = platform.registry.get(entity).definition
    click.echo(json.dumps(definition.document, indent=2, ensure_ascii=False))


if __name__ == "__main__":  # pragma: no cover
    main()
