"""Users and API tokens: who a request is, turned into a Principal.

Passwords are hashed with argon2; API tokens are random 256-bit strings of
which only a SHA-256 hash is stored (a token is shown once, when created).
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import VerificationError

from .db.database import Database
from .errors import NotFound, Problem, ValidationFailed, XrmError
from .records.principal import Principal
from .settings import Settings

__all__ = ["TOKEN_PREFIX", "AuthenticationRequired", "LoginLocked", "TokenInfo", "UserService"]

TOKEN_PREFIX = "xrm_"
_hasher = PasswordHasher()
_DEFAULT_SETTINGS = Settings(data_dir=Path(".xrm"), database_url=None, schema_dir=Path("entity_schemas"), secret_key=None)


@dataclass(frozen=True)
class TokenInfo:
    id: uuid.UUID
    user: str
    label: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None
    access: str = "write"
    """"read": the token may only read; "write": whatever the user's roles allow."""


def _check_email(email: str | None) -> None:
    if email is not None and (len(email) > 254 or not re.fullmatch(r"[^@\s]+@[^@\s]+", email)):
        raise ValidationFailed("user", [Problem("/email", f"{email!r} is not an e-mail address")])


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class UserService:
    """Users, passwords, logins and API tokens.

    `actor` is who asks (an admin in the web UI; the system principal in the
    CLI): user creation, unlocking and token changes are audited as theirs.
    """

    def __init__(self, db: Database, settings: Settings | None = None, actor: Principal | None = None) -> None:
        from .records.principal import SYSTEM_PRINCIPAL

        self.db = db
        self.settings = settings or _DEFAULT_SETTINGS
        self.actor = actor or SYSTEM_PRINCIPAL

    async def _audit(self, connection: asyncpg.Connection, action: str, details: dict[str, Any]) -> None:
        from .audit import AuditLog

        await AuditLog.write(connection, self.actor, action, details=details)

    async def create_user(self, name: str, password: str, roles: list[str] | None = None, *, email: str | None = None) -> Principal:
        if len(password) < 8:
            raise ValidationFailed("user", [Problem("/password", "must be at least 8 characters long")])
        _check_email(email)
        from .security.model import SecurityService

        await SecurityService(self.db).check_roles(roles or [])  # every role named must exist
        async with self.db.connection() as connection, connection.transaction():
            try:
                row = await connection.fetchrow(
                    "INSERT INTO xrm_sys.app_user (name, password_hash, roles, email) VALUES ($1, $2, $3, $4) RETURNING id, name, roles",
                    name, _hasher.hash(password), roles or [], email,
                )
            except asyncpg.UniqueViolationError:
                raise ValidationFailed("user", [Problem("/name", f"a user named {name!r} exists already")]) from None
            except asyncpg.CheckViolationError:
                raise ValidationFailed("user", [Problem("/name", "use letters, digits and . _ @ - (at most 63 characters)")]) from None
            await self._audit(connection, "auth.user_created", {"user": name, "user_id": row["id"], "roles": list(row["roles"])})
        return _principal(row)

    async def set_email(self, name: str, email: str | None) -> None:
        """The user's e-mail address (None: none), where mail to a record's owner goes (audited)."""
        _check_email(email)
        async with self.db.connection() as connection, connection.transaction():
            found = await connection.fetchval("UPDATE xrm_sys.app_user SET email = $2 WHERE name = $1 RETURNING id", name, email)
            if found is None:
                raise NotFound(f"No user named {name!r}")
            await self._audit(connection, "auth.user_email_changed", {"user": name, "user_id": found})

    async def list_users(self) -> list[dict[str, Any]]:
        """Every user (for admins): name, id, roles, teams, when created, whether disabled or locked (and until when)."""
        async with self.db.connection() as connection:
            rows = await connection.fetch(
                "SELECT u.id, u.name, u.roles, u.created_at, u.disabled_at, COALESCE(u.locked_until > now(), false) AS locked, "
                "u.locked_until, ARRAY(SELECT t.name FROM xrm_sys.team_member m JOIN xrm_sys.team t ON t.id = m.team_id "
                "WHERE m.user_id = u.id ORDER BY t.name) AS teams "
                "FROM xrm_sys.app_user u ORDER BY lower(u.name), u.name"
            )
        return [{"id": r["id"], "name": r["name"], "roles": list(r["roles"]), "teams": list(r["teams"]), "created_at": r["created_at"],
                 "disabled": r["disabled_at"] is not None, "disabled_at": r["disabled_at"], "locked": r["locked"],
                 "locked_until": r["locked_until"] if r["locked"] else None} for r in rows]

    async def set_disabled(self, name: str, disabled: bool) -> bool:
        """Disable (or enable again) user NAME; False if it already was. A disabled user cannot log in,
        and its sessions and API tokens stop working at once (they are checked against disabled_at)."""
        async with self.db.connection() as connection, connection.transaction():
            row = await connection.fetchrow("SELECT id, disabled_at FROM xrm_sys.app_user WHERE name = $1 FOR UPDATE", name)
            if row is None:
                raise NotFound(f"No user named {name!r}")
            if (row["disabled_at"] is not None) == disabled:
                return False
            if disabled and self.actor.id == row["id"]:
                raise ValidationFailed("user", [Problem("/disabled", "you cannot disable yourself")])
            await connection.execute(
                "UPDATE xrm_sys.app_user SET disabled_at = CASE WHEN $2 THEN now() END WHERE id = $1", row["id"], disabled
            )
            if disabled:
                await connection.execute(
                    "UPDATE xrm_sys.web_session SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL", row["id"]
                )
            await self._audit(connection, "auth.user_disabled" if disabled else "auth.user_enabled", {"user": name, "user_id": row["id"]})
        return True

    async def end_sessions(self, name: str) -> int:
        """Log user NAME out everywhere (every web session; API tokens stay): how many sessions ended."""
        async with self.db.connection() as connection, connection.transaction():
            user_id = await connection.fetchval("SELECT id FROM xrm_sys.app_user WHERE name = $1", name)
            if user_id is None:
                raise NotFound(f"No user named {name!r}")
            status = await connection.execute(
                "UPDATE xrm_sys.web_session SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL "
                "AND expires_at > now()", user_id,
            )
            ended = int(status.rsplit(" ", 1)[-1])
            await self._audit(connection, "auth.sessions_ended", {"user": name, "user_id": user_id, "sessions": ended})
        return ended

    async def authenticate(self, name: str, password: str, *, address: str | None = None) -> Principal | None:
        """The user's principal (with teams) if the password is right; None if the name or password is wrong.

        Raises LoginLocked while the name is locked after too many consecutive
        failures (even for the right password), and on the failure that locks it.
        Unknown names are counted and locked exactly like users, so neither the
        answer, the lock-out nor the time taken tells whether a user exists.
        `address` (the client's): failures from it are counted too, whatever the
        names, and lock every login from it at login_max_failures_per_address.
        """
        key = _login_key(name)
        address = _address_key(address) if self.settings.login_max_failures_per_address else None
        if address is not None:
            async with self.db.connection() as connection:
                address_lock = await connection.fetchval(
                    "SELECT locked_until FROM xrm_sys.login_failure_by_address WHERE address = $1 AND locked_until > now()", address
                )
            if address_lock is not None:
                await self._audit_login(name, None, "auth.login_failed", "address locked", {"address": address, "locked_until": address_lock})
                raise LoginLocked(address_lock, by_address=True)
        async with self.db.connection() as connection:
            row = await connection.fetchrow(
                "SELECT id, name, roles, password_hash, locked_until, now() AS now "
                "FROM xrm_sys.app_user WHERE name = $1 AND disabled_at IS NULL", key,
            )
            if row is None:
                lock = await connection.fetchrow(
                    "SELECT locked_until, now() AS now FROM xrm_sys.login_failure WHERE name = $1", key
                )
                locked_until = lock["locked_until"] if lock else None
                now = lock["now"] if lock else None
            else:
                locked_until, now = row["locked_until"], row["now"]
        user_id = row["id"] if row else None
        if locked_until is not None and now is not None and locked_until > now:
            # No password check while locked: the answer is the same either way.
            await self._audit_login(name, user_id, "auth.login_failed", "locked", {"locked_until": locked_until})
            raise LoginLocked(locked_until)
        if row is None:
            _hasher.hash(password)  # same cost whether or not the user exists
            await self._failed(name, None, "unknown or disabled user", address)
            return None
        try:
            _hasher.verify(row["password_hash"], password)
        except VerificationError:
            await self._failed(name, row["id"], "wrong password", address)
            return None
        async with self.db.connection() as connection:
            # Resets the counter, unless a concurrent failure locked the user meanwhile.
            reset = await connection.fetchval(
                "UPDATE xrm_sys.app_user SET failed_logins = 0, locked_until = NULL "
                "WHERE id = $1 AND (locked_until IS NULL OR locked_until <= now()) RETURNING locked_until IS NULL",
                row["id"],
            )
            if reset is None:
                locked_until = await connection.fetchval("SELECT locked_until FROM xrm_sys.app_user WHERE id = $1", row["id"])
            else:
                from .security.model import resolve_principal

                principal = await resolve_principal(connection, row["id"], row["name"], row["roles"])
        if reset is None:
            await self._audit_login(name, row["id"], "auth.login_failed", "locked", {"locked_until": locked_until})
            raise LoginLocked(locked_until)
        await self._audit_login(name, row["id"], "auth.login", None)
        return principal

    async def _failed(self, name: str, user_id: uuid.UUID | None, reason: str, address: str | None = None) -> None:
        """Count a failed login of `name` (a user's row, or login_failure for other names) and from `address`; lock at the limits."""
        key = _login_key(name)
        limit, period = self.settings.login_max_failures, timedelta(seconds=self.settings.login_lockout_seconds)
        address_locked_until = await self._failed_address(address, period) if address is not None else None
        async with self.db.connection() as connection, connection.transaction():
            if user_id is not None:
                failures, locked_until, newly_locked = await _count_failure(connection, "xrm_sys.app_user", "id", user_id, limit, period)
            else:
                failures, locked_until, newly_locked = await _count_failure(
                    connection, "xrm_sys.login_failure", "name", key, limit, period, forgettable=True)
        await self._audit_login(name, user_id, "auth.login_failed", reason, {
            "failed_logins": failures, **({"address": address} if address else {})})
        if newly_locked:
            await self._audit_login(name, user_id, "auth.locked", None, {"failed_logins": failures, "locked_until": locked_until})
            raise LoginLocked(locked_until)  # type: ignore[arg-type]
        if address_locked_until is not None:
            raise LoginLocked(address_locked_until, by_address=True)

    async def _failed_address(self, address: str, period: timedelta) -> datetime | None:
        """Count a failed login from `address`; its lock's end if this failure starts one."""
        limit = self.settings.login_max_failures_per_address
        async with self.db.connection() as connection, connection.transaction():
            failures, locked_until, newly_locked = await _count_failure(
                connection, "xrm_sys.login_failure_by_address", "address", address, limit, period, forgettable=True)
        if not newly_locked:
            return None
        await self._audit_login(address, None, "auth.address_locked", None, {
            "address": address, "failed_logins": failures, "locked_until": locked_until})
        return locked_until

    async def unlock(self, name: str) -> bool:
        """Lift a login lock of `name` and reset its failure count. False if it was not locked."""
        key = _login_key(name)
        async with self.db.connection() as connection, connection.transaction():
            user = await connection.fetchrow(
                "SELECT id, locked_until > now() AS locked FROM xrm_sys.app_user WHERE name = $1", key
            )
            other = await connection.fetchval(
                "DELETE FROM xrm_sys.login_failure WHERE name = $1 RETURNING locked_until > now()", key
            )
            if user is None and other is None:
                raise NotFound(f"No user named {name!r}")
            if user is not None:
                await connection.execute(
                    "UPDATE xrm_sys.app_user SET failed_logins = 0, locked_until = NULL WHERE id = $1", user["id"]
                )
            was_locked = bool(user and user["locked"]) or bool(other)
            await self._audit(connection, "auth.unlocked", {"user": key, "was_locked": was_locked})
        return was_locked

    async def _audit_login(
        self, name: str, user_id: Any, action: str, reason: str | None, extra: dict[str, Any] | None = None
    ) -> None:
        from .audit import AuditLog

        # The name as typed (it may belong to no user); bounded so a huge one cannot bloat the log.
        attempted = Principal(user_id or uuid.UUID(int=0), _login_key(name), frozenset())
        details = {**({"reason": reason} if reason else {}), **(extra or {})}
        await AuditLog(self.db).write_now(attempted, action, details=details or None)

    async def create_token(self, user: str, label: str = "", *, read_only: bool = False) -> tuple[str, TokenInfo]:
        """A new token for `user`: (the token, shown only now; its stored info). A read-only token only reads."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        async with self.db.connection() as connection, connection.transaction():
            user_id = await connection.fetchval("SELECT id FROM xrm_sys.app_user WHERE name = $1 AND disabled_at IS NULL", user)
            if user_id is None:
                raise NotFound(f"No user named {user!r}")
            row = await connection.fetchrow(
                "INSERT INTO xrm_sys.api_token (user_id, token_hash, label, access) VALUES ($1, $2, $3, $4) "
                "RETURNING id, label, created_at, last_used_at, revoked_at, access",
                user_id, _token_hash(token), label, "read" if read_only else "write",
            )
            # Never the token itself: only its id.
            await self._audit(connection, "auth.token_created", {"user": user, "token_id": row["id"], "label": label,
                                                                 "access": row["access"]})
        return token, TokenInfo(user=user, **dict(row))

    async def list_tokens(self, user: str | None = None) -> list[TokenInfo]:
        async with self.db.connection() as connection:
            rows = await connection.fetch(
                "SELECT t.id, u.name AS user, t.label, t.created_at, t.last_used_at, t.revoked_at, t.access "
                "FROM xrm_sys.api_token t JOIN xrm_sys.app_user u ON u.id = t.user_id "
                "WHERE $1::text IS NULL OR u.name = $1 ORDER BY t.created_at",
                user,
            )
        return [TokenInfo(**dict(r)) for r in rows]

    async def revoke_token(self, token_id: Any) -> None:
        try:
            key = uuid.UUID(str(token_id))
        except ValueError:
            raise NotFound(f"No token with id {token_id!r}") from None
        async with self.db.connection() as connection, connection.transaction():
            owner = await connection.fetchval(
                "UPDATE xrm_sys.api_token t SET revoked_at = coalesce(t.revoked_at, now()) FROM xrm_sys.app_user u "
                "WHERE t.id = $1 AND u.id = t.user_id RETURNING u.name", key
            )
            if owner is None:
                raise NotFound(f"No token with id {token_id}")
            await self._audit(connection, "auth.token_revoked", {"user": owner, "token_id": key})

    async def principal_for_token(self, token: str) -> Principal | None:
        if not token.startswith(TOKEN_PREFIX) or len(token) > 200:
            return None
        async with self.db.connection() as connection:
            row = await connection.fetchrow(
                "SELECT t.id AS token_id, t.last_used_at, t.access, u.id, u.name, u.roles "
                "FROM xrm_sys.api_token t JOIN xrm_sys.app_user u ON u.id = t.user_id "
                "WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND u.disabled_at IS NULL",
                _token_hash(token),
            )
            if row is None:
                return None
            # "Last used" to the minute: writing it on every request made each
            # read a committed write, and requests of one token queue on its row
            # (bench/api_load.py measured ~1.4x more GETs/s without it).
            if row["last_used_at"] is None or row["last_used_at"] < _minute_ago():
                await connection.execute(
                    "UPDATE xrm_sys.api_token SET last_used_at = now() "
                    "WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')",
                    row["token_id"],
                )
            from .security.model import resolve_principal

            # With the teams and the owner sets of scopes team/team_tree (xrm.security).
            principal = await resolve_principal(connection, row["id"], row["name"], row["roles"])
            # The token's id travels with the principal, so the audit trail can name the token an export used.
            return dataclasses.replace(principal, read_only=row["access"] == "read", token_id=row["token_id"], via="token")


async def _count_failure(
    connection: asyncpg.Connection, table: str, column: str, value: Any, limit: int, period: timedelta, *, forgettable: bool = False
) -> tuple[int, datetime | None, bool]:
    """One more failed login for the row `column = value` of `table` (a user, a typed name, a client address):
    (failures, locked_until, whether this failure starts the lock). `forgettable` tables hold rows only for
    failures: rows quiet (and unlocked) for a lock-out period are dropped, they would count from 1 anyway."""
    if forgettable:
        await connection.execute(
            f"DELETE FROM {table} WHERE last_failed_login_at < now() - $1::interval AND (locked_until IS NULL OR locked_until < now())",
            period,
        )
        await connection.execute(f"INSERT INTO {table} ({column}) VALUES ($1) ON CONFLICT DO NOTHING", value)
    state = await connection.fetchrow(
        f"SELECT failed_logins, last_failed_login_at, locked_until, now() AS now FROM {table} WHERE {column} = $1 FOR UPDATE", value
    )
    failures, locked_until = _after_failure(
        state["failed_logins"], state["last_failed_login_at"], state["locked_until"], state["now"], limit, period
    )
    await connection.execute(
        f"UPDATE {table} SET failed_logins = $2, locked_until = $3, last_failed_login_at = now() WHERE {column} = $1",
        value, failures, locked_until,
    )
    return failures, locked_until, locked_until is not None and locked_until != state["locked_until"]


def _address_key(address: str | None) -> str | None:
    """The key failures from a client address are counted under (None: no address known)."""
    if not address:
        return None
    return address[:100].replace("\x00", "")


def _login_key(name: str) -> str:
    """The name a login is counted and logged under: as typed, bounded, without NUL."""
    return name[:200].replace("\x00", "")


def _after_failure(
    failures: int, last_failure: datetime | None, locked_until: datetime | None, now: datetime, limit: int, period: timedelta
) -> tuple[int, datetime | None]:
    """(failures, locked_until) after one more failed login at `now`.

    Failures add up while each comes within `period` of the previous one and
    no lock has run out in between; reaching `limit` locks for `period`. A
    failure while locked changes nothing (a lock is not extended by retrying).
    """
    if locked_until is not None and locked_until > now:
        return failures, locked_until
    if locked_until is not None or last_failure is None or last_failure < now - period:
        failures = 0
    failures += 1
    return failures, (now + period if failures >= limit else None)


def _minute_ago() -> datetime:
    return datetime.now(timezone.utc) - timedelta(minutes=1)


def _principal(row: Any) -> Principal:
    return Principal(row["id"], row["name"], frozenset(row["roles"]))


class AuthenticationRequired(XrmError):
    title = "Authentication required"


class LoginLocked(XrmError):
    """Too many consecutive failed logins for this name: no login until `until` (HTTP 429)."""

    title = "Too many failed logins"

    def __init__(self, until: datetime, *, by_address: bool = False) -> None:
        when = until.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        super().__init__(
            f"Too many failed logins from this address: logging in from it is locked until {when}"
            if by_address else
            f"Too many failed logins: logging in with this name is locked until {when} "
            "(an admin can lift the lock with `xrm user unlock NAME`)"
        )
        self.until = until
        self.by_address = by_address
