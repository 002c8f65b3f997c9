"""Web sessions: a browser's login, carried by the `xrm_session` cookie.

The cookie holds a random 256-bit token; the database keeps only its SHA-256
(`xrm_sys.web_session.id`), as for API tokens. The session's CSRF token is
derived from the cookie token (HMAC-SHA256 keyed with it), so it is bound to
the session, needs no storage, and cannot be computed from anything stored.

A session ends at logout, at "log out everywhere", after
`session_idle_seconds` without a request, or `session_max_seconds` after the
login, whichever comes first; a disabled user's sessions stop working at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from .db.database import Database
from .records.principal import Principal
from .settings import Settings

__all__ = ["SESSION_COOKIE", "SessionService", "WebSession", "csrf_token_for"]

SESSION_COOKIE = "xrm_session"
_CSRF_CONTEXT = b"xrm csrf token v1"


@dataclass(frozen=True)
class WebSession:
    user_id: uuid.UUID
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    """The absolute end (login + session_max_seconds)."""
    idle_expires_at: datetime
    """When it ends unless used before (last use + session_idle_seconds), capped at expires_at."""
    user_agent: str


def _session_id(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def csrf_token_for(session_token: str) -> str:
    """The CSRF token of the session whose cookie holds `session_token`."""
    digest = hmac.new(session_token.encode(), _CSRF_CONTEXT, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def csrf_token_matches(session_token: str, candidate: str | None) -> bool:
    if not candidate or len(candidate) > 200:
        return False
    return hmac.compare_digest(csrf_token_for(session_token).encode(), candidate.encode(errors="replace"))


def _plausible(token: str) -> bool:
    return 20 <= len(token) <= 100 and token.isascii()


class SessionService:
    def __init__(self, db: Database, settings: Settings) -> None:
        self.db = db
        self.idle = timedelta(seconds=settings.session_idle_seconds)
        self.lifetime = timedelta(seconds=settings.session_max_seconds)

    def _session(self, row: Any) -> WebSession:
        return WebSession(
            user_id=row["user_id"], created_at=row["created_at"], last_seen_at=row["last_seen_at"], expires_at=row["expires_at"],
            idle_expires_at=min(row["last_seen_at"] + self.idle, row["expires_at"]), user_agent=row["user_agent"],
        )

    async def create(self, user_id: uuid.UUID, user_agent: str = "") -> tuple[str, WebSession]:
        """A new session for the user: (the cookie token, the session)."""
        token = secrets.token_urlsafe(32)
        async with self.db.connection() as connection, connection.transaction():
            # Sessions of this user that ended long ago are of no use any more.
            await connection.execute(
                "DELETE FROM xrm_sys.web_session WHERE user_id = $1 "
                "AND coalesce(revoked_at, expires_at) < now() - interval '30 days'", user_id,
            )
            row = await connection.fetchrow(
                "INSERT INTO xrm_sys.web_session (id, user_id, expires_at, user_agent) VALUES ($1, $2, now() + $3::interval, $4) "
                "RETURNING user_id, created_at, last_seen_at, expires_at, user_agent",
                _session_id(token), user_id, self.lifetime, user_agent[:500].replace("\x00", ""),
            )
        return token, self._session(row)

    async def resolve(self, token: str) -> tuple[Principal, WebSession] | None:
        """The user (with teams) and session the cookie token stands for; None if unknown, ended or revoked."""
        if not _plausible(token):
            return None
        async with self.db.connection() as connection:
            row = await connection.fetchrow(
                "SELECT s.id, s.user_id, s.created_at, s.last_seen_at, s.expires_at, s.user_agent, u.name, u.roles, "
                "now() AS now FROM xrm_sys.web_session s JOIN xrm_sys.app_user u ON u.id = s.user_id "
                "WHERE s.id = $1 AND s.revoked_at IS NULL AND u.disabled_at IS NULL "
                "AND s.expires_at > now() AND s.last_seen_at > now() - $2::interval",
                _session_id(token), self.idle,
            )
            if row is None:
                return None
            session = self._session(row)
            # "Last seen" to the minute, as for API tokens: a write per request would queue requests on the row.
            if row["last_seen_at"] < row["now"] - timedelta(minutes=1):
                seen = await connection.fetchval(
                    "UPDATE xrm_sys.web_session SET last_seen_at = now() WHERE id = $1 RETURNING last_seen_at", row["id"]
                )
                session = WebSession(
                    session.user_id, session.created_at, seen, session.expires_at,
                    min(seen + self.idle, session.expires_at), session.user_agent,
                )
            from .security.model import resolve_principal

            principal = await resolve_principal(connection, row["user_id"], row["name"], row["roles"])
        return replace(principal, via="session"), session

    async def revoke(self, token: str) -> bool:
        """End the session of this cookie token. False if it was not active."""
        if not _plausible(token):
            return False
        async with self.db.connection() as connection:
            status = await connection.execute(
                "UPDATE xrm_sys.web_session SET revoked_at = now() WHERE id = $1 AND revoked_at IS NULL", _session_id(token)
            )
        return not status.endswith(" 0")

    async def revoke_all(self, user_id: uuid.UUID) -> int:
        """End every active session of the user; how many there were. API tokens are not touched."""
        async with self.db.connection() as connection:
            status = await connection.execute(
                "UPDATE xrm_sys.web_session SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL "
                "AND expires_at > now()", user_id,
            )
        return int(status.rsplit(" ", 1)[-1])
