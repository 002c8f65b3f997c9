"""Users and API tokens: who a request is, turned into a Principal.

Passwords are hashed with argon2; API tokens are random 256-bit strings of
which only a SHA-256 hash is stored (a token is shown once, when created).
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import asyncpg
from argon2 import PasswordHasher
from argon2.exceptions import VerificationError

from .db.database import Database
from .errors import NotFound, Problem, ValidationFailed, XrmError
from .records.principal import Principal

__all__ = ["TOKEN_PREFIX", "TokenInfo", "UserService"]

TOKEN_PREFIX = "xrm_"
_hasher = PasswordHasher()


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


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class UserService:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def create_user(self, name: str, password: str, roles: list[str] | None = None) -> Principal:
        if len(password) < 8:
            raise ValidationFailed("user", [Problem("/password", "must be at least 8 characters long")])
        from .security.model import SecurityService

        await SecurityService(self.db).check_roles(roles or [])  # every role named must exist
        async with self.db.connection() as connection:
            try:
                row = await connection.fetchrow(
                    "INSERT INTO xrm_sys.app_user (name, password_hash, roles) VALUES ($1, $2, $3) RETURNING id, name, roles",
                    name, _hasher.hash(password), roles or [],
                )
            except asyncpg.UniqueViolationError:
                raise ValidationFailed("user", [Problem("/name", f"a user named {name!r} exists already")]) from None
            except asyncpg.CheckViolationError:
                raise ValidationFailed("user", [Problem("/name", "use letters, digits and . _ @ - (at most 63 characters)")]) from None
        return _principal(row)

    async def authenticate(self, name: str, password: str) -> Principal | None:
        async with self.db.connection() as connection:
            row = await connection.fetchrow(
                "SELECT id, name, roles, password_hash FROM xrm_sys.app_user WHERE name = $1 AND disabled_at IS NULL", name
            )
        if row is None:
            _hasher.hash(password)  # same cost whether or not the user exists
            await self._audit_login(name, None, "auth.login_failed", "unknown or disabled user")
            return None
        try:
            _hasher.verify(row["password_hash"], password)
        except VerificationError:
            await self._audit_login(name, row["id"], "auth.login_failed", "wrong password")
            return None
        principal = _principal(row)
        await self._audit_login(name, row["id"], "auth.login", None)
        return principal

    async def _audit_login(self, name: str, user_id: Any, action: str, reason: str | None) -> None:
        from .audit import AuditLog

        # The name as typed (it may belong to no user); bounded so a huge one cannot bloat the log.
        attempted = Principal(user_id or uuid.UUID(int=0), name[:200].replace("\x00", ""), frozenset())
        await AuditLog(self.db).write_now(attempted, action, details={"reason": reason} if reason else None)

    async def create_token(self, user: str, label: str = "", *, read_only: bool = False) -> tuple[str, TokenInfo]:
        """A new token for `user`: (the token, shown only now; its stored info). A read-only token only reads."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        async with self.db.connection() as connection:
            user_id = await connection.fetchval("SELECT id FROM xrm_sys.app_user WHERE name = $1 AND disabled_at IS NULL", user)
            if user_id is None:
                raise NotFound(f"No user named {user!r}")
            row = await connection.fetchrow(
                "INSERT INTO xrm_sys.api_token (user_id, token_hash, label, access) VALUES ($1, $2, $3, $4) "
                "RETURNING id, label, created_at, last_used_at, revoked_at, access",
                user_id, _token_hash(token), label, "read" if read_only else "write",
            )
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
        async with self.db.connection() as connection:
            status = await connection.execute(
                "UPDATE xrm_sys.api_token SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1", key
            )
        if status.endswith(" 0"):
            raise NotFound(f"No token with id {token_id}")

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
            return dataclasses.replace(principal, read_only=True) if row["access"] == "read" else principal


def _minute_ago() -> datetime:
    return datetime.now(timezone.utc) - timedelta(minutes=1)


def _principal(row: Any) -> Principal:
    return Principal(row["id"], row["name"], frozenset(row["roles"]))


class AuthenticationRequired(XrmError):
    title = "Authentication required"
