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
        await _demo_users(platform)


DEMO_USERS = (("admin", ("admin",)), ("anna.vertrieb", ("sales",)), ("ben.service", ("service",)))


async def _demo_users(platform: Platform) -> None:
    """The demo's users: `admin` with the admin role, and two with narrower roles."""
    import secrets

    from .auth import UserService
    from .errors import ValidationFailed

    users = UserService(platform.db)
    for name, roles in DEMO_USERS:
        password = secrets.token_urlsafe(9)
        try:
            await users.create_user(name, password, list(roles))
        except ValidationFailed:
            click.echo(f"user {name}: exists already, password unchanged")
            continue
        click.echo(f"user {name} (roles: {', '.join(roles)}): password {password}")


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


# -- users and API tokens -----------------------------------------------------
@main.group()
def user() -> None:
    """Users (who can log in and hold API tokens)."""


@user.command("create")
@click.argument("name")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True, help="At least 8 characters.")
@click.option("--role", "roles", multiple=True, help="A role to grant (repeatable), e.g. admin.")
@run
async def user_create(name: str, password: str, roles: tuple[str, ...]) -> None:
    """Create user NAME."""
    from .auth import UserService

    async with open_platform() as platform:
        principal = await UserService(platform.db).create_user(name, password, list(roles))
    click.echo(f"Created user {principal.name} ({principal.id})" + (f" with roles {', '.join(roles)}" if roles else ""))


@main.group()
def token() -> None:
    """API tokens (send as `Authorization: Bearer <token>`)."""


@token.command("create")
@click.option("--user", "user_name", required=True, help="The user the token acts as.")
@click.option("--label", default="", help="What the token is for.")
@run
async def token_create(user_name: str, label: str) -> None:
    """Create a token for a user and print it (it is shown only once)."""
    from .auth import UserService

    async with open_platform() as platform:
        secret, info = await UserService(platform.db).create_token(user_name, label)
    click.echo(secret)
    click.echo(f"(token id {info.id}; revoke with `xrm token revoke {info.id}`)", err=True)


@token.command("list")
@click.option("--user", "user_name", default=None, help="Only this user's tokens.")
@run
async def token_list(user_name: str | None) -> None:
    """List tokens (never the tokens themselves)."""
    from .auth import UserService

    async with open_platform() as platform:
        tokens = await UserService(platform.db).list_tokens(user_name)
    for info in tokens:
        state = f"revoked {info.revoked_at:%Y-%m-%d %H:%M}" if info.revoked_at else "active"
        used = f"last used {info.last_used_at:%Y-%m-%d %H:%M}" if info.last_used_at else "never used"
        click.echo(f"{info.id}  {info.user:<20} {state:<24} {used:<28} {info.label}")


@token.command("revoke")
@click.argument("token_id")
@run
async def token_revoke(token_id: str) -> None:
    """Revoke a token by its id (from `xrm token list`)."""
    from .auth import UserService

    async with open_platform() as platform:
        await UserService(platform.db).revoke_token(token_id)
    click.echo(f"Revoked token {token_id}")


# -- import / export (xrm.transfer; docs/import-export.md) ---------------------
def _pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    """COLUMN=FIELD / FIELD=VALUE options as a dict (split at the last "=" for --map)."""
    pairs: dict[str, str] = {}
    for value in values:
        if "=" not in value:
            raise XrmError(f"{option} takes NAME=VALUE, not {value!r}")
        name, _, rest = value.rpartition("=") if option == "--map" else value.partition("=")
        if name in pairs:
            raise XrmError(f"{option} names {name!r} twice")
        pairs[name] = rest
    return pairs


@main.command("import")
@click.argument("entity")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--format", "file_format", type=click.Choice(["csv", "jsonl"]), default=None, help="Default: from the extension (.jsonl/.ndjson, else csv).")
@click.option("--map", "mappings", multiple=True, metavar="COLUMN=FIELD", help="Fill FIELD from COLUMN (repeatable); COLUMN= ignores the column.")
@click.option("--upsert-key", metavar="FIELD", help="A unique field (or id): rows whose key exists update that record, others are created.")
@click.option("--dry-run", is_flag=True, help="Check and resolve everything, report what would happen, write nothing.")
@click.option("--currency", metavar="CODE", help="Currency of amounts written without one, e.g. EUR.")
@click.option("--timezone", metavar="ZONE", help="Time zone of date-times without an offset, e.g. Europe/Berlin (default: refuse them).")
@click.option("--number-format", type=click.Choice(["auto", "de", "en"]), default="auto", show_default=True, help="How '.' and ',' are read in numbers.")
@click.option("--date-format", metavar="FORMAT", help="An extra strptime pattern for dates, e.g. %m/%d/%Y.")
@click.option("--encoding", help="Text encoding (default: UTF-8 with or without BOM, else Windows-1252).")
@click.option("--delimiter", help="CSV delimiter (default: detected from the header: comma, semicolon or tab).")
@click.option("--show-errors", default=20, show_default=True, type=click.IntRange(min=0), metavar="N", help="How many row errors to print.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@run
async def import_command(
    entity: str,
    file: str,
    file_format: str | None,
    mappings: tuple[str, ...],
    upsert_key: str | None,
    dry_run: bool,
    currency: str | None,
    timezone: str | None,
    number_format: str,
    date_format: str | None,
    encoding: str | None,
    delimiter: str | None,
    show_errors: int,
    as_json: bool,
) -> None:
    """Import FILE (CSV or JSON Lines) into ENTITY; exit 1 if any row failed.

    Columns map to fields by name or label (English or German); rows are
    written in chunks, bad rows are reported with their row number (the CSV
    header is row 1) and never stop the good ones.
    """
    from .transfer.importer import import_file
    from .transfer.sources import count_rows

    mapping = {column: (name or None) for column, name in _pairs(mappings, "--map").items()}
    if delimiter == "\\t":
        delimiter = "\t"
    total = count_rows(file, file_format, encoding=encoding, delimiter=delimiter)  # type: ignore[arg-type]
    async with open_platform() as platform:
        with click.progressbar(length=total, label=f"{'Checking' if dry_run else 'Importing'} {entity}", file=sys.stderr) as bar:
            shown = 0

            def progress(done: int) -> None:
                nonlocal shown
                bar.update(done - shown)
                shown = done

            report = await import_file(
                platform.db,
                platform.registry,
                entity,
                file,
                format=file_format,  # type: ignore[arg-type]
                encoding=encoding,
                delimiter=delimiter,
                progress=progress,
                mapping=mapping or None,
                upsert_key=upsert_key,
                dry_run=dry_run,
                default_currency=currency,
                timezone=timezone,
                number_format=number_format,
                date_format=date_format,
            )
    if as_json:
        click.echo(json_dumps(report.as_dict()))
    else:
        _print_import_report(report, show_errors)
    if report.skipped:
        sys.exit(1)


def _print_import_report(report: Any, show_errors: int) -> None:
    verb = ("would be created", "would be updated") if report.dry_run else ("created", "updated")
    rate = f", {report.rows / report.seconds:,.0f} rows/s" if report.seconds > 0 and report.rows else ""
    click.echo(
        f"{report.entity}: {report.rows} rows read, {report.created} {verb[0]}, {report.updated} {verb[1]}, "
        f"{report.skipped} not imported ({report.seconds:.1f} s{rate})"
    )
    if report.dry_run:
        click.echo("Dry run: nothing was written.")
    for note in report.notes:
        click.echo(f"Note: {note}")
    for match in report.approximate_matches:
        click.echo(f"Matched ignoring case/spaces: column {match.column!r}: {match.value!r} -> {match.matched!r} ({match.rows} rows)")
    if report.error_count:
        listed = report.errors[:show_errors]
        more = f" (first {len(listed)} of {report.error_count})" if report.error_count > len(listed) else ""
        click.echo(f"Row errors{more}:")
        for error in listed:
            click.echo(f"  {error}")


@main.command("export")
@click.argument("entity")
@click.option("--format", "file_format", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True)
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), help="Write to this file (default: standard output).")
@click.option("--where", "conditions", multiple=True, metavar="FIELD=VALUE", help="Only records whose FIELD equals VALUE (repeatable; VALUE is read as an import cell; FIELD= means empty).")
@click.option("--search", metavar="TEXT", help="Only records matching this full-text search.")
@click.option("--sort", metavar="FIELDS", help="Order, e.g. -close_date,name (default: creation order).")
@click.option("--references", type=click.Choice(["id", "display"]), default="id", show_default=True, help="Write references as record ids (round-trips) or display values.")
@run
async def export_command(
    entity: str,
    file_format: str,
    output: str | None,
    conditions: tuple[str, ...],
    search: str | None,
    sort: str | None,
    references: str,
) -> None:
    """Export the records of ENTITY as CSV or JSON Lines, streamed page by page."""
    from .transfer.exporter import export_records, where_from_text

    order_by = [part.strip() for part in sort.split(",") if part.strip()] if sort else None
    async with open_platform() as platform:
        where = await where_from_text(platform.db, platform.registry, entity, _pairs(conditions, "--where"))
        options: dict[str, Any] = {"format": file_format, "where": where, "search": search, "order_by": order_by, "references": references}
        if output:
            with open(output, "w", encoding="utf-8", newline="") as out:
                count = await export_records(platform.db, platform.registry, entity, out, **options)
            click.echo(f"Exported {count} {entity} records to {output}", err=True)
        else:
            await export_records(platform.db, platform.registry, entity, sys.stdout, **options)
            sys.stdout.flush()


if __name__ == "__main__":  # pragma: no cover
    main()
