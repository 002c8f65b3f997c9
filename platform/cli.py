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


class _WithPluginCommands(click.Group):
    """The `xrm` group: built-in commands, then those plugins add (xrm_cli_commands).

    Plugins are discovered only when a name is not a built-in command or the
    full list is wanted (--help), so built-in commands start without them.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(_plugin_commands()))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return super().get_command(ctx, cmd_name) or _plugin_commands().get(cmd_name)


def _plugin_commands() -> dict[str, click.Command]:
    from .plugins import get_plugin_manager

    try:
        return get_plugin_manager().cli_commands()
    except XrmError as error:  # a broken plugin must not take `xrm --help` down with it
        click.echo(f"Warning: {error}", err=True)
        return {}


@click.group(cls=_WithPluginCommands, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="xrm")
def main() -> None:
    """xrm: a low-code xRM platform.

    Settings come from the environment: XRM_DATA_DIR (embedded database folder,
    default ./.xrm), XRM_DATABASE_URL (an external PostgreSQL >= 15 with
    pgvector instead), XRM_SCHEMA_DIR (default ./entity_schemas).
    """


# -- plugins -------------------------------------------------------------------
@main.group()
def plugins() -> None:
    """Installed plugins (entry-point group xrm.plugins; see docs/plugins.md)."""


@plugins.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins_list(as_json: bool) -> None:
    """Each loaded plugin: distribution and version, the hooks it implements, its declared capabilities."""
    from .plugins import get_plugin_manager

    try:
        manager = get_plugin_manager()
    except XrmError as error:
        click.echo(f"Error: {error}", err=True)
        sys.exit(1)
    rows = []
    for info in manager.infos.values():
        rows.append({
            "name": info.name,
            "module": info.module,
            "distribution": info.distribution,
            "version": info.version,
            "builtin": info.builtin,
            "hooks": manager.hooks_of(info.name),
            "capabilities": manager.capabilities(info.name),
            "provides": manager.provides(info.name),
        })
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    for row in rows:
        origin = f"{row['distribution'] or '?'} {row['version'] or ''}".strip()
        click.echo(f"{row['name']} ({origin}{', built-in' if row['builtin'] else ''}) -> {row['module']}")
        click.echo(f"  hooks: {', '.join(row['hooks']) or '-'}")
        for kind, names in row["provides"].items():
            click.echo(f"  {kind.replace('_', ' ')}: {', '.join(names) or '-'}")
        caps = row["capabilities"]
        if caps:
            for key, value in caps.items():
                shown = ", ".join(map(str, value)) if isinstance(value, (list, tuple)) else value
                click.echo(f"  {key}: {shown if shown not in ('', None) else '-'}")
        else:
            click.echo("  capabilities: (none declared)")


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
@click.option("--seed", default=1, show_default=True, type=int, help="The same seed gives the same records (on the same day).")
@click.option("--size", type=click.Choice(["small", "medium", "large"]), default="small", show_default=True,
              help="Generated accounts: small 25, medium 250, large 1,500 (contacts, deals, ... scale with them).")
@click.option("--accounts", "count", type=click.IntRange(0, 100_000), default=None,
              help="Generate this many accounts instead of a --size (0: only the well-known records).")
@run
async def demo(seed: int, size: str, count: int | None) -> None:
    """Apply entity_schemas/ and load the CRM demo data set (once): well-known records plus generated ones.

    Every record goes through the service layer (validation, state machines,
    audit trail, events). An entity that has records already is left as it
    is, so running it twice duplicates nothing.
    """
    from .demo.generator import SIZES
    from .demo.loader import load_demo_data

    async with open_platform() as platform:
        await _apply_schema_folder(platform)
        missing = [n for n in ("account", "contact", "deal") if n not in platform.registry]
        if missing:
            raise XrmError(f"The demo needs the entities {', '.join(missing)} (from entity_schemas/); they are not defined")
        created = await load_demo_data(platform.db, platform.registry, seed=seed, accounts=SIZES[size] if count is None else count)
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
    await _demo_teams(platform)


DEMO_TEAMS = (("Company", None, ()), ("Sales", "Company", ("anna.vertrieb",)), ("Service", "Company", ("ben.service",)))


async def _demo_teams(platform: Platform) -> None:
    """Teams Company > Sales, Service; the demo deals (still the system's) go to team Sales."""
    from .records.principal import SYSTEM_PRINCIPAL
    from .records.service import RecordService

    security = platform.security()
    existing = {t["name"] for t in await security.list_teams()}
    for name, parent, members in DEMO_TEAMS:
        if name not in existing:
            await security.create_team(name, parent)
            for member in members:
                await security.add_member(name, member)
    deals = RecordService(platform.db, platform.registry, "deal", SYSTEM_PRINCIPAL)
    assigned = 0
    while True:  # every page from the start: an assigned deal is no longer the system's
        page = await deals.list(where={"owner_id": SYSTEM_PRINCIPAL.id}, fields=["id"], limit=1000)
        async with platform.db.transaction():  # one commit per page, not per deal
            for deal in page.records:
                await security.assign("deal", deal["id"], team="Sales")
        assigned += len(page.records)
        if not page.next_cursor:
            break
    if assigned:
        click.echo(f"teams: Company > Sales (anna.vertrieb), Service (ben.service); {assigned} deals assigned to team Sales")


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
@click.option("--email", default=None, help="The user's e-mail address (mail to a record's owner, reminders).")
@run
async def user_create(name: str, password: str, roles: tuple[str, ...], email: str | None) -> None:
    """Create user NAME."""
    from .auth import UserService

    async with open_platform() as platform:
        principal = await UserService(platform.db).create_user(name, password, list(roles), email=email)
    click.echo(f"Created user {principal.name} ({principal.id})" + (f" with roles {', '.join(roles)}" if roles else ""))


@user.command("email")
@click.argument("name")
@click.argument("address", required=False)
@run
async def user_email(name: str, address: str | None) -> None:
    """Set the e-mail address of NAME (mail to a record's owner, reminders); without ADDRESS, remove it."""
    from .auth import UserService

    async with open_platform() as platform:
        await UserService(platform.db).set_email(name, address or None)
    click.echo(f"{name}: e-mail {address}" if address else f"{name}: no e-mail address")


@user.command("unlock")
@click.argument("name")
@run
async def user_unlock(name: str) -> None:
    """Lift the login lock of NAME (after too many failed logins) and reset its failure count."""
    from .auth import UserService

    async with open_platform() as platform:
        was_locked = await UserService(platform.db, platform.settings).unlock(name)
    click.echo(f"Unlocked {name}" if was_locked else f"{name} was not locked; its failed-login count is reset")


@user.command("list")
@run
async def user_list() -> None:
    """List users with their roles and state (disabled, locked)."""
    from .auth import UserService

    async with open_platform() as platform:
        rows = await UserService(platform.db, platform.settings).list_users()
    for row in rows:
        state = ", ".join(s for s, on in (("disabled", row["disabled"]), ("locked", row["locked"])) if on)
        click.echo(f"{row['name']}\t{','.join(row['roles']) or '-'}\t{state or 'active'}")


@user.command("disable")
@click.argument("name")
@run
async def user_disable(name: str) -> None:
    """Disable NAME: no login; its web sessions end and its API tokens stop working at once."""
    from .auth import UserService

    async with open_platform() as platform:
        changed = await UserService(platform.db, platform.settings).set_disabled(name, True)
    click.echo(f"Disabled {name}" if changed else f"{name} was disabled already")


@user.command("enable")
@click.argument("name")
@run
async def user_enable(name: str) -> None:
    """Enable NAME again (its tokens work again; it logs in anew)."""
    from .auth import UserService

    async with open_platform() as platform:
        changed = await UserService(platform.db, platform.settings).set_disabled(name, False)
    click.echo(f"Enabled {name}" if changed else f"{name} was not disabled")


@user.command("logout-all")
@click.argument("name")
@run
async def user_logout_all(name: str) -> None:
    """End every web session of NAME (API tokens stay; revoke those with `xrm token revoke`)."""
    from .auth import UserService

    async with open_platform() as platform:
        ended = await UserService(platform.db, platform.settings).end_sessions(name)
    click.echo(f"Ended {ended} session(s) of {name}")


@main.group()
def token() -> None:
    """API tokens (send as `Authorization: Bearer <token>`)."""


@token.command("create")
@click.option("--user", "user_name", required=True, help="The user the token acts as.")
@click.option("--label", default="", help="What the token is for.")
@click.option("--read-only", is_flag=True, help="The token may only read (GET), whatever the user's roles allow.")
@run
async def token_create(user_name: str, label: str, read_only: bool) -> None:
    """Create a token for a user and print it (it is shown only once)."""
    from .auth import UserService

    async with open_platform() as platform:
        secret, info = await UserService(platform.db).create_token(user_name, label, read_only=read_only)
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
        access = "read-only" if info.access == "read" else "read-write"
        click.echo(f"{info.id}  {info.user:<20} {access:<10} {state:<24} {used:<28} {info.label}")


@token.command("revoke")
@click.argument("token_id")
@run
async def token_revoke(token_id: str) -> None:
    """Revoke a token by its id (from `xrm token list`)."""
    from .auth import UserService

    async with open_platform() as platform:
        await UserService(platform.db).revoke_token(token_id)
    click.echo(f"Revoked token {token_id}")


# -- permissions: roles, teams, shares, the explainer (xrm.security) ------------
def _print_role(role: dict[str, Any]) -> None:
    flag = " (built-in)" if role["built_in"] else ""
    click.echo(f"{role['name']}{flag}: {role['description']}")
    for g in role["grants"]:
        click.echo(f"  {g['entity']:<20} {g['action']:<8} {g['scope']}")
    for g in role.get("field_grants", []):
        click.echo(f"  field {g['entity']}.{g['field']:<14} {g['access']}")
    if role["users"]:
        click.echo(f"  users: {', '.join(role['users'])}")


@main.group()
def role() -> None:
    """Roles: per entity and action a scope (none, own, team, team_tree, all)."""


@role.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@run
async def role_list(as_json: bool) -> None:
    """List roles with their grants and the users holding them."""
    async with open_platform() as platform:
        roles = await platform.security().list_roles()
    if as_json:
        click.echo(json_dumps(roles))
        return
    for r in roles:
        _print_role(r)


@role.command("create")
@click.argument("name")
@click.option("--description", default="", help="What the role is for.")
@run
async def role_create(name: str, description: str) -> None:
    """Create role NAME (no grants yet: add them with `xrm role grant`)."""
    async with open_platform() as platform:
        _print_role(await platform.security().create_role(name, description))


@role.command("delete")
@click.argument("name")
@run
async def role_delete(name: str) -> None:
    """Delete role NAME (not a built-in one, and only when no user holds it)."""
    async with open_platform() as platform:
        await platform.security().delete_role(name)
    click.echo(f"Deleted role {name}")


@role.command("grant")
@click.argument("role_name", metavar="ROLE")
@click.argument("entity")
@click.argument("action", type=click.Choice(["create", "read", "update", "delete", "export", "assign", "share"]))
@click.argument("scope", type=click.Choice(["none", "own", "team", "team_tree", "all"]))
@run
async def role_grant(role_name: str, entity: str, action: str, scope: str) -> None:
    """Let ROLE do ACTION on ENTITY (* = every entity) for records in SCOPE."""
    async with open_platform() as platform:
        _print_role(await platform.security().grant(role_name, entity, action, scope))


@role.command("revoke")
@click.argument("role_name", metavar="ROLE")
@click.argument("entity")
@click.argument("action", type=click.Choice(["create", "read", "update", "delete", "export", "assign", "share"]))
@run
async def role_revoke(role_name: str, entity: str, action: str) -> None:
    """Remove ROLE's grant of ACTION on ENTITY."""
    async with open_platform() as platform:
        _print_role(await platform.security().revoke(role_name, entity, action))


@role.command("grant-field")
@click.argument("role_name", metavar="ROLE")
@click.argument("entity")
@click.argument("field_name", metavar="FIELD")
@click.argument("access", type=click.Choice(["read", "update"]))
@run
async def role_grant_field(role_name: str, entity: str, field_name: str, access: str) -> None:
    """Let ROLE read (or read and update) the sensitive FIELD of ENTITY."""
    async with open_platform() as platform:
        _print_role(await platform.security().grant_field(role_name, entity, field_name, access))


@role.command("revoke-field")
@click.argument("role_name", metavar="ROLE")
@click.argument("entity")
@click.argument("field_name", metavar="FIELD")
@run
async def role_revoke_field(role_name: str, entity: str, field_name: str) -> None:
    """Remove ROLE's grant for the sensitive FIELD of ENTITY."""
    async with open_platform() as platform:
        _print_role(await platform.security().revoke_field(role_name, entity, field_name))


@user.command("grant-role")
@click.argument("user_name", metavar="USER")
@click.argument("role_name", metavar="ROLE")
@run
async def user_grant_role(user_name: str, role_name: str) -> None:
    """Give USER the role ROLE."""
    async with open_platform() as platform:
        roles = await platform.security().grant_role(user_name, role_name)
    click.echo(f"{user_name}: roles {', '.join(roles) or '(none)'}")


@user.command("revoke-role")
@click.argument("user_name", metavar="USER")
@click.argument("role_name", metavar="ROLE")
@run
async def user_revoke_role(user_name: str, role_name: str) -> None:
    """Take the role ROLE from USER."""
    async with open_platform() as platform:
        roles = await platform.security().revoke_role(user_name, role_name)
    click.echo(f"{user_name}: roles {', '.join(roles) or '(none)'}")


@main.group()
def team() -> None:
    """Teams (nested: a team with sub-teams is a business unit) and their members."""


def _print_team(t: dict[str, Any]) -> None:
    parent = f" (in {t['parent']})" if t["parent"] else ""
    click.echo(f"{t['name']}{parent}: {', '.join(t['members']) or 'no members'}")


@team.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@run
async def team_list(as_json: bool) -> None:
    """List teams with their parent team and members."""
    async with open_platform() as platform:
        teams = await platform.security().list_teams()
    if as_json:
        click.echo(json_dumps(teams))
        return
    for t in teams:
        _print_team(t)


@team.command("create")
@click.argument("name")
@click.option("--parent", default=None, help="The team (business unit) this one belongs to.")
@run
async def team_create(name: str, parent: str | None) -> None:
    """Create team NAME."""
    async with open_platform() as platform:
        _print_team(await platform.security().create_team(name, parent))


@team.command("move")
@click.argument("name")
@click.option("--parent", default=None, help="The new parent team (omit: top level).")
@run
async def team_move(name: str, parent: str | None) -> None:
    """Move team NAME below another team (cycles are refused)."""
    async with open_platform() as platform:
        _print_team(await platform.security().set_parent(name, parent))


@team.command("delete")
@click.argument("name")
@run
async def team_delete(name: str) -> None:
    """Delete team NAME (it must have no sub-teams)."""
    async with open_platform() as platform:
        await platform.security().delete_team(name)
    click.echo(f"Deleted team {name}")


@team.command("add")
@click.argument("team_name", metavar="TEAM")
@click.argument("user_name", metavar="USER")
@run
async def team_add(team_name: str, user_name: str) -> None:
    """Add USER to TEAM."""
    async with open_platform() as platform:
        _print_team(await platform.security().add_member(team_name, user_name))


@team.command("remove")
@click.argument("team_name", metavar="TEAM")
@click.argument("user_name", metavar="USER")
@run
async def team_remove(team_name: str, user_name: str) -> None:
    """Remove USER from TEAM."""
    async with open_platform() as platform:
        _print_team(await platform.security().remove_member(team_name, user_name))


def _one_grantee(user_name: str | None, team_name: str | None) -> None:
    if (user_name is None) == (team_name is None):
        raise XrmError("Name exactly one of --user or --team")


@main.command("share")
@click.argument("entity")
@click.argument("record_id")
@click.option("--user", "user_name", help="Share with this user.")
@click.option("--team", "team_name", help="Share with this team (its direct members).")
@click.option("--write", is_flag=True, help="Read and write (update); default: read only.")
@run
async def share_command(entity: str, record_id: str, user_name: str | None, team_name: str | None, write: bool) -> None:
    """Share one record of ENTITY with a user or a team."""
    _one_grantee(user_name, team_name)
    async with open_platform() as platform:
        shared = await platform.security().share(entity, record_id, user=user_name, team=team_name, write=write)
    click.echo(f"Shared {entity} {record_id} with {'user ' + user_name if user_name else 'team ' + str(team_name)} ({shared['access']})")


@main.command("unshare")
@click.argument("entity")
@click.argument("record_id")
@click.option("--user", "user_name", help="The user the record is shared with.")
@click.option("--team", "team_name", help="The team the record is shared with.")
@run
async def unshare_command(entity: str, record_id: str, user_name: str | None, team_name: str | None) -> None:
    """Revoke a share of one record of ENTITY."""
    _one_grantee(user_name, team_name)
    async with open_platform() as platform:
        await platform.security().unshare(entity, record_id, user=user_name, team=team_name)
    click.echo(f"Revoked the share of {entity} {record_id}")


@main.command("assign")
@click.argument("entity")
@click.argument("record_id")
@click.option("--user", "user_name", help="The new owner: this user.")
@click.option("--team", "team_name", help="The new owner: this team.")
@run
async def assign_command(entity: str, record_id: str, user_name: str | None, team_name: str | None) -> None:
    """Give one record of ENTITY a new owner (a user or a team)."""
    _one_grantee(user_name, team_name)
    async with open_platform() as platform:
        await platform.security().assign(entity, record_id, user=user_name, team=team_name)
    click.echo(f"{entity} {record_id} is now owned by {'user ' + user_name if user_name else 'team ' + str(team_name)}")


@main.command("explain")
@click.option("--user", "user_name", required=True, help="The user asking.")
@click.argument("entity")
@click.argument("record_id")
@click.option("--action", default="read", show_default=True,
              type=click.Choice(["create", "read", "update", "delete", "export", "assign", "share"]))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@run
async def explain_command(user_name: str, entity: str, record_id: str, action: str, as_json: bool) -> None:
    """Why may (or may not) USER do ACTION on a record? Names the role, scope, team or share."""
    async with open_platform() as platform:
        explanation = await platform.security().explain(user_name, entity, record_id, action)
    click.echo(json_dumps(explanation.as_dict()) if as_json else explanation.render())


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

    ENTITY may also be what a plugin imports: `_connections` or
    `<entity>.<link>` (docs/relationships.md); those files are imported all
    or nothing.
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


# -- audit trail (xrm.audit; docs/audit.md) -------------------------------------
@main.group()
def audit() -> None:
    """Read the audit trail: record history, search, export."""


def _audit_line(entry: Any) -> str:
    where = f"{entry.entity} {entry.record_id}" if entry.record_id else (entry.entity or "")
    line = f"{entry.at:%Y-%m-%d %H:%M:%S%z}  #{entry.id:<6} {entry.principal_name:<16} {entry.action:<18} {where}"
    for name, change in (entry.changes or {}).items():
        line += f"\n      {name}: {json_dumps(change['old'])} -> {json_dumps(change['new'])}"
    if entry.details:
        line += f"\n      {json_dumps(entry.details)[:300]}"
    return line


@audit.command("show")
@click.argument("entity")
@click.argument("record_id")
@click.option("--json", "as_json", is_flag=True, help="Print JSON Lines.")
@run
async def audit_show(entity: str, record_id: str, as_json: bool) -> None:
    """The history of one record, oldest first: who changed which field from what to what."""
    from .records.principal import SYSTEM_PRINCIPAL
    from .records.service import RecordService

    async with open_platform() as platform:
        entries = await RecordService(platform.db, platform.registry, entity, SYSTEM_PRINCIPAL).history(record_id)
    for entry in entries:
        click.echo(json_dumps(entry.as_dict()) if as_json else _audit_line(entry))


def _search_options(function: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed([
        click.option("--entity", help="Only this entity."),
        click.option("--record", "record_id", help="Only this record id."),
        click.option("--user", help="Only this user's entries."),
        click.option("--action", help="e.g. record.updated, schema.changed, auth.login_failed, export."),
        click.option("--field", help="Only entries that changed this field."),
        click.option("--since", help="From this date-time (with offset; a date means its midnight UTC)."),
        click.option("--until", help="Before this date-time."),
    ]):
        function = option(function)
    return function


def _search_arguments(entity: str | None, record_id: str | None, user: str | None, action: str | None,
                      field: str | None, since: str | None, until: str | None) -> dict[str, Any]:
    import datetime as dt
    import uuid

    from .schema.field_types import parse_aware_datetime

    def moment(option: str, text: str | None) -> dt.datetime | None:
        if text is None:
            return None
        parsed = parse_aware_datetime(text if "T" in text or " " in text else text + "T00:00:00Z")
        if parsed is None:
            raise XrmError(f"--{option} needs a date or a date-time with offset, e.g. 2024-12-31 or 2024-12-31T08:00:00+01:00")
        return parsed

    try:
        key = uuid.UUID(record_id) if record_id else None
    except ValueError:
        raise XrmError(f"--record needs a record id (uuid), not {record_id!r}") from None
    return {"entity": entity, "record_id": key, "user": user, "action": action, "field": field,
            "since": moment("since", since), "until": moment("until", until)}


@audit.command("search")
@_search_options
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 1000))
@click.option("--json", "as_json", is_flag=True, help="Print JSON Lines.")
@run
async def audit_search(limit: int, as_json: bool, **filters: Any) -> None:
    """Entries matching every filter, newest first."""
    from .audit import AuditLog

    async with open_platform() as platform:
        entries = await AuditLog(platform.db).search(**_search_arguments(**filters), limit=limit)
    for entry in entries:
        click.echo(json_dumps(entry.as_dict()) if as_json else _audit_line(entry))


@audit.command("export")
@_search_options
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), help="Write to this file (default: standard output).")
@run
async def audit_export(output: str | None, **filters: Any) -> None:
    """All matching entries as JSON Lines (newest first), page by page."""
    from .audit import AuditLog

    arguments = _search_arguments(**filters)
    out = open(output, "w", encoding="utf-8") if output else sys.stdout  # noqa: SIM115 - closed below
    count = 0
    try:
        async with open_platform() as platform:
            log, before = AuditLog(platform.db), None
            while True:
                entries = await log.search(**arguments, before_id=before, limit=1000)
                for entry in entries:
                    out.write(json_dumps(entry.as_dict()) + "\n")
                count += len(entries)
                if len(entries) < 1000:
                    break
                before = entries[-1].id
    finally:
        if output:
            out.close()
    if output:
        click.echo(f"Exported {count} audit entries to {output}", err=True)


@audit.command("archive")
@click.option("--to", "directory", default="audit-archive", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the compressed archive files.")
@click.option("--dry-run", is_flag=True, help="Only count what is due.")
@run
async def audit_archive(directory: str, dry_run: bool) -> None:
    """Move entries older than their entity's audit retention (x-xrm audit_retention) to .jsonl.gz files."""
    from pathlib import Path

    from .privacy.audit_retention import archive_expired_audit
    from .records.principal import SYSTEM_PRINCIPAL

    async with open_platform() as platform:
        reports = await archive_expired_audit(platform.db, SYSTEM_PRINCIPAL, Path(directory), dry_run=dry_run)
    if not reports:
        click.echo("No entity has an audit retention (x-xrm audit_retention).")
    for r in reports:
        verb = "would archive" if dry_run else "archived"
        where = f" -> {r['file']}" if r["file"] else ""
        click.echo(f"{r['entity']}: keep {r['days']} days; {verb} {r['entries']} entries older than {r['before']:%Y-%m-%d %H:%M}{where}")


# -- data protection (xrm.privacy; docs/privacy.md) ----------------------------
@main.group()
def privacy() -> None:
    """Data-subject access and erasure, retention rules (GDPR)."""


def _subject_options(function: Callable[..., Any]) -> Callable[..., Any]:
    for option in reversed([
        click.option("--email", help="The person's e-mail address (matched in every e-mail field marked personal)."),
        click.option("--phone", help="The person's phone number (digits compared, formatting ignored)."),
        click.option("--record", "record", metavar="ENTITY:ID", help="One of the person's records, e.g. contact:6f1c...."),
    ]):
        function = option(function)
    return function


def _subject(email: str | None, phone: str | None, record: str | None) -> Any:
    from .privacy.service import SubjectQuery

    entity, _, record_id = (record or "").partition(":")
    if record and not record_id:
        raise XrmError(f"--record needs ENTITY:ID, e.g. contact:6f1c..., not {record!r}")
    return SubjectQuery(email=email, phone=phone, entity=entity or None, record_id=record_id or None)


@privacy.command("access")
@_subject_options
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True),
              help="Write here; a name ending in .zip gives one CSV per entity plus the JSON (default: JSON to standard output).")
@run
async def privacy_access(email: str | None, phone: str | None, record: str | None, output: str | None) -> None:
    """Everything stored about one person (GDPR Art. 15): their records, history and related records."""
    from .privacy.bundle import write_zip
    from .privacy.service import PrivacyService
    from .records.principal import SYSTEM_PRINCIPAL

    async with open_platform() as platform:
        bundle = await PrivacyService(platform.db, platform.registry, SYSTEM_PRINCIPAL).access(_subject(email, phone, record))
    if output and output.endswith(".zip"):
        write_zip(bundle, output)
    elif output:
        with open(output, "w", encoding="utf-8") as out:
            out.write(json_dumps(bundle) + "\n")
    else:
        click.echo(json_dumps(bundle))
    if output:
        click.echo(f"{len(bundle['subject_records'])} records of the person and {len(bundle['related_records'])} related records "
                   f"written to {output}", err=True)


@privacy.command("erase")
@_subject_options
@click.option("--dry-run", is_flag=True, help="Show what would be erased; change nothing.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@run
async def privacy_erase(email: str | None, phone: str | None, record: str | None, dry_run: bool, yes: bool) -> None:
    """Erase one person (GDPR Art. 17): anonymise their personal fields everywhere, redact the old values."""
    from .privacy.service import PrivacyService
    from .records.principal import SYSTEM_PRINCIPAL

    query = _subject(email, phone, record)
    async with open_platform() as platform:
        service = PrivacyService(platform.db, platform.registry, SYSTEM_PRINCIPAL)
        report = await service.erase(query, dry_run=True)
        _print_erasure(report)
        if dry_run or not report["records"]:
            return
        if not yes and not click.confirm("Erase now? This cannot be undone", default=False):
            click.echo("Nothing erased.")
            return
        report = await service.erase(query)
    click.echo(f"Erased {len(report['records'])} records.")


def _print_erasure(report: dict[str, Any]) -> None:
    if not report["records"]:
        click.echo("No record of this person was found; nothing to erase.")
        return
    for r in report["records"]:
        click.echo(f"{r['entity']} {r['id']}: {', '.join(r['fields'])}")
    click.echo(f"audit entries to redact: {report['audit_entries_redacted']}, outbox events: {report['outbox_events_redacted']}, "
               f"archived values: {report['archived_values_redacted']}, plugins' rows: {report['plugin_rows_redacted']}, "
               f"entries in audit archive files: {report.get('archive_file_entries_redacted', 0)}; "
               f"related records kept: {report['related_records_kept']}")
    for path in report.get("archive_files_missing") or []:
        click.echo(f"warning: audit archive file {path} is no longer there; redact its copy by hand", err=True)


@privacy.command("retention")
@click.option("--entity", help="Only this entity.")
@click.option("--dry-run", is_flag=True, help="Show what would be anonymised or deleted; change nothing.")
@run
async def privacy_retention(entity: str | None, dry_run: bool) -> None:
    """Apply the retention rules (x-xrm retention): anonymise or delete records untouched for N days."""
    from .privacy.service import PrivacyService
    from .records.principal import SYSTEM_PRINCIPAL

    async with open_platform() as platform:
        reports = await PrivacyService(platform.db, platform.registry, SYSTEM_PRINCIPAL).retention(entity, dry_run=dry_run)
    if not reports:
        click.echo("No entity has a retention rule (x-xrm retention).")
    for r in reports:
        verb = ("would " if dry_run else "") + ("anonymise" if r["action"] == "anonymise" else "delete")
        kept = f", {r['kept_referenced']} kept (still referenced)" if r["kept_referenced"] else ""
        click.echo(f"{r['entity']}: {r['action']} {r['days']} days after {r['after']}: {verb} {r['due']}{kept}")
        for key in r["sample"]:
            click.echo(f"    {key}")


if __name__ == "__main__":  # pragma: no cover
    main()
