"""Admin-created automations and the job log, as the API and the web UI use them (admins only, audited)."""

from __future__ import annotations

from typing import Any

from xrm.audit import AuditLog
from xrm.errors import NotFound, PermissionDenied, Problem, ValidationFailed
from xrm.records.principal import Principal
from xrm.runtime import Platform

from .actions import action_names, automation_secret
from .engine import retry_job
from .spec import OWNER, definition_automations, validate_input

__all__ = ["AutomationStore", "JOB_STATES"]

JOB_STATES = ("queued", "running", "done", "failed", "dead")
_COLUMNS = "id, name, entity, trigger, condition, actions, run_as, enabled, created_by, created_at, updated_at"


def _automation(row: Any) -> dict[str, Any]:
    return {**dict(row), "key": f"db:{row['name']}", "source": "admin"}


def _job(row: Any) -> dict[str, Any]:
    return dict(row)


class AutomationStore:
    def __init__(self, platform: Platform, principal: Principal) -> None:
        if "admin" not in principal.roles:
            raise PermissionDenied("Managing automations and jobs needs the admin role")
        self.platform = platform
        self.principal = principal

    async def _check_user(self, name: str) -> None:
        if name == OWNER:
            return
        async with self.platform.db.connection() as connection:
            if not await connection.fetchval("SELECT 1 FROM xrm_sys.app_user WHERE name = $1 AND disabled_at IS NULL", name):
                raise ValidationFailed("automation", [Problem("/run_as", f"no active user named {name!r}")])

    async def list(self) -> list[dict[str, Any]]:
        async with self.platform.db.connection() as connection:
            rows = await connection.fetch(f"SELECT {_COLUMNS} FROM xrm_sys.automation ORDER BY name")
        return [_automation(r) for r in rows]

    def from_definitions(self) -> list[dict[str, Any]]:
        return [a.as_dict() for a in definition_automations(self.platform.registry)]

    async def get(self, name: str) -> dict[str, Any]:
        async with self.platform.db.connection() as connection:
            row = await connection.fetchrow(f"SELECT {_COLUMNS} FROM xrm_sys.automation WHERE name = $1", name)
        if row is None:
            raise NotFound(f"No automation named {name!r}")
        return _automation(row)

    async def create(self, body: Any) -> dict[str, Any]:
        spec = validate_input(body, self.platform.registry, action_names())
        await self._check_user(spec["run_as"])
        async with self.platform.db.transaction() as tx:
            if await tx.connection.fetchval("SELECT 1 FROM xrm_sys.automation WHERE name = $1", spec["name"]):
                raise ValidationFailed("automation", [Problem("/name", f"an automation named {spec['name']!r} exists already")])
            row = await tx.connection.fetchrow(
                f"INSERT INTO xrm_sys.automation (name, entity, trigger, condition, actions, run_as, enabled, created_by) "
                f"VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING {_COLUMNS}",
                spec["name"], spec["entity"], spec["trigger"], spec.get("condition") or [], spec["actions"], spec["run_as"],
                spec.get("enabled", True), self.principal.name,
            )
            await AuditLog.write(tx.connection, self.principal, "automation.created", details={"name": spec["name"], "automation": spec})
        return _automation(row)

    async def replace(self, name: str, body: Any) -> dict[str, Any]:
        spec = validate_input(body, self.platform.registry, action_names())
        if spec["name"] != name:
            raise ValidationFailed("automation", [Problem("/name", f"must be {name!r}, the automation's name (names do not change)")])
        await self._check_user(spec["run_as"])
        async with self.platform.db.transaction() as tx:
            row = await tx.connection.fetchrow(
                f"UPDATE xrm_sys.automation SET entity = $2, trigger = $3, condition = $4, actions = $5, run_as = $6, "
                f"enabled = $7, updated_at = now() WHERE name = $1 RETURNING {_COLUMNS}",
                name, spec["entity"], spec["trigger"], spec.get("condition") or [], spec["actions"], spec["run_as"], spec.get("enabled", True),
            )
            if row is None:
                raise NotFound(f"No automation named {name!r}")
            await AuditLog.write(tx.connection, self.principal, "automation.changed", details={"name": name, "automation": spec})
        return _automation(row)

    async def set_enabled(self, name: str, enabled: bool) -> dict[str, Any]:
        async with self.platform.db.transaction() as tx:
            row = await tx.connection.fetchrow(
                f"UPDATE xrm_sys.automation SET enabled = $2, updated_at = now() WHERE name = $1 RETURNING {_COLUMNS}", name, enabled,
            )
            if row is None:
                raise NotFound(f"No automation named {name!r}")
            await AuditLog.write(tx.connection, self.principal, "automation.enabled" if enabled else "automation.disabled",
                                 details={"name": name})
        return _automation(row)

    async def delete(self, name: str) -> None:
        async with self.platform.db.transaction() as tx:
            deleted = await tx.connection.fetchval("DELETE FROM xrm_sys.automation WHERE name = $1 RETURNING name", name)
            if deleted is None:
                raise NotFound(f"No automation named {name!r}")
            await AuditLog.write(tx.connection, self.principal, "automation.deleted", details={"name": name})

    async def secret(self, key: str) -> str:
        """The webhook signing secret of an automation (created on first use)."""
        return await automation_secret(self.platform.db, key)

    # -- the job log ---------------------------------------------------------------
    async def jobs(self, *, state: str | None = None, automation: str | None = None, limit: int = 100,
                   before: int | None = None) -> list[dict[str, Any]]:
        conditions, params = ["true"], []
        if state:
            params.append(state)
            conditions.append(f"state = ${len(params)}")
        if automation:
            params.append(automation)
            conditions.append(f"(automation = ${len(params)} OR automation LIKE '%:' || ${len(params)})")
        if before:
            params.append(before)
            conditions.append(f"id < ${len(params)}")
        params.append(max(1, min(limit, 1000)))
        async with self.platform.db.connection() as connection:
            rows = await connection.fetch(
                "SELECT id, kind, idempotency_key, automation, state, attempts, max_attempts, run_after, locked_by, locked_until, "
                "last_error, result, payload, created_at, started_at, finished_at FROM xrm_sys.job "
                f"WHERE {' AND '.join(conditions)} ORDER BY id DESC LIMIT ${len(params)}", *params,
            )
        return [_job(r) for r in rows]

    async def retry(self, job_id: int) -> dict[str, Any]:
        async with self.platform.db.transaction() as tx:
            job = await retry_job(tx.connection, job_id)
            if job is None:
                exists = await tx.connection.fetchval("SELECT state FROM xrm_sys.job WHERE id = $1", job_id)
                if exists is None:
                    raise NotFound(f"No job with id {job_id}")
                raise ValidationFailed("job", [Problem("/state", f"only a dead or failed job can be retried; this one is {exists}")])
            await AuditLog.write(tx.connection, self.principal, "job.retried", details={"job": job_id, "key": job["idempotency_key"]})
        return job
