"""RolePolicy: role grants compiled into the SQL predicate RecordService puts in every query.

A role grants, per entity ('*' for every entity) and action, a scope:

    none < own < team < team_tree < all

Within one role a grant for the entity itself overrides its '*' grant; across
the roles a user holds, scopes add up (the widest wins, since each scope
contains the ones before it). `authorize` is the entity-level gate: scope
none for the action is a 403. `row_filter` is the row-level rule:

    own        owner_id = ANY($owners)  (just me)
    team       owner_id = ANY($owners)  (me, my teams, members of my teams)
    team_tree  owner_id = ANY($owners)  (the same over my teams and every team below them)
    all        TRUE

and for read and update, OR the record is shared with me or one of my teams
(update: a write share). The owner sets come resolved with the principal
(xrm.security.model.resolve_principal), so the predicate is one indexed
`owner_id = ANY(...)` OR `id = ANY(ARRAY(<shares>))` (an init plan, then the
primary key): a bitmap OR of two index scans, so the database filters, pages,
counts and aggregates only permitted rows, without scanning the table.
`row_partition` gives the same predicate in its two parts (owners, shares),
so a page can walk the owner index once per owner (RowPartition).

Field-level security: a field marked `"x-xrm": {"sensitive": true}` is read
only by roles with a field grant (xrm_sys.role_field_grant: role, entity,
field, access 'read' or 'update'; update implies read), by the admin role and
by the system principal. `readable_fields` / `writable_fields` answer which;
RecordService drops the others from every result and refuses them in writes,
filters, sorts and field selections.

The grants live in memory (authorize is synchronous); `load` reads them, and
every change made through SecurityService reloads this process's policy and
sends NOTIFY xrm_security so other processes reload theirs.
"""

from __future__ import annotations

from collections.abc import Mapping
from ..db.database import Database
from ..errors import PermissionDenied
from ..records.policy import Action, RowPartition
from ..records.principal import Principal

__all__ = ["ACTIONS", "FIELD_ACCESS", "SCOPES", "SECURITY_CHANNEL", "RolePolicy", "effective_grants"]

FIELD_ACCESS = ("read", "update")
"""Access a field grant gives to a sensitive field: read, or update (which implies read)."""
SCOPES = ("none", "own", "team", "team_tree", "all")
ACTIONS = ("create", "read", "update", "delete", "export", "assign", "share")
SECURITY_CHANNEL = "xrm_security"
_RANK = {scope: rank for rank, scope in enumerate(SCOPES)}

Grants = Mapping[str, Mapping[tuple[str, str], str]]
"""role -> (entity or '*', action) -> scope"""
FieldGrants = Mapping[str, Mapping[tuple[str, str], str]]
"""role -> (entity, field) -> 'read' | 'update'"""


def effective_grants(grants: Grants, roles: frozenset[str], entity: str, action: str) -> list[tuple[str, str, str]]:
    """(role, the grant's entity key, scope) of each held role that has a grant for this entity and action."""
    found = []
    for role in sorted(roles):
        by_key = grants.get(role)
        if not by_key:
            continue
        for key in (entity, "*"):
            scope = by_key.get((key, action))
            if scope is not None:
                found.append((role, key, scope))
                break
    return found


class RolePolicy:
    """The policy of the role/team/sharing model (see the module docstring)."""

    def __init__(self, grants: Grants | None = None, field_grants: FieldGrants | None = None) -> None:
        self._grants: dict[str, dict[tuple[str, str], str]] = {r: dict(g) for r, g in (grants or {}).items()}
        self._field_grants: dict[str, dict[tuple[str, str], str]] = {r: dict(g) for r, g in (field_grants or {}).items()}
        self.generation = 0

    async def load(self, db: Database) -> RolePolicy:
        async with db.connection() as connection:
            rows = await connection.fetch("SELECT role, entity, action, scope FROM xrm_sys.role_grant")
            field_rows = await connection.fetch("SELECT role, entity, field, access FROM xrm_sys.role_field_grant")
        grants: dict[str, dict[tuple[str, str], str]] = {}
        for row in rows:
            grants.setdefault(row["role"], {})[(row["entity"], row["action"])] = row["scope"]
        field_grants: dict[str, dict[tuple[str, str], str]] = {}
        for row in field_rows:
            field_grants.setdefault(row["role"], {})[(row["entity"], row["field"])] = row["access"]
        self._grants = grants
        self._field_grants = field_grants
        self.generation += 1
        return self

    @property
    def grants(self) -> Grants:
        return self._grants

    @property
    def field_grants(self) -> FieldGrants:
        return self._field_grants

    def _field_allowed(self, principal: Principal, entity: str, sensitive: frozenset[str], wanted: tuple[str, ...]) -> frozenset[str]:
        if principal.is_system or "admin" in principal.roles:
            return sensitive
        allowed = set()
        for role in principal.roles:
            by_field = self._field_grants.get(role)
            if by_field:
                allowed.update(name for name in sensitive if by_field.get((entity, name)) in wanted)
        return frozenset(allowed)

    def readable_fields(self, principal: Principal, entity: str, sensitive: frozenset[str]) -> frozenset[str]:
        """The sensitive fields of `entity` the principal may read (a read or update field grant, admin, system)."""
        return self._field_allowed(principal, entity, sensitive, FIELD_ACCESS)

    def writable_fields(self, principal: Principal, entity: str, sensitive: frozenset[str]) -> frozenset[str]:
        """The sensitive fields of `entity` the principal may update (an update field grant, admin, system)."""
        return self._field_allowed(principal, entity, sensitive, ("update",))

    def scope(self, principal: Principal, entity: str, action: Action | str) -> str:
        """The widest scope the principal's roles grant for this action on this entity."""
        if principal.is_system:
            return "all"
        found = effective_grants(self._grants, principal.roles, entity, action)
        return SCOPES[max((_RANK[scope] for _, _, scope in found), default=0)]

    def authorize(self, principal: Principal, entity: str, action: Action) -> None:
        if principal.read_only and action not in ("read", "export"):
            raise PermissionDenied(f"A read-only API token cannot {action} {entity} records")
        if self.scope(principal, entity, action) == "none":
            raise PermissionDenied(f"None of your roles allows {action} on {entity}")

    def row_filter(self, principal: Principal, entity: str, action: Action, params: list[object]) -> str:
        scope = self.scope(principal, entity, action)
        if scope == "all":
            return "TRUE"
        if scope == "none":
            return "FALSE"
        partition = self.row_partition(principal, entity, action, params)
        assert partition is not None
        return partition.predicate

    def row_partition(self, principal: Principal, entity: str, action: Action, params: list[object]) -> RowPartition | None:
        """The row filter split by owner (see RowPartition); None for scope all or none (nothing to split)."""
        scope = self.scope(principal, entity, action)
        if scope in ("all", "none"):
            return None
        owners = {principal.id}
        if scope in ("team", "team_tree"):
            owners |= principal.teams | principal.team_owners
            if scope == "team_tree":
                owners |= principal.tree_owners
        params.append(sorted(owners))
        owners_param = len(params)
        others = None
        if action in ("read", "update"):
            params.append(entity)
            entity_param = len(params)
            params.append(principal.id)
            me = len(params)
            params.append(sorted(principal.teams))
            teams = len(params)
            write = " AND s.access = 'write'" if action == "update" else ""
            # ARRAY(...) is an init plan, run once: `id = ANY(...)` then uses the primary key, and
            # PostgreSQL can OR it with the owner_id index (an IN (subquery) would force a full scan).
            others = (
                f"id = ANY(ARRAY(SELECT s.record_id FROM xrm_sys.record_share s WHERE s.entity = ${entity_param} "
                f"AND s.revoked_at IS NULL AND (s.user_id = ${me} OR s.team_id = ANY(${teams}::uuid[])){write}))"
            )
        return RowPartition(sorted(owners), owners_param, others)
