"""Web sessions and login protection on a real database: lock-out, cookie flags, CSRF, logout, expiry."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, bearer, ok, problem
from litestar.testing import TestClient
from xrm.audit import AuditLog
from xrm.auth import UserService, _after_failure
from xrm.settings import Settings

PASSWORD = "a-long-password"


# -- helpers ---------------------------------------------------------------------
def run(api: TestClient, make: Any) -> Any:
    """Run `await make(platform)` on the app's event loop."""
    platform = api.app.state.platform
    return api.blocking_portal.call(lambda: make(platform))


def sql(api: TestClient, statement: str, *args: Any) -> Any:
    async def go(platform: Any) -> Any:
        async with platform.db.connection() as connection:
            return await connection.fetch(statement, *args)

    return run(api, go)


def make_user(api: TestClient, name: str, roles: list[str] | None = None) -> None:
    run(api, lambda platform: UserService(platform.db).create_user(name, PASSWORD, roles or []))


def audit(api: TestClient, **filters: Any) -> list[Any]:
    return run(api, lambda platform: AuditLog(platform.db).search(**filters))  # type: ignore[no-any-return]


def set_cookie(response: Any) -> SimpleCookie:
    """The response's Set-Cookie for xrm_session, parsed (flags included)."""
    headers = [value for key, value in response.headers.multi_items() if key.lower() == "set-cookie"]
    (header,) = [h for h in headers if h.startswith("xrm_session=")]
    cookie = SimpleCookie()
    cookie.load(header)
    return cookie


def flags(response: Any) -> dict[str, Any]:
    headers = [value for key, value in response.headers.multi_items() if key.lower() == "set-cookie"]
    (header,) = [h for h in headers if h.startswith("xrm_session=")]
    parts = [p.strip() for p in header.split(";")]
    return {p.split("=", 1)[0].lower(): (p.split("=", 1)[1] if "=" in p else True) for p in parts[1:]} | {"value": parts[0].split("=", 1)[1]}


class Session:
    """A logged-in browser: the cookie and CSRF token of one login."""

    def __init__(self, api: TestClient, name: str, password: str = PASSWORD, url: str = "/api/v1/auth/login") -> None:
        response = api.post(url, json={"name": name, "password": password})
        body = ok(response)
        self.api = api
        self.token = flags(response)["value"]
        self.csrf = body["csrf_token"]
        self.user = body["user"]
        api.cookies.clear()  # every request below names its cookie itself

    def headers(self, csrf: bool | str = True) -> dict[str, str]:
        headers = {"Cookie": f"xrm_session={self.token}"}
        if csrf:
            headers["X-CSRF-Token"] = self.csrf if csrf is True else csrf
        return headers

    def request(self, method: str, path: str, *, csrf: bool | str = True, **kwargs: Any) -> Any:
        headers = {**self.headers(csrf), **kwargs.pop("headers", {})}
        return self.api.request(method, path, headers=headers, **kwargs)


def login(api: TestClient, name: str, password: str, **headers: str) -> Any:
    response = api.post("/api/v1/auth/login", json={"name": name, "password": password}, headers=headers)
    api.cookies.clear()
    return response


@pytest.fixture
def admin(api: TestClient) -> dict[str, str]:
    return bearer(api, "admin", ["admin"])


# -- lock-out --------------------------------------------------------------------
def test_five_failed_logins_lock_the_name_even_for_the_right_password(api: TestClient) -> None:
    make_user(api, "anna", ["sales"])
    for _ in range(4):
        body = problem(login(api, "anna", "wrong-password"), 401)
        assert body["title"] == "Login failed" and body["detail"] == "Wrong user name or password"
    locked = login(api, "anna", "wrong-password")  # the 5th failure locks
    body = problem(locked, 429)
    assert "locked until" in body["detail"] and "xrm user unlock" in body["detail"]
    until = datetime.fromisoformat(body["locked_until"])
    assert timedelta(seconds=890) < until - datetime.now(timezone.utc) <= timedelta(seconds=900)
    assert 890 <= int(locked.headers["retry-after"]) <= 900

    refused = problem(login(api, "anna", PASSWORD), 429)  # the right password does not help
    assert datetime.fromisoformat(refused["locked_until"]) == until  # retrying does not extend the lock
    (state,) = sql(api, "SELECT failed_logins, locked_until FROM xrm_sys.app_user WHERE name = 'anna'")
    assert state["failed_logins"] == 5 and state["locked_until"] == until  # in the database: every process sees it

    entries = [(e.action, (e.details or {}).get("reason")) for e in reversed(audit(api, user="anna"))]
    assert entries == [("auth.login_failed", "wrong password")] * 5 + [("auth.locked", None), ("auth.login_failed", "locked")]
    (lock,) = audit(api, action="auth.locked")
    assert lock.details["failed_logins"] == 5 and lock.principal_name == "anna" and lock.principal_id is not None

    # The lock runs out: the right password works again, and the count starts over.
    sql(api, "UPDATE xrm_sys.app_user SET locked_until = now() - interval '1 second' WHERE name = 'anna'")
    ok(login(api, "anna", PASSWORD))
    (state,) = sql(api, "SELECT failed_logins, locked_until FROM xrm_sys.app_user WHERE name = 'anna'")
    assert state["failed_logins"] == 0 and state["locked_until"] is None


def test_a_successful_login_resets_the_count(api: TestClient) -> None:
    make_user(api, "anna")
    for _ in range(4):
        problem(login(api, "anna", "wrong-password"), 401)
    ok(login(api, "anna", PASSWORD))
    for _ in range(4):
        problem(login(api, "anna", "wrong-password"), 401)
    ok(login(api, "anna", PASSWORD))


def test_unknown_names_fail_and_lock_exactly_like_users(api: TestClient) -> None:
    make_user(api, "anna")
    known = [login(api, "anna", "wrong-password") for _ in range(6)]
    unknown = [login(api, "nobody", "wrong-password") for _ in range(6)]
    def shape(response: Any) -> tuple[int, dict[str, Any]]:
        body = {k: v for k, v in response.json().items() if k != "locked_until"}
        body["detail"] = re.sub(r"\d{4}-\d\d-\d\dT[\d:]+Z", "<time>", body["detail"])
        return response.status_code, body

    assert [shape(r) for r in known] == [shape(r) for r in unknown]
    assert [r.status_code for r in unknown] == [401] * 4 + [429, 429]
    (row,) = sql(api, "SELECT failed_logins, locked_until IS NOT NULL AS locked FROM xrm_sys.login_failure WHERE name = 'nobody'")
    assert row["failed_logins"] == 5 and row["locked"]
    (entry,) = audit(api, action="auth.locked", user="nobody")
    assert entry.principal_id is None


def test_spraying_one_guess_per_name_locks_the_address(api: TestClient) -> None:
    """Password spraying (one wrong password per name, from one address) is stopped at 20 failures."""
    make_user(api, "anna")
    sprayed = [login(api, f"user{i}", "Winter2026!") for i in range(20)]
    assert [r.status_code for r in sprayed] == [401] * 19 + [429]
    locked = problem(login(api, "anna", PASSWORD), 429)  # even the right password, from this address
    assert "from this address" in locked["detail"] and locked["locked_until"]
    (entry,) = audit(api, action="auth.address_locked")
    assert entry.details["address"] == "testclient" and entry.details["failed_logins"] == 20
    assert audit(api, action="auth.login_failed", user="anna")[0].details["reason"] == "address locked"
    # No name was locked: anna logs in from elsewhere.
    platform = api.app.state.platform
    other = run(api, lambda p: UserService(p.db, platform.settings).authenticate("anna", PASSWORD, address="10.0.0.7"))
    assert other is not None and other.name == "anna"


def test_the_address_limit_can_be_turned_off(database_uri: str, tmp_path: Path) -> None:
    from xrm.app import create_app

    settings = Settings.from_env({"XRM_DATABASE_URL": database_uri, "XRM_DATA_DIR": str(tmp_path), "XRM_SCHEMA_DIR": str(tmp_path),
                                  "XRM_LOGIN_MAX_FAILURES_PER_ADDRESS": "0"})
    assert settings.login_max_failures_per_address == 0
    with TestClient(app=create_app(settings)) as client:
        assert [login(client, f"user{i}", "guess").status_code for i in range(25)] == [401] * 25


def test_failures_far_apart_do_not_add_up() -> None:
    now = datetime.now(timezone.utc)
    period = timedelta(minutes=15)
    assert _after_failure(4, now - timedelta(minutes=1), None, now, 5, period) == (5, now + period)
    assert _after_failure(4, now - timedelta(minutes=16), None, now, 5, period) == (1, None)
    assert _after_failure(5, now, now + period, now, 5, period) == (5, now + period)  # locked: unchanged
    assert _after_failure(5, now - period, now - timedelta(seconds=1), now, 5, period) == (1, None)  # lock ran out


def test_admin_unlocks_from_the_command_line(api: TestClient, xrm_cli: Any) -> None:
    make_user(api, "anna")
    for _ in range(5):
        login(api, "anna", "wrong-password")
    problem(login(api, "anna", PASSWORD), 429)
    assert "Unlocked anna" in xrm_cli("user", "unlock", "anna")
    ok(login(api, "anna", PASSWORD))
    assert "was not locked" in xrm_cli("user", "unlock", "anna")
    assert "No user named 'ghost'" in xrm_cli("user", "unlock", "ghost", code=1)
    (entry, _) = audit(api, action="auth.unlocked")
    assert entry.details == {"user": "anna", "was_locked": False}


def test_lockout_settings_come_from_the_environment() -> None:
    settings = Settings.from_env({"XRM_LOGIN_MAX_FAILURES": "3", "XRM_LOGIN_LOCKOUT_SECONDS": "60", "XRM_COOKIE_SECURE": "TRUE"})
    assert (settings.login_max_failures, settings.login_lockout_seconds, settings.cookie_secure) == (3, 60, "true")
    defaults = Settings.from_env({})
    assert (defaults.login_max_failures, defaults.login_lockout_seconds, defaults.cookie_secure) == (5, 900, "auto")
    from xrm.errors import XrmError

    for bad in ({"XRM_LOGIN_MAX_FAILURES": "0"}, {"XRM_LOGIN_LOCKOUT_SECONDS": "soon"}, {"XRM_COOKIE_SECURE": "maybe"}):
        with pytest.raises(XrmError):
            Settings.from_env(bad)


# -- the login and its cookie ------------------------------------------------------
def test_login_sets_an_http_only_lax_cookie_and_returns_the_csrf_token(api: TestClient) -> None:
    make_user(api, "anna", ["sales"])
    response = login(api, "anna", PASSWORD)
    body = ok(response)
    assert body["user"]["name"] == "anna" and body["user"]["roles"] == ["sales"] and len(body["csrf_token"]) >= 40
    assert response.headers["cache-control"] == "no-store"
    cookie = flags(response)
    assert cookie["httponly"] is True and cookie["samesite"].lower() == "lax" and cookie["path"] == "/"
    assert "max-age" not in cookie and "expires" not in cookie  # a browser-session cookie
    assert cookie["secure"] is True  # testserver.local is no loopback host: Secure even over http
    (row,) = sql(api, "SELECT id, user_agent, expires_at - created_at AS lifetime FROM xrm_sys.web_session")
    assert row["lifetime"] == timedelta(hours=12) and row["id"] != cookie["value"].encode()  # only a hash is stored
    assert set_cookie(response)["xrm_session"].value == cookie["value"]


@pytest.mark.parametrize(("url", "headers", "secure"), [
    ("http://localhost/api/v1/auth/login", {}, False),                     # local development over plain http
    ("http://127.0.0.1:8000/api/v1/auth/login", {}, False),
    ("https://127.0.0.1/api/v1/auth/login", {}, True),                      # https
    ("http://localhost/api/v1/auth/login", {"X-Forwarded-Proto": "https"}, True),  # behind a TLS proxy
    ("http://localhost/api/v1/auth/login", {"Origin": "https://crm.example.com", "Sec-Fetch-Site": "same-origin"}, True),
    ("http://crm.example.com/api/v1/auth/login", {}, True),                 # any other host
])
def test_secure_flag_unless_plain_local_development(api: TestClient, url: str, headers: dict[str, str], secure: bool) -> None:
    make_user(api, "anna")
    response = api.post(url, json={"name": "anna", "password": PASSWORD}, headers=headers)
    ok(response)
    assert flags(response).get("secure", False) is secure


@pytest.mark.parametrize(("mode", "url", "secure"), [
    ("true", "http://localhost/api/v1/auth/login", True),
    ("false", "https://crm.example.com/api/v1/auth/login", False),
])
def test_the_secure_setting_overrides(database_uri: str, tmp_path: Path, mode: str, url: str, secure: bool) -> None:
    from xrm.app import create_app

    settings = Settings(data_dir=tmp_path, database_url=database_uri, schema_dir=ROOT / "entity_schemas", secret_key=None,
                        cookie_secure=mode)
    with TestClient(app=create_app(settings)) as client:
        make_user(client, "anna")
        response = client.post(url, json={"name": "anna", "password": PASSWORD})
        ok(response)
        assert flags(response).get("secure", False) is secure


def test_login_with_a_form_and_bad_requests(api: TestClient) -> None:
    make_user(api, "anna")
    ok(api.post("/api/v1/auth/login", data={"name": "anna", "password": PASSWORD}))
    body = problem(api.post("/api/v1/auth/login", json={"name": "anna"}), 422)
    assert body["errors"][0]["pointer"] == ""
    problem(api.post("/api/v1/auth/login", json={"name": 3, "password": PASSWORD}), 422)
    problem(api.post("/api/v1/auth/login", content=b"name=anna", headers={"Content-Type": "text/plain"}), 400)
    problem(api.post("/api/v1/auth/login", content=b"{", headers={"Content-Type": "application/json"}), 400)


def test_login_from_another_site_is_refused(api: TestClient) -> None:
    make_user(api, "anna")
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                    {"Origin": "https://evil.example"}, {"Origin": "null"}):
        body = problem(login(api, "anna", PASSWORD, **headers), 403)
        assert "another" in body["detail"]
    ok(login(api, "anna", PASSWORD, **{"Sec-Fetch-Site": "same-origin", "Origin": "http://testserver.local"}))
    ok(login(api, "anna", PASSWORD, Origin="http://testserver.local"))
    assert not audit(api, action="auth.login_failed")  # refused before the password was looked at


def test_a_new_login_ends_the_session_the_browser_had(api: TestClient) -> None:
    make_user(api, "anna")
    first = Session(api, "anna")
    response = api.post("/api/v1/auth/login", json={"name": "anna", "password": PASSWORD}, headers=first.headers(csrf=False))
    ok(response)
    problem(first.request("GET", "/api/v1/auth/me"), 401)


# -- the session authenticates the API -----------------------------------------------
def test_the_session_cookie_reads_records_as_the_user(api: TestClient, admin: dict[str, str]) -> None:
    ok(api.post("/api/v1/account", headers=admin, json={"name": "ACME GmbH"}), 201)
    make_user(api, "anna", ["sales"])
    make_user(api, "nobody", [])
    anna = Session(api, "anna")
    (record,) = ok(anna.request("GET", "/api/v1/account", csrf=False))["records"]
    assert record["name"] == "ACME GmbH"
    me = ok(anna.request("GET", "/api/v1/auth/me", csrf=False))
    assert me["auth"] == "session" and me["user"]["name"] == "anna" and me["csrf_token"] == anna.csrf
    assert me["session"]["idle_expires_at"] <= me["session"]["expires_at"]
    nobody = Session(api, "nobody")
    problem(nobody.request("GET", "/api/v1/account", csrf=False), 403)  # the user's own permissions apply
    problem(api.get("/api/v1/account", headers={"Cookie": "xrm_session=not-a-session-token-at-all"}), 401)
    problem(api.get("/api/v1/account"), 401)


def test_writes_with_the_cookie_need_the_csrf_token(api: TestClient, admin: dict[str, str]) -> None:
    make_user(api, "anna", ["admin"])
    anna = Session(api, "anna")
    record = ok(api.post("/api/v1/account", headers=admin, json={"name": "ACME GmbH"}), 201)
    other = Session(api, "anna")  # another session of the same user: its token does not fit
    for csrf in (False, "wrong", other.csrf):
        for method, path, body in (
            ("POST", "/api/v1/account", {"name": "Forged"}),
            ("PATCH", f"/api/v1/account/{record['id']}", {"name": "Forged"}),
            ("PUT", f"/api/v1/account/{record['id']}", {"name": "Forged"}),
            ("DELETE", f"/api/v1/account/{record['id']}", None),
            ("POST", "/api/v1/admin/teams", {"name": "Forged"}),
            ("POST", "/api/v1/auth/logout-all", None),
        ):
            response = anna.request(method, path, csrf=csrf, json=body)
            assert problem(response, 403)["title"] == "CSRF token missing or invalid", (method, path)
    listed = ok(api.get("/api/v1/account?include_deleted=true", headers=admin))["records"]
    assert [(r["name"], r["version"], r["deleted_at"]) for r in listed] == [("ACME GmbH", 1, None)]  # nothing changed
    assert ok(api.get("/api/v1/admin/teams", headers=admin))["teams"] == []
    ok(anna.request("GET", "/api/v1/auth/me", csrf=False))  # and every session is still there

    created = ok(anna.request("POST", "/api/v1/account", json={"name": "Beta AG"}), 201)
    assert created["created_by"] == anna.user["id"]
    changed = ok(anna.request("PATCH", f"/api/v1/account/{record['id']}", json={"name": "ACME SE"}))
    assert changed["name"] == "ACME SE" and changed["updated_by"] == anna.user["id"]
    ok(anna.request("DELETE", f"/api/v1/account/{created['id']}"))
    # HTML forms send the token as the field csrf_token.
    ok(anna.request("POST", "/api/v1/auth/logout", csrf=False, data={"csrf_token": anna.csrf}))
    problem(anna.request("GET", "/api/v1/auth/me", csrf=False), 401)


def test_bearer_requests_need_no_csrf_token(api: TestClient, admin: dict[str, str]) -> None:
    make_user(api, "anna", ["sales"])
    anna = Session(api, "anna")
    ok(api.post("/api/v1/account", headers=admin, json={"name": "ACME GmbH"}), 201)
    # A bearer token wins over a cookie sent alongside; no CSRF token is asked for.
    created = ok(api.post("/api/v1/account", headers={**admin, "Cookie": f"xrm_session={anna.token}"}, json={"name": "Beta AG"}), 201)
    (admin_user,) = sql(api, "SELECT id FROM xrm_sys.app_user WHERE name = 'admin'")
    assert created["created_by"] == str(admin_user["id"])
    me = ok(api.get("/api/v1/auth/me", headers=admin))
    assert me["auth"] == "token" and me["csrf_token"] is None and me["session"] is None
    problem(api.post("/api/v1/auth/logout", headers=admin), 401)  # a token has no session to log out of


# -- logout, logout everywhere, expiry ------------------------------------------------
def test_logout_ends_the_session_and_clears_the_cookie(api: TestClient) -> None:
    make_user(api, "anna", ["sales"])
    anna = Session(api, "anna")
    other = Session(api, "anna")
    problem(anna.request("POST", "/api/v1/auth/logout", csrf=False), 403)
    response = anna.request("POST", "/api/v1/auth/logout")
    assert ok(response) == {"logged_out": True}
    cleared = flags(response)
    assert cleared["value"] in ("", '""') and cleared["max-age"] == "0"
    problem(anna.request("GET", "/api/v1/account", csrf=False), 401)
    problem(anna.request("POST", "/api/v1/auth/logout"), 401)
    ok(other.request("GET", "/api/v1/account", csrf=False))  # only this session ended
    (entry,) = audit(api, action="auth.logout")
    assert entry.principal_name == "anna"


def test_logout_all_ends_every_session_of_the_user_but_not_tokens(api: TestClient) -> None:
    token_headers = bearer(api, "anna", ["sales"])
    make_user(api, "ben", ["sales"])
    first, second, third = (Session(api, "anna") for _ in range(3))
    ben = Session(api, "ben")
    assert ok(second.request("POST", "/api/v1/auth/logout-all")) == {"revoked_sessions": 3}
    for session in (first, second, third):
        problem(session.request("GET", "/api/v1/account", csrf=False), 401)
    ok(ben.request("GET", "/api/v1/account", csrf=False))  # other users keep theirs
    ok(api.get("/api/v1/account", headers=token_headers))  # API tokens stay valid
    fourth = Session(api, "anna")
    assert ok(api.post("/api/v1/auth/logout-all", headers=token_headers)) == {"revoked_sessions": 1}  # a token may end them too
    problem(fourth.request("GET", "/api/v1/account", csrf=False), 401)
    entries = audit(api, action="auth.logout_all")
    assert [e.details for e in entries] == [{"sessions": 1, "by": "token"}, {"sessions": 3, "by": "session"}]


def test_expired_and_idle_sessions_are_refused(api: TestClient) -> None:
    make_user(api, "anna", ["sales"])
    old, idle, fresh = Session(api, "anna"), Session(api, "anna"), Session(api, "anna")
    sql(api, "UPDATE xrm_sys.web_session SET expires_at = now() - interval '1 second' WHERE id = sha256($1::text::bytea)", old.token)
    sql(api, "UPDATE xrm_sys.web_session SET last_seen_at = now() - interval '61 minutes' WHERE id = sha256($1::text::bytea)", idle.token)
    for session in (old, idle):
        body = problem(session.request("GET", "/api/v1/account", csrf=False), 401)
        assert "session has ended" in body["detail"]
    ok(fresh.request("GET", "/api/v1/account", csrf=False))
    # Use keeps a session alive: last_seen_at moves (to the minute).
    sql(api, "UPDATE xrm_sys.web_session SET last_seen_at = now() - interval '59 minutes' WHERE id = sha256($1::text::bytea)", fresh.token)
    ok(fresh.request("GET", "/api/v1/account", csrf=False))
    (row,) = sql(api, "SELECT now() - last_seen_at AS ago FROM xrm_sys.web_session WHERE id = sha256($1::text::bytea)", fresh.token)
    assert row["ago"] < timedelta(seconds=5)


def test_a_disabled_user_loses_the_session(api: TestClient) -> None:
    make_user(api, "anna", ["sales"])
    anna = Session(api, "anna")
    sql(api, "UPDATE xrm_sys.app_user SET disabled_at = now() WHERE name = 'anna'")
    problem(anna.request("GET", "/api/v1/account", csrf=False), 401)


def test_admins_create_disable_and_enable_users_and_end_their_sessions(api: TestClient, admin: dict[str, str], xrm_cli: Any) -> None:
    created = ok(api.post("/api/v1/admin/users", headers=admin, json={"name": "bea", "password": PASSWORD, "roles": ["sales"]}), 201)
    assert created["name"] == "bea" and created["roles"] == ["sales"] and not created["disabled"]
    problem(api.post("/api/v1/admin/users", headers=admin, json={"name": "bea2", "password": "short"}), 422)
    problem(api.post("/api/v1/admin/users", headers=bearer(api, "carl", ["sales"]), json={"name": "x", "password": PASSWORD}), 403)
    bea = Session(api, "bea")
    raw, _ = run(api, lambda platform: UserService(platform.db).create_token("bea"))
    token = {"Authorization": f"Bearer {raw}"}  # bea's API token
    ok(bea.request("GET", "/api/v1/account", csrf=False))
    # Log out everywhere, by an admin: the session ends, the token stays.
    assert ok(api.post("/api/v1/admin/users/bea/logout-all", headers=admin)) == {"user": "bea", "sessions_ended": 1}
    problem(bea.request("GET", "/api/v1/account", csrf=False), 401)
    ok(api.get("/api/v1/account", headers=token))
    # Disabled: no login, no token.
    bea = Session(api, "bea")
    changed = ok(api.patch("/api/v1/admin/users/bea", headers=admin, json={"disabled": True}))
    assert changed["disabled"] and changed["disabled_at"]
    problem(bea.request("GET", "/api/v1/account", csrf=False), 401)
    problem(api.get("/api/v1/account", headers=token), 401)
    problem(login(api, "bea", PASSWORD), 401)
    assert [u["disabled"] for u in ok(api.get("/api/v1/admin/users", headers=admin))["users"] if u["name"] == "bea"] == [True]
    # Enabled again, from the command line.
    assert "Enabled bea" in xrm_cli("user", "enable", "bea")
    ok(api.get("/api/v1/account", headers=token))
    assert "bea\tsales\tactive" in xrm_cli("user", "list")
    assert "Disabled bea" in xrm_cli("user", "disable", "bea")
    problem(api.patch("/api/v1/admin/users/nobody", headers=admin, json={"disabled": True}), 404)
    actions = [e.action for e in audit(api, action="auth.user_disabled")] + [e.action for e in audit(api, action="auth.sessions_ended")]
    assert actions.count("auth.user_disabled") == 2 and "auth.sessions_ended" in actions


def test_openapi_lists_the_auth_operations(api: TestClient) -> None:
    spec = api.get("/api/openapi.json").json()
    assert spec["paths"]["/api/v1/auth/login"]["post"]["security"] == []
    for path in ("/api/v1/auth/logout", "/api/v1/auth/logout-all"):
        assert "post" in spec["paths"][path]
    assert "429" in spec["paths"]["/api/v1/auth/login"]["post"]["responses"]
    assert "get" in spec["paths"]["/api/v1/auth/me"]
