"""Settings read from the environment (the public contract names them)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .errors import XrmError

__all__ = ["Settings"]

COOKIE_SECURE_MODES = ("auto", "true", "false")


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    """Folder of the embedded PostgreSQL and other local state (XRM_DATA_DIR)."""
    database_url: str | None
    """An external PostgreSQL >= 15 with pgvector (XRM_DATABASE_URL); None means embedded."""
    schema_dir: Path
    """Entity definitions loaded at start (XRM_SCHEMA_DIR, default ./entity_schemas)."""
    secret_key: str | None
    login_max_failures: int = 5
    """Consecutive failed logins of one user name that lock it (XRM_LOGIN_MAX_FAILURES)."""
    login_lockout_seconds: int = 900
    """How long such a lock lasts (XRM_LOGIN_LOCKOUT_SECONDS); failures further apart than this do not add up."""
    login_max_failures_per_address: int = 20
    """Failed logins from one client address, whatever the names, that lock logins from it
    (XRM_LOGIN_MAX_FAILURES_PER_ADDRESS; 0 turns it off, e.g. behind a proxy that hides client addresses)."""
    session_idle_seconds: int = 3600
    """A web session unused this long ends (XRM_SESSION_IDLE_SECONDS)."""
    session_max_seconds: int = 12 * 3600
    """A web session ends this long after the login, used or not (XRM_SESSION_MAX_SECONDS)."""
    cookie_secure: str = "auto"
    """The session cookie's Secure flag (XRM_COOKIE_SECURE): "true" always, "false" never,
    "auto" always except plain-http requests to a loopback host (local development)."""
    smtp_host: str | None = None
    """Mail server for e-mails automations send (XRM_SMTP_HOST); None: e-mail jobs fail with a clear error."""
    smtp_port: int = 25
    """XRM_SMTP_PORT."""
    smtp_user: str | None = None
    """Login at the mail server (XRM_SMTP_USER), with XRM_SMTP_PASSWORD."""
    smtp_password: str | None = None
    smtp_from: str = "xrm@localhost"
    """Sender address of automation e-mails (XRM_SMTP_FROM)."""
    smtp_starttls: bool = False
    """Upgrade the SMTP connection with STARTTLS (XRM_SMTP_STARTTLS=true)."""
    worker: bool = True
    """Run the job worker inside `xrm serve` (XRM_WORKER; "false" when separate `xrm worker` processes run the jobs)."""
    worker_poll_seconds: int = 2
    """How often an idle worker looks for events and jobs (XRM_WORKER_POLL_SECONDS)."""
    job_lease_seconds: int = 300
    """A claimed job not finished within this time is taken over by another worker (XRM_JOB_LEASE_SECONDS)."""
    job_backoff_seconds: int = 10
    """First retry delay of a failed job; doubled per attempt, with jitter (XRM_JOB_BACKOFF_SECONDS)."""
    job_max_attempts: int = 5
    """Attempts before a job is "dead" (XRM_JOB_MAX_ATTEMPTS)."""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        cookie_secure = (env.get("XRM_COOKIE_SECURE") or "auto").strip().lower()
        if cookie_secure not in COOKIE_SECURE_MODES:
            raise XrmError(f"XRM_COOKIE_SECURE must be one of {', '.join(COOKIE_SECURE_MODES)}, not {cookie_secure!r}")
        return cls(
            data_dir=Path(env.get("XRM_DATA_DIR") or ".xrm").resolve(),
            database_url=env.get("XRM_DATABASE_URL") or None,
            schema_dir=Path(env.get("XRM_SCHEMA_DIR") or "entity_schemas").resolve(),
            secret_key=env.get("XRM_SECRET_KEY") or None,
            login_max_failures=_positive(env, "XRM_LOGIN_MAX_FAILURES", 5),
            login_lockout_seconds=_positive(env, "XRM_LOGIN_LOCKOUT_SECONDS", 900),
            login_max_failures_per_address=_whole(env, "XRM_LOGIN_MAX_FAILURES_PER_ADDRESS", 20),
            session_idle_seconds=_positive(env, "XRM_SESSION_IDLE_SECONDS", 3600),
            session_max_seconds=_positive(env, "XRM_SESSION_MAX_SECONDS", 12 * 3600),
            cookie_secure=cookie_secure,
            smtp_host=env.get("XRM_SMTP_HOST") or None,
            smtp_port=_positive(env, "XRM_SMTP_PORT", 25),
            smtp_user=env.get("XRM_SMTP_USER") or None,
            smtp_password=env.get("XRM_SMTP_PASSWORD") or None,
            smtp_from=env.get("XRM_SMTP_FROM") or "xrm@localhost",
            smtp_starttls=_flag(env, "XRM_SMTP_STARTTLS", False),
            worker=_flag(env, "XRM_WORKER", True),
            worker_poll_seconds=_positive(env, "XRM_WORKER_POLL_SECONDS", 2),
            job_lease_seconds=_positive(env, "XRM_JOB_LEASE_SECONDS", 300),
            job_backoff_seconds=_positive(env, "XRM_JOB_BACKOFF_SECONDS", 10),
            job_max_attempts=_positive(env, "XRM_JOB_MAX_ATTEMPTS", 5),
        )


def _flag(env: os._Environ[str] | dict[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise XrmError(f"{name} must be true or false, not {raw!r}")


def _whole(env: os._Environ[str] | dict[str, str], name: str, default: int) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise XrmError(f"{name} must be a whole number (0 or more), not {raw!r}")
    return int(raw)


def _positive(env: os._Environ[str] | dict[str, str], name: str, default: int) -> int:
    raw = (env.get(name) or "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise XrmError(f"{name} must be a whole number of at least 1, not {raw!r}")
    return value
