"""Roles, grants, teams, shares and ownership in the database; principals; the explainer.

SecurityService is what the CLI (`xrm role|team|share|explain ...`) and the
admin API call. Every change runs in one transaction with an audit entry and
a NOTIFY xrm_security (other processes reload their RolePolicy); the
service reloads the policy it was given itself after the commit.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from ..db.database import Database
from ..events import emit
from ..errors import NotFound, PermissionDenied, Problem, ValidationFailed, XrmError
from ..records.principal import SYSTEM_PRINCIPAL, Principal
from ..registry import Registry
from .policy import ACTIONS, FIELD_ACCESS, SCOPES, SECURITY_CHANNEL, RolePolicy, effective_grants

__all__ = ["Explanation", "SecurityService", "resolve_principal"]

ROLE_NAME = re.compile(r"^[a-z][a-z0-9_.-]{0,62}$")
TEAM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,62}$")
USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,62}$")
ENTITY_KEY = re.compile(r"^([a-z][a-z0-9_]{0,62}|\*)$")
FIELD_KEY = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
SHARE_ACTIONS = ("read", "update")
"""Actions a share can widen: a read share gives read, a write share read and update."""

_RESOLVE = """
WITH RECURSIVE mine AS (
    SELECT team_id FROM xrm_sys.team_member WHERE user_id = $1
), tree AS (
    SELECT id FROM xrm_sys.team WHERE id IN (SELECT team_id FROM mine)
    UNION
    SELECT t.id FROM xrm_sys.team t JOIN tree ON t.parent_id = tree.id
)
SELECT ARRAY(SELECT team_id FROM mine) AS teams,
       ARRAY(SELECT team_id FROM mine
             UNION SELECT user_id FROM xrm_sys.team_member WHERE team_id IN (SELECT team_id FROM mine)) AS team_owners,
       ARRAY(SELECT id FROM tree
             UNION SELECT user_id FROM xrm_sys.team_member WHERE team_id IN (SELECT id FROM tree)) AS tree_owners
"""


async def resolve_principal(connection: asyncpg.Connection, user_id: uuid.UUID, name: str, roles: Iterable[str]) -> Principal:
    """A user's principal with teams and the owner sets of scopes team and team_tree (one query)."""
    row = await connection.fetchrow(_RESOLVE, user_id)
    return Principal(
        user_id, name, frozenset(roles),
        teams=frozenset(row["teams"]), team_owners=frozenset(row["team_owners"]), tree_owners=frozenset(row["tree_owners"]),
    )


def _problem(what: str, pointer_: str, message: str) -> ValidationFailed:
    return ValidationFailed(what, [Problem(pointer_, message)])


def _check(pattern: re.Pattern[str], value: Any, what: str, pointer_: str, hint: str) -> str:
    if not isinstance(value, str) or not pattern.match(value) or "\x00" in value:
        raise _problem(what, pointer_, hint)
    return value


def _uuid(value: Any, what: str) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        raise NotFound(f"No {what} with id {value!r}") from None


def _text(value: Any) -> str:
    """A value usable as a text parameter ("" for non-text and NUL-holding input: it matches nothing)."""
    return value if isinstance(value, str) and "\x00" not in value else ""


@dataclass
class Explanation:
    """Why (or why not) a user may do an action on a record."""

    user: str
    entity: str
    record_id: uuid.UUID
    action: str
    allowed: bool
    reasons: list[str] = field(default_factory=list)
    """What grants it: a role and scope with the ownership that matches, or a share."""
    notes: list[str] = field(default_factory=list)
    """What does not grant it (a role whose scope misses the record, a share that does not cover the action)."""

    def as_dict(self) -> dict[str, Any]:
        return {"user": self.user, "entity": self.entity, "record_id": self.record_id, "action": self.action,
                "allowed": self.allowed, "reasons": self.reasons, "notes": self.notes}

    def render(self) -> str:
        verdict = "may" if self.allowed else "may NOT"
        lines = [f"{self.user} {verdict} {self.action} {self.entity} {self.record_id}"]
        lines += [f"  because {r}" for r in self.reasons] or ["  nothing grants it"]
        lines += [f"  (not: {n})" for n in self.notes]
        return "\n".join(lines)


class SecurityService:
    """Roles, grants, teams, memberships, shares, record owners; principals and explanations."""

    def __init__(self, db: Database, policy: RolePolicy | None = None, registry: Registry | None = None,
                 actor: Principal = SYSTEM_PRINCIPAL) -> None:
        self.db = db
        self.policy = policy
        self.registry = registry
        self.actor = actor

    # -- helpers -------------------------------------------------------------
    async def _changed(
        self, connection: asyncpg.Connection, action: str, details: dict[str, Any], *,
        entity: str | None = None, record_id: uuid.UUID | None = None, changes: dict[str, Any] | None = None,
    ) -> None:
        """Audit entry + NOTIFY, inside the change's transaction.

        A change to one record (share, unshare, assign) names its entity and
        record id, so it is part of the record's history and found by a search
        for the record; an owner change records `changes` like a field change.
        """
        from ..audit import AuditLog

        await AuditLog.write(connection, self.actor, action, entity=entity, record_id=record_id, changes=changes, details=details)
        await connection.execute(f"NOTIFY {SECURITY_CHANNEL}, 'changed'")

    async def _reload(self) -> None:
        if self.policy is not None:
            await self.policy.load(self.db)

    async def _user_id(self, connection: asyncpg.Connection, name: Any) -> uuid.UUID:
        if isinstance(name, str) and USER_NAME.match(name):
            user_id = await connection.fetchval("SELECT id FROM xrm_sys.app_user WHERE name = $1", name)
            if user_id is not None:
                return user_id  # type: ignore[no-any-return]
        raise NotFound(f"No user named {name!r}")

    async def _team_id(self, connection: asyncpg.Connection, name: Any) -> uuid.UUID:
        if isinstance(name, str) and TEAM_NAME.match(name):
            team_id = await connection.fetchval("SELECT id FROM xrm_sys.team WHERE name = $1", name)
            if team_id is not None:
                return team_id  # type: ignore[no-any-return]
        raise NotFound(f"No team named {name!r}")

    async def _role(self, connection: asyncpg.Connection, name: Any) -> asyncpg.Record:
        if isinstance(name, str) and ROLE_NAME.match(name):
            row = await connection.fetchrow("SELECT name, built_in FROM xrm_sys.role WHERE name = $1", name)
            if row is not None:
                return row
        raise NotFound(f"No role named {name!r}")

    async def check_roles(self, roles: Iterable[str]) -> None:
        """Every name is an existing role (app_user.roles is text[], so the code checks)."""
        wanted = list(dict.fromkeys(roles))
        if not wanted:
            return
        async with self.db.connection() as connection:
            known = {r["name"] for r in await connection.fetch("SELECT name FROM xrm_sys.role WHERE name = ANY($1::text[])",
                                                               [r for r in wanted if isinstance(r, str) and "\x00" not in r])}
        unknown = [r for r in wanted if r not in known]
        if unknown:
            raise _problem("user", "/roles", f"unknown role(s): {', '.join(map(repr, unknown))} (see `xrm role list`)")

    # -- principals ----------------------------------------------------------
    async def principal_for_user(self, name: str) -> Principal:
        async with self.db.connection() as connection:
            row = await connection.fetchrow("SELECT id, name, roles FROM xrm_sys.app_user WHERE name = $1",
                                            name if isinstance(name, str) and "\x00" not in name else "")
            if row is None:
                raise NotFound(f"No user named {name!r}")
            return await resolve_principal(connection, row["id"], row["name"], row["roles"])

    # -- roles and grants ----------------------------------------------------
    async def list_roles(self) -> list[dict[str, Any]]:
        async with self.db.connection() as connection:
            roles = await connection.fetch("SELECT name, description, built_in FROM xrm_sys.role ORDER BY name")
            grants = await connection.fetch("SELECT role, entity, action, scope FROM xrm_sys.role_grant ORDER BY role, entity, action")
            holders = await connection.fetch("SELECT r AS role, name FROM xrm_sys.app_user, unnest(roles) AS r ORDER BY name")
            field_grants = await connection.fetch("SELECT role, entity, field, access FROM xrm_sys.role_field_grant ORDER BY role, entity, field")
        order = {a: i for i, a in enumerate(ACTIONS)}
        result = []
        for role in roles:
            mine = sorted((g for g in grants if g["role"] == role["name"]), key=lambda g: (g["entity"] != "*", g["entity"], order[g["action"]]))
            result.append({
                "name": role["name"], "description": role["description"], "built_in": role["built_in"],
                "grants": [{"entity": g["entity"], "action": g["action"], "scope": g["scope"]} for g in mine],
                "field_grants": [{"entity": g["entity"], "field": g["field"], "access": g["access"]}
                                 for g in field_grants if g["role"] == role["name"]],
                "users": [h["name"] for h in holders if h["role"] == role["name"]],
            })
        return result

    async def get_role(self, name: str) -> dict[str, Any]:
        for role in await self.list_roles():
            if role["name"] == name:
                return role
        raise NotFound(f"No role named {name!r}")

    async def create_role(self, name: Any, description: Any = "") -> dict[str, Any]:
        _check(ROLE_NAME, name, "role", "/name", "use lower-case letters, digits and . _ - (at most 63 characters, starting with a letter)")
        if not isinstance(description, str) or "\x00" in description or len(description) > 1000:
            raise _problem("role", "/description", "must be text (at most 1000 characters, no NUL)")
        async with self.db.transaction() as tx:
            try:
                await tx.connection.execute("INSERT INTO xrm_sys.role (name, description) VALUES ($1, $2)", name, description)
            except asyncpg.UniqueViolationError:
                raise _problem("role", "/name", f"a role named {name!r} exists already") from None
            await self._changed(tx.connection, "security.role_created", {"role": name, "description": description})
        await self._reload()
        return await self.get_role(name)

    async def delete_role(self, name: Any) -> None:
        async with self.db.transaction() as tx:
            role = await self._role(tx.connection, name)
            if role["built_in"]:
                raise PermissionDenied(f"The built-in role {name!r} cannot be deleted")
            holders = await tx.connection.fetch("SELECT name FROM xrm_sys.app_user WHERE $1 = ANY(roles) ORDER BY name", name)
            if holders:
                raise XrmError(f"Role {name!r} is held by {', '.join(h['name'] for h in holders)}; revoke it from them first",
                               [Problem("/name", "is still held by users")])
            await tx.connection.execute("DELETE FROM xrm_sys.role WHERE name = $1", name)
            await self._changed(tx.connection, "security.role_deleted", {"role": name})
        await self._reload()

    async def grant(self, role: Any, entity: Any, action: Any, scope: Any) -> dict[str, Any]:
        """Set the role's scope for (entity, action); entity '*' means every entity."""
        problems = []
        if not isinstance(entity, str) or not ENTITY_KEY.match(entity):
            problems.append(Problem("/entity", "must be an entity name or *"))
        if action not in ACTIONS:
            problems.append(Problem("/action", f"must be one of {', '.join(ACTIONS)}"))
        if scope not in SCOPES:
            problems.append(Problem("/scope", f"must be one of {', '.join(SCOPES)}"))
        if problems:
            raise ValidationFailed("grant", problems)
        return await self._change_grants(
            role,
            "INSERT INTO xrm_sys.role_grant (role, entity, action, scope) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (role, entity, action) DO UPDATE SET scope = EXCLUDED.scope",
            (entity, action, scope),
            "security.grant", {"entity": entity, "action": action, "scope": scope},
        )

    async def revoke(self, role: Any, entity: Any, action: Any) -> dict[str, Any]:
        return await self._change_grants(
            role,
            "DELETE FROM xrm_sys.role_grant WHERE role = $1 AND entity = $2 AND action = $3",
            (_text(entity), action if action in ACTIONS else ""),
            "security.revoke", {"entity": entity, "action": action},
            missing=f"Role {role!r} has no grant for {action} on {entity}",
        )

    async def grant_field(self, role: Any, entity: Any, field_name: Any, access: Any) -> dict[str, Any]:
        """Let the role read, or read and update, a sensitive field (replaces its previous field grant)."""
        problems = []
        if not isinstance(entity, str) or not FIELD_KEY.match(entity):
            problems.append(Problem("/entity", "must be an entity name"))
        elif self.registry is not None and entity not in self.registry:
            problems.append(Problem("/entity", f"there is no entity {entity!r}"))
        if not isinstance(field_name, str) or not FIELD_KEY.match(field_name):
            problems.append(Problem("/field", "must be a field name"))
        elif self.registry is not None and not problems and field_name not in self.registry.get(entity).fields:
            problems.append(Problem("/field", f"{entity} has no field {field_name!r}"))
        if access not in FIELD_ACCESS:
            problems.append(Problem("/access", f"must be one of {', '.join(FIELD_ACCESS)}"))
        if problems:
            raise ValidationFailed("field grant", problems)
        return await self._change_grants(
            role,
            "INSERT INTO xrm_sys.role_field_grant (role, entity, field, access) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (role, entity, field) DO UPDATE SET access = EXCLUDED.access",
            (entity, field_name, access),
            "security.field_grant", {"entity": entity, "field": field_name, "access": access},
        )

    async def revoke_field(self, role: Any, entity: Any, field_name: Any) -> dict[str, Any]:
        return await self._change_grants(
            role,
            "DELETE FROM xrm_sys.role_field_grant WHERE role = $1 AND entity = $2 AND field = $3",
            (_text(entity), _text(field_name)),
            "security.field_revoke", {"entity": entity, "field": field_name},
            missing=f"Role {role!r} has no grant for field {field_name} of {entity}",
        )

    async def _change_grants(
        self, role: Any, sql: str, arguments: tuple[Any, ...], event: str, details: dict[str, Any], *, missing: str | None = None
    ) -> dict[str, Any]:
        """Run one grant statement for `role` (never the built-in admin), audit it, reload the grants."""
        async with self.db.transaction() as tx:
            row = await self._role(tx.connection, role)
            if row["built_in"] and role == "admin":
                raise PermissionDenied("The built-in admin role always grants everything; its grants cannot change")
            status = await tx.connection.execute(sql, role, *arguments)
            if missing is not None and status.endswith(" 0"):
                raise NotFound(missing)
            await self._changed(tx.connection, event, {"role": role, **details})
        await self._reload()
        return await self.get_role(role)

    async def grant_role(self, user: Any, role: Any) -> list[str]:
        """Give a user a role; returns the user's roles."""
        async with self.db.transaction() as tx:
            user_id = await self._user_id(tx.connection, user)
            await self._role(tx.connection, role)
            roles = await tx.connection.fetchval(
                "UPDATE xrm_sys.app_user SET roles = CASE WHEN $2 = ANY(roles) THEN roles ELSE roles || $2 END "
                "WHERE id = $1 RETURNING roles", user_id, role,
            )
            await self._changed(tx.connection, "security.role_granted", {"user": user, "role": role})
        return list(roles)

    async def revoke_role(self, user: Any, role: Any) -> list[str]:
        async with self.db.transaction() as tx:
            user_id = await self._user_id(tx.connection, user)
            roles = await tx.connection.fetchval("SELECT roles FROM xrm_sys.app_user WHERE id = $1", user_id)
            if role not in roles:
                raise NotFound(f"User {user!r} does not hold the role {role!r}")
            roles = await tx.connection.fetchval(
                "UPDATE xrm_sys.app_user SET roles = array_remove(roles, $2) WHERE id = $1 RETURNING roles", user_id, role,
            )
            await self._changed(tx.connection, "security.role_revoked", {"user": user, "role": role})
        return list(roles)

    # -- teams ---------------------------------------------------------------
    async def list_teams(self) -> list[dict[str, Any]]:
        async with self.db.connection() as connection:
            teams = await connection.fetch(
                "SELECT t.id, t.name, p.name AS parent FROM xrm_sys.team t LEFT JOIN xrm_sys.team p ON p.id = t.parent_id ORDER BY t.name"
            )
            members = await connection.fetch(
                "SELECT m.team_id, u.name FROM xrm_sys.team_member m JOIN xrm_sys.app_user u ON u.id = m.user_id ORDER BY u.name"
            )
        return [
            {"id": t["id"], "name": t["name"], "parent": t["parent"],
             "members": [m["name"] for m in members if m["team_id"] == t["id"]]}
            for t in teams
        ]

    async def get_team(self, name: str) -> dict[str, Any]:
        for team in await self.list_teams():
            if team["name"] == name:
                return team
        raise NotFound(f"No team named {name!r}")

    async def create_team(self, name: Any, parent: Any = None) -> dict[str, Any]:
        _check(TEAM_NAME, name, "team", "/name", "use letters, digits, spaces and . _ @ - (at most 63 characters)")
        async with self.db.transaction() as tx:
            parent_id = None if parent is None else await self._team_id(tx.connection, parent)
            try:
                await tx.connection.execute("INSERT INTO xrm_sys.team (name, parent_id) VALUES ($1, $2)", name, parent_id)
            except asyncpg.UniqueViolationError:
                raise _problem("team", "/name", f"a team named {name!r} exists already") from None
            await self._changed(tx.connection, "security.team_created", {"team": name, "parent": parent})
        return await self.get_team(name)

    async def set_parent(self, name: Any, parent: Any) -> dict[str, Any]:
        """Move a team below another (or to the top with parent None); refuses cycles."""
        async with self.db.transaction() as tx:
            team_id = await self._team_id(tx.connection, name)
            parent_id = None if parent is None else await self._team_id(tx.connection, parent)
            if parent_id is not None:
                await tx.connection.execute("LOCK TABLE xrm_sys.team IN SHARE ROW EXCLUSIVE MODE")
                cycle = await tx.connection.fetchval(
                    "WITH RECURSIVE up AS (SELECT id, parent_id FROM xrm_sys.team WHERE id = $1 "
                    "UNION SELECT t.id, t.parent_id FROM xrm_sys.team t JOIN up ON t.id = up.parent_id) "
                    "SELECT EXISTS (SELECT 1 FROM up WHERE id = $2)", parent_id, team_id,
                )
                if cycle:
                    raise _problem("team", "/parent", f"{parent!r} is {name!r} or one of its sub-teams: that would make a cycle")
            await tx.connection.execute("UPDATE xrm_sys.team SET parent_id = $2 WHERE id = $1", team_id, parent_id)
            await self._changed(tx.connection, "security.team_moved", {"team": name, "parent": parent})
        return await self.get_team(name)

    async def delete_team(self, name: Any) -> None:
        """Delete a team without sub-teams (its memberships and shares go with it)."""
        async with self.db.transaction() as tx:
            team_id = await self._team_id(tx.connection, name)
            children = await tx.connection.fetch("SELECT name FROM xrm_sys.team WHERE parent_id = $1 ORDER BY name", team_id)
            if children:
                raise XrmError(f"Team {name!r} has sub-teams ({', '.join(c['name'] for c in children)}); move or delete them first",
                               [Problem("/name", "has sub-teams")])
            # Records a deleted team owned would belong to nobody: only "all" scopes would reach them.
            owned = []
            for entity in self.registry or ():
                count = await tx.connection.fetchval(f"SELECT count(*) FROM {entity.table} WHERE owner_id = $1", team_id)
                if count:
                    owned.append(f"{count} {entity.name}")
            if owned:
                raise XrmError(f"Team {name!r} still owns records ({', '.join(owned)}); give them another owner first (xrm assign)",
                               [Problem("/name", f"owns {', '.join(owned)} records")])
            await tx.connection.execute("DELETE FROM xrm_sys.team WHERE id = $1", team_id)
            await self._changed(tx.connection, "security.team_deleted", {"team": name})

    async def add_member(self, team: Any, user: Any) -> dict[str, Any]:
        async with self.db.transaction() as tx:
            team_id = await self._team_id(tx.connection, team)
            user_id = await self._user_id(tx.connection, user)
            await tx.connection.execute(
                "INSERT INTO xrm_sys.team_member (team_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING", team_id, user_id
            )
            await self._changed(tx.connection, "security.member_added", {"team": team, "user": user})
        return await self.get_team(team)

    async def remove_member(self, team: Any, user: Any) -> dict[str, Any]:
        async with self.db.transaction() as tx:
            team_id = await self._team_id(tx.connection, team)
            user_id = await self._user_id(tx.connection, user)
            status = await tx.connection.execute("DELETE FROM xrm_sys.team_member WHERE team_id = $1 AND user_id = $2", team_id, user_id)
            if status.endswith(" 0"):
                raise NotFound(f"{user!r} is not a member of team {team!r}")
            await self._changed(tx.connection, "security.member_removed", {"team": team, "user": user})
        return await self.get_team(team)

    # -- records: shares and owners -----------------------------------------
    def _table(self, entity: Any) -> str:
        if self.registry is None:
            raise RuntimeError("SecurityService needs the registry for record operations")
        return self.registry.get(entity).table if isinstance(entity, str) else self.registry.get(str(entity)).table

    async def _check_record(self, connection: asyncpg.Connection, entity: str, record_id: uuid.UUID, action: str) -> None:
        """404 unless the actor can see the record; 403 unless it may do `action` on it."""
        table = self._table(entity)
        policy = self.policy or RolePolicy()
        if self.actor.is_system:
            found = await connection.fetchval(f"SELECT 1 FROM {table} WHERE id = $1 AND deleted_at IS NULL", record_id)
            if found is None:
                raise NotFound(f"No {entity} record with id {record_id}")
            return
        read_params: list[Any] = [record_id]
        read = policy.row_filter(self.actor, entity, "read", read_params) if policy.scope(self.actor, entity, "read") != "none" else "FALSE"
        if await connection.fetchval(f"SELECT 1 FROM {table} WHERE id = $1 AND deleted_at IS NULL AND ({read})", *read_params) is None:
            raise NotFound(f"No {entity} record with id {record_id}")
        policy.authorize(self.actor, entity, action)  # type: ignore[arg-type]
        params: list[Any] = [record_id]
        predicate = policy.row_filter(self.actor, entity, action, params)  # type: ignore[arg-type]
        if await connection.fetchval(f"SELECT 1 FROM {table} WHERE id = $1 AND ({predicate})", *params) is None:
            raise PermissionDenied(f"You may not {action} this {entity} record")

    async def _grantee(self, connection: asyncpg.Connection, user: Any, team: Any) -> tuple[uuid.UUID | None, uuid.UUID | None]:
        if (user is None) == (team is None):
            raise ValidationFailed("share", [Problem("", "name exactly one of user or team")])
        if user is not None:
            return await self._user_id(connection, user), None
        return None, await self._team_id(connection, team)

    async def share(self, entity: str, record_id: Any, *, user: Any = None, team: Any = None, write: bool = False) -> dict[str, Any]:
        """Share one record with a user or team (read, or with write also update); replaces an active share."""
        self._table(entity)
        key = _uuid(record_id, f"{entity} record")
        async with self.db.transaction() as tx:
            await self._check_record(tx.connection, entity, key, "share")
            if write:
                await self._check_record(tx.connection, entity, key, "update")
            user_id, team_id = await self._grantee(tx.connection, user, team)
            await tx.connection.execute(
                "UPDATE xrm_sys.record_share SET revoked_at = now(), revoked_by = $4 WHERE entity = $1 AND record_id = $2 "
                "AND coalesce(user_id, team_id) = $3 AND revoked_at IS NULL",
                entity, key, user_id or team_id, self.actor.id,
            )
            row = await tx.connection.fetchrow(
                "INSERT INTO xrm_sys.record_share (entity, record_id, user_id, team_id, access, granted_by) "
                "VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                entity, key, user_id, team_id, "write" if write else "read", self.actor.id,
            )
            await self._changed(tx.connection, "security.shared", {
                "user": user, "team": team, "access": "write" if write else "read"}, entity=entity, record_id=key)
        return next(s for s in await self.list_shares(entity, key) if s["id"] == row["id"])

    async def unshare(self, entity: str, record_id: Any, *, user: Any = None, team: Any = None) -> None:
        self._table(entity)
        key = _uuid(record_id, f"{entity} record")
        async with self.db.transaction() as tx:
            await self._check_record(tx.connection, entity, key, "share")
            user_id, team_id = await self._grantee(tx.connection, user, team)
            status = await tx.connection.execute(
                "UPDATE xrm_sys.record_share SET revoked_at = now(), revoked_by = $4 WHERE entity = $1 AND record_id = $2 "
                "AND coalesce(user_id, team_id) = $3 AND revoked_at IS NULL",
                entity, key, user_id or team_id, self.actor.id,
            )
            if status.endswith(" 0"):
                raise NotFound(f"The record is not shared with {'user ' + repr(user) if user is not None else 'team ' + repr(team)}")
            await self._changed(tx.connection, "security.unshared", {"user": user, "team": team}, entity=entity, record_id=key)

    async def list_shares(self, entity: str | None = None, record_id: Any = None, *, include_revoked: bool = False) -> list[dict[str, Any]]:
        key = None if record_id is None else _uuid(record_id, "record")
        async with self.db.connection() as connection:
            rows = await connection.fetch(
                "SELECT s.id, s.entity, s.record_id, u.name AS user, t.name AS team, s.access, g.name AS granted_by, "
                "s.granted_at, s.revoked_at FROM xrm_sys.record_share s "
                "LEFT JOIN xrm_sys.app_user u ON u.id = s.user_id LEFT JOIN xrm_sys.team t ON t.id = s.team_id "
                "LEFT JOIN xrm_sys.app_user g ON g.id = s.granted_by "
                "WHERE ($1::text IS NULL OR s.entity = $1) AND ($2::uuid IS NULL OR s.record_id = $2) AND ($3 OR s.revoked_at IS NULL) "
                "ORDER BY s.granted_at, s.id",
                entity if entity is None or "\x00" not in entity else "", key, include_revoked,
            )
        return [dict(r) for r in rows]

    async def record_shares(self, entity: str, record_id: Any) -> list[dict[str, Any]]:
        """Active shares of one record, for an actor who may share it."""
        key = _uuid(record_id, f"{entity} record")
        async with self.db.connection() as connection:
            await self._check_record(connection, entity, key, "share")
        return await self.list_shares(entity, key)

    async def assign(self, entity: str, record_id: Any, *, user: Any = None, team: Any = None) -> dict[str, Any]:
        """Make a user or team the record's owner (action assign)."""
        table = self._table(entity)
        key = _uuid(record_id, f"{entity} record")
        async with self.db.transaction() as tx:
            await self._check_record(tx.connection, entity, key, "assign")
            user_id, team_id = await self._grantee(tx.connection, user, team)
            owner = user_id or team_id
            previous = await tx.connection.fetchval(f"SELECT owner_id FROM {table} WHERE id = $1 FOR UPDATE", key)
            row = await tx.connection.fetchrow(
                f"UPDATE {table} SET owner_id = $2, version = version + 1, updated_at = now(), updated_by = $3 "
                "WHERE id = $1 RETURNING id, owner_id, version", key, owner, self.actor.id,
            )
            await emit(tx.connection, "record.assigned", {"version": row["version"], "owner_id": str(owner)},
                       entity=entity, record_id=key, principal=self.actor)
            # The owner change in the shape of a field change (xrm.audit.field_changes), even when it stays the same.
            owner_change = {"owner_id": {"old": None if previous is None else str(previous), "new": str(owner)}}
            await self._changed(tx.connection, "security.assigned", {"user": user, "team": team},
                                entity=entity, record_id=key, changes=owner_change)
        return {"id": row["id"], "owner_id": row["owner_id"], "version": row["version"]}

    # -- the explainer -------------------------------------------------------
    async def explain(self, user: str, entity: str, record_id: Any, action: str = "read") -> Explanation:
        """Why may (or may not) `user` do `action` on this record? Names each role, scope, team or share."""
        if action not in ACTIONS:
            raise ValidationFailed("explain", [Problem("/action", f"must be one of {', '.join(ACTIONS)}")])
        table = self._table(entity)
        key = _uuid(record_id, f"{entity} record")
        principal = await self.principal_for_user(user)
        policy = self.policy or await RolePolicy().load(self.db)
        async with self.db.connection() as connection:
            record = await connection.fetchrow(f"SELECT owner_id, deleted_at FROM {table} WHERE id = $1", key)
            if record is None:
                raise NotFound(f"No {entity} record with id {record_id}")
            teams = {r["id"]: (r["name"], r["parent_id"]) for r in await connection.fetch("SELECT id, name, parent_id FROM xrm_sys.team")}
            owner = record["owner_id"]
            owner_user = None if owner is None else await connection.fetchval("SELECT name FROM xrm_sys.app_user WHERE id = $1", owner)
            owner_teams = [] if owner is None else [r["team_id"] for r in await connection.fetch(
                "SELECT team_id FROM xrm_sys.team_member WHERE user_id = $1", owner)]
            shares = await connection.fetch(
                "SELECT s.access, s.granted_at, s.team_id, g.name AS granted_by FROM xrm_sys.record_share s "
                "LEFT JOIN xrm_sys.app_user g ON g.id = s.granted_by WHERE s.entity = $1 AND s.record_id = $2 "
                "AND s.revoked_at IS NULL AND (s.user_id = $3 OR s.team_id = ANY($4::uuid[])) ORDER BY s.granted_at",
                entity, key, principal.id, list(principal.teams),
            )
            allowed = False
            if policy.scope(principal, entity, action) != "none":
                params: list[Any] = [key]
                predicate = policy.row_filter(principal, entity, action, params)  # type: ignore[arg-type]
                allowed = await connection.fetchval(
                    f"SELECT EXISTS (SELECT 1 FROM {table} WHERE id = $1 AND deleted_at IS NULL AND ({predicate}))", *params
                )

        def team_name(team_id: uuid.UUID) -> str:
            return repr(teams[team_id][0]) if team_id in teams else str(team_id)

        if owner is None:
            owned = "has no owner"
        elif owner_user is not None:
            owned = "is owned by you" if owner == principal.id else f"is owned by user {owner_user!r}"
        elif owner in teams:
            owned = f"is owned by team {team_name(owner)}"
        else:
            owned = f"is owned by {owner} (no user or team)"

        def below(team_id: uuid.UUID) -> uuid.UUID | None:
            """The team of the principal at or above team_id (walking up parents)."""
            seen: set[uuid.UUID] = set()
            current: uuid.UUID | None = team_id
            while current is not None and current not in seen:
                if current in principal.teams:
                    return current
                seen.add(current)
                current = teams[current][1] if current in teams else None
            return None

        def match(scope: str) -> str | None:
            """How the record falls within `scope` for this principal, or None."""
            if scope == "all":
                return "which covers every record"
            if owner is None:
                return None
            if owner == principal.id:
                return "and the record is owned by you"
            if scope == "own":
                return None
            if owner in principal.teams:
                return f"and the record is owned by your team {team_name(owner)}"
            for team in owner_teams:
                if team in principal.teams:
                    return f"and the record is owned by {owner_user!r}, a member of your team {team_name(team)}"
            if scope == "team":
                return None
            if owner in teams:
                top = below(owner)
                if top is not None:
                    return f"and the record is owned by team {team_name(owner)}, below your team {team_name(top)}"
            for team in owner_teams:
                top = below(team)
                if top is not None:
                    return (f"and the record is owned by {owner_user!r}, a member of team {team_name(team)}"
                            f"{'' if team == top else f', below your team {team_name(top)}'}")
            return None

        explanation = Explanation(principal.name, entity, key, action, bool(allowed))
        if principal.is_system:
            explanation.reasons.append("the system principal may do everything")
        grants = effective_grants(policy.grants, principal.roles, entity, action)
        held = {role for role, _, _ in grants}
        for role in sorted(principal.roles - held):
            explanation.notes.append(f"role {role!r} grants no {action} on {entity}")
        gate = any(scope != "none" for _, _, scope in grants)
        for role, entity_key, scope in grants:
            grant_text = f"role {role!r} grants {action} on {'every entity' if entity_key == '*' else entity} at scope {scope}"
            if scope == "none":
                explanation.notes.append(grant_text)
                continue
            how = match(scope)
            if how is None:
                explanation.notes.append(f"{grant_text}, but the record {owned}")
            else:
                explanation.reasons.append(f"{grant_text} {how}")
        for share in shares:
            via = "with you" if share["team_id"] is None else f"with your team {team_name(share['team_id'])}"
            text = (f"the record is shared {via} for {share['access']} by {share['granted_by'] or 'the system'!s} "
                    f"on {share['granted_at']:%Y-%m-%d}")
            if action not in SHARE_ACTIONS or (action == "update" and share["access"] != "write"):
                explanation.notes.append(f"{text}, which does not cover {action}")
            elif not gate:
                explanation.notes.append(f"{text}, but no role allows {action} on {entity} at all (a share widens a granted action only)")
            else:
                explanation.reasons.append(text)
        if not gate and not principal.is_system:
            explanation.notes.append(f"none of the roles of {principal.name!r} allows {action} on {entity}: the API answers 403")
        if record["deleted_at"] is not None:
            explanation.notes.append("the record is deleted (only restore applies to it)")
            explanation.allowed = False
        if explanation.allowed != bool(explanation.reasons) and record["deleted_at"] is None:
            # The predicate is the authority; this would be a bug in the explainer.
            explanation.notes.append("the explanation disagrees with the permission predicate; the predicate decides")
        return explanation
