"""The web UI's admin pages (users, teams, roles and grants) and the API tokens page, over HTTP on a real database."""

from __future__ import annotations

import re
from typing import Any

import pytest
from conftest import log_in, make_user
from litestar.testing import TestClient


def _audit(ui: TestClient, action: str) -> list[dict[str, Any]]:
    async def read() -> list[dict[str, Any]]:
        async with ui.app.state.platform.db.connection() as connection:
            rows = await connection.fetch(
                "SELECT principal_name, details FROM xrm_sys.audit_log WHERE action = $1 ORDER BY id", action)
        return [dict(r) for r in rows]

    return ui.blocking_portal.call(read)  # type: ignore[no-any-return]


def _selected(html: str, name: str) -> str:
    """The selected option of a select (by name) in a page."""
    select = re.search(rf'<select[^>]*name="{re.escape(name)}"[^>]*>(.*?)</select>', html, re.DOTALL)
    assert select, name
    chosen = re.search(r'<option value="([^"]*)" selected', select.group(1))
    return chosen.group(1) if chosen else ""


def test_admin_creates_a_user_with_a_role_who_then_sees_what_it_allows(ui: TestClient, ui_admin: str) -> None:
    created = ui.post("/admin/roles/create", data={"csrf_token": ui_admin, "name": "reader", "description": "Reads accounts"})
    assert created.status_code == 200 and "Role reader created." in created.text
    saved = ui.post("/admin/roles/grants", data={"csrf_token": ui_admin, "role": "reader", "grant.account.read": "all"})
    assert saved.status_code == 200 and "1 grant changed." in saved.text
    assert _selected(saved.text, "grant.account.read") == "all" and _selected(saved.text, "grant.deal.read") == ""

    short = ui.post("/admin/users/create", data={"csrf_token": ui_admin, "name": "rita", "password": "short", "roles": "reader"})
    assert short.status_code == 422 and "at least 8 characters" in short.text and 'value="rita"' in short.text  # input kept
    made = ui.post("/admin/users/create", data={"csrf_token": ui_admin, "name": "rita", "password": "a-long-password",
                                                 "roles": ["reader"]})
    assert made.status_code == 200 and "User rita created." in made.text
    row = re.search(r"<tr>\s*<th scope=\"row\">rita.*?</tr>", made.text, re.DOTALL).group(0)  # type: ignore[union-attr]
    assert '<span class="badge">reader</span>' in row
    # Audited as the admin: the role and grant by SecurityService, the user by the page.
    assert [(e["principal_name"], e["details"]["role"]) for e in _audit(ui, "security.grant")] == [("admin", "reader")]
    assert [e["principal_name"] for e in _audit(ui, "security.role_created")] == ["admin"]
    assert [(e["principal_name"], e["details"]["user"]) for e in _audit(ui, "auth.user_created")][-1] == ("admin", "rita")

    log_in(ui, "rita")
    home = ui.get("/").text
    assert 'href="/e/account"' in home and 'href="/e/deal"' not in home
    assert ui.get("/e/deal").status_code == 403
    assert ui.get("/admin/users").status_code == 403


def test_roles_given_and_taken_on_the_users_page(ui: TestClient, ui_admin: str) -> None:
    make_user(ui, "bea", [])
    given = ui.post("/admin/users/grant-role", data={"csrf_token": ui_admin, "user": "bea", "role": "sales"})
    assert given.status_code == 200 and "bea now holds the role sales." in given.text
    unknown = ui.post("/admin/users/grant-role", data={"csrf_token": ui_admin, "user": "bea", "role": "wizard"})
    assert unknown.status_code == 422 and "No role named" in unknown.text
    taken = ui.post("/admin/users/revoke-role", data={"csrf_token": ui_admin, "user": "bea", "role": "sales"})
    assert taken.status_code == 200 and "bea no longer holds the role sales." in taken.text
    assert [e["principal_name"] for e in _audit(ui, "security.role_granted") + _audit(ui, "security.role_revoked")] == ["admin", "admin"]


def test_a_grants_matrix_change_takes_effect(ui: TestClient, ui_admin: str) -> None:
    make_user(ui, "anna", ["sales"])
    matrix = ui.get("/admin/roles?role=sales").text
    assert _selected(matrix, "grant.deal.read") == "team_tree" and _selected(matrix, "grant.*.read") == ""
    assert 'name="field.contact.birthday"' in matrix  # a sensitive field

    no_deals = ui.post("/admin/roles/grants", data={"csrf_token": ui_admin, "role": "sales", "grant.deal.read": "none",
                                                    "grant.deal.update": "team"})  # unchanged cell: not a change
    assert no_deals.status_code == 200 and "1 grant changed." in no_deals.text
    birthday = ui.post("/admin/roles/field-grants", data={"csrf_token": ui_admin, "role": "sales", "field.contact.birthday": "read"})
    assert birthday.status_code == 200 and "1 field grant changed." in birthday.text
    assert _selected(birthday.text, "field.contact.birthday") == "read"
    assert [e["principal_name"] for e in _audit(ui, "security.field_grant")] == ["admin"]

    log_in(ui, "anna")
    assert ui.get("/e/deal").status_code == 403
    assert 'name="birthday"' in ui.get("/e/contact/new").text  # readable now (not changeable: shown read-only)

    admin = log_in(ui, "admin")
    back = ui.post("/admin/roles/grants", data={"csrf_token": admin, "role": "sales", "grant.deal.read": ""})  # not set
    assert "1 grant changed." in back.text and _selected(back.text, "grant.deal.read") == ""
    assert [e["details"] for e in _audit(ui, "security.revoke")] == [{"role": "sales", "entity": "deal", "action": "read"}]
    log_in(ui, "anna")
    assert ui.get("/e/deal").status_code == 403  # not set and no * grant: none
    admin = log_in(ui, "admin")
    ui.post("/admin/roles/grants", data={"csrf_token": admin, "role": "sales", "grant.*.read": "all"})
    log_in(ui, "anna")
    assert ui.get("/e/deal").status_code == 200  # the * grant reaches deals again

    admin = log_in(ui, "admin")
    locked = ui.post("/admin/roles/grants", data={"csrf_token": admin, "role": "admin", "grant.deal.read": "none"})
    assert locked.status_code == 422 and "cannot change" in locked.text
    assert "its grants cannot change" in ui.get("/admin/roles?role=admin").text  # no matrix form for admin
    held = ui.post("/admin/roles/delete", data={"csrf_token": admin, "role": "sales"})
    assert held.status_code == 409


def test_teams_create_move_members_and_a_refused_delete(ui: TestClient, ui_admin: str) -> None:
    make_user(ui, "anna", ["sales"])
    for name, parent in (("Company", ""), ("Sales", "Company"), ("North", "")):
        response = ui.post("/admin/teams/create", data={"csrf_token": ui_admin, "name": name, "parent": parent})
        assert response.status_code == 200 and f"Team {name} created." in response.text
    moved = ui.post("/admin/teams/move", data={"csrf_token": ui_admin, "team": "North", "parent": "Sales"})
    assert "Team North is now below Sales." in moved.text
    cycle = ui.post("/admin/teams/move", data={"csrf_token": ui_admin, "team": "Company", "parent": "North"})
    assert cycle.status_code == 422 and "cycle" in cycle.text
    added = ui.post("/admin/teams/add-member", data={"csrf_token": ui_admin, "team": "Sales", "user": "anna"})
    assert "anna is now a member of Sales." in added.text
    assert re.search(r"<th scope=\"row\">anna</th>.*?<td>Sales</td>", ui.get("/admin/users").text, re.DOTALL)

    platform = ui.app.state.platform
    created = ui.post("/e/account/new", data={"csrf_token": ui_admin, "name": "Owned by North"}, follow_redirects=False)
    record_id = created.headers["location"].rsplit("/", 1)[1]
    ui.blocking_portal.call(lambda: platform.security().assign("account", record_id, team="North"))
    refused = ui.post("/admin/teams/delete", data={"csrf_token": ui_admin, "team": "North"})
    assert refused.status_code == 409
    assert "Team &#39;North&#39; still owns records (1 account); give them another owner first" in refused.text
    assert "<strong>North</strong>" in refused.text  # still there
    parent = ui.post("/admin/teams/delete", data={"csrf_token": ui_admin, "team": "Company"})
    assert parent.status_code == 409 and "has sub-teams" in parent.text

    removed = ui.post("/admin/teams/remove-member", data={"csrf_token": ui_admin, "team": "Sales", "user": "anna"})
    assert "anna is no longer a member of Sales." in removed.text
    ui.blocking_portal.call(lambda: platform.security().assign("account", record_id, user="admin"))
    gone = ui.post("/admin/teams/delete", data={"csrf_token": ui_admin, "team": "North"})
    assert gone.status_code == 200 and "Team North deleted." in gone.text and "<strong>North</strong>" not in gone.text
    assert [e["principal_name"] for e in _audit(ui, "security.team_deleted")] == ["admin"]


def test_an_admin_unlocks_a_locked_login(ui: TestClient, ui_admin: str) -> None:
    make_user(ui, "carl", ["sales"])
    for _ in range(5):
        ui.post("/login", data={"name": "carl", "password": "wrong-password", "next": "/"})
    admin = log_in(ui, "admin")
    users = ui.get("/admin/users").text
    row = re.search(r"<th scope=\"row\">carl</th>.*?</tr>", users, re.DOTALL).group(0)  # type: ignore[union-attr]
    assert "locked until" in row and 'action="/admin/users/unlock"' in row
    unlocked = ui.post("/admin/users/unlock", data={"csrf_token": admin, "user": "carl"})
    assert unlocked.status_code == 200 and "The login of carl is unlocked." in unlocked.text
    assert [(e["principal_name"], e["details"]["user"]) for e in _audit(ui, "auth.unlocked")] == [("admin", "carl")]
    log_in(ui, "carl")


ADMIN_PAGES = ["/admin/users", "/admin/teams", "/admin/roles"]
ADMIN_POSTS = {
    "/admin/users/create": {"name": "mallory", "password": "a-long-password", "roles": "admin"},
    "/admin/users/grant-role": {"user": "anna", "role": "admin"},
    "/admin/users/revoke-role": {"user": "anna", "role": "sales"},
    "/admin/users/unlock": {"user": "anna"},
    "/admin/teams/create": {"name": "Evil"},
    "/admin/teams/move": {"team": "Sales", "parent": ""},
    "/admin/teams/delete": {"team": "Sales"},
    "/admin/teams/add-member": {"team": "Sales", "user": "anna"},
    "/admin/teams/remove-member": {"team": "Sales", "user": "anna"},
    "/admin/roles/create": {"name": "evil"},
    "/admin/roles/delete": {"role": "service"},
    "/admin/roles/grants": {"role": "sales", "grant.*.read": "all"},
    "/admin/roles/field-grants": {"role": "sales", "field.contact.birthday": "update"},
}


def test_admin_pages_are_for_admins_only(ui: TestClient) -> None:
    make_user(ui, "anna", ["sales"])
    ui.blocking_portal.call(lambda: ui.app.state.platform.security().create_team("Sales"))
    token = log_in(ui, "anna")
    for url in ADMIN_PAGES:
        assert ui.get(url).status_code == 403, url
    for url, data in ADMIN_POSTS.items():
        assert ui.post(url, data={"csrf_token": token, **data}).status_code == 403, url
    assert "Users and permissions" not in ui.get("/").text  # the menu does not offer them
    assert _audit(ui, "security.role_granted") == []
    assert [e["principal_name"] for e in _audit(ui, "auth.user_created")] == ["system"]  # only the test's own user


def test_every_admin_and_token_post_needs_the_csrf_token(ui: TestClient, ui_admin: str) -> None:
    make_user(ui, "anna", ["sales"])
    ui.post("/admin/teams/create", data={"csrf_token": ui_admin, "name": "Sales"})
    ui.post("/account/tokens/create", data={"csrf_token": ui_admin, "label": "mine"})
    token_id = re.search(r'name="token_id" value="([^"]+)"', ui.get("/account/tokens").text).group(1)  # type: ignore[union-attr]
    posts = {**ADMIN_POSTS, "/account/tokens/create": {"label": "forged"}, "/account/tokens/revoke": {"token_id": token_id}}
    for url, data in posts.items():
        for token in (None, "wrong-token"):
            body = dict(data, **({"csrf_token": token} if token else {}))
            assert ui.post(url, data=body).status_code == 403, (url, token)
    assert "forged" not in ui.get("/account/tokens").text and ">active<" in ui.get("/account/tokens").text
    assert "mallory" not in ui.get("/admin/users").text


# -- API tokens -----------------------------------------------------------------------
def _new_token(ui: TestClient, csrf_token: str, label: str, read_only: bool = False) -> tuple[str, str]:
    """Create a token on the page; (token, page html)."""
    data = {"csrf_token": csrf_token, "label": label, **({"read_only": "1"} if read_only else {})}
    response = ui.post("/account/tokens/create", data=data)
    assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
    token = re.search(r'id="new-token-value" type="text" readonly value="(xrm_[^"]+)"', response.text).group(1)  # type: ignore[union-attr]
    return token, response.text


def test_a_token_is_shown_once_works_on_the_api_and_revoking_stops_it(ui: TestClient) -> None:
    make_user(ui, "anna", ["sales"])
    session = log_in(ui, "anna")
    token, page = _new_token(ui, session, "my <script> tool")
    assert page.count(token) == 1 and "shown only this once" in page and "data-copy" in page
    assert "my &lt;script&gt; tool" in page and "<script> tool" not in page
    listing = ui.get("/account/tokens").text
    assert token not in listing and "my &lt;script&gt; tool" in listing and "read and write" in listing and "never" in listing
    # The token never reaches the audit trail.
    entry = _audit(ui, "auth.token_created")
    assert entry[0]["principal_name"] == "anna" and token not in str(entry)

    api = ui  # a request with a bearer token is that token's, whatever cookie it carries
    bearer = {"Authorization": f"Bearer {token}"}
    assert api.get("/api/v1/account", headers=bearer).status_code == 200
    assert api.post("/api/v1/account", json={"name": "Via token"}, headers=bearer).status_code == 201
    used = re.search(r"my &lt;script&gt; tool</td>.*?</tr>", ui.get("/account/tokens").text, re.DOTALL).group(0)  # type: ignore[union-attr]
    assert "never" not in used  # "last used" is set now

    reader, _ = _new_token(ui, session, "reporting", read_only=True)
    assert "read only" in ui.get("/account/tokens").text
    read_header = {"Authorization": f"Bearer {reader}"}
    assert api.get("/api/v1/account", headers=read_header).status_code == 200
    assert api.post("/api/v1/account", json={"name": "Nope"}, headers=read_header).status_code == 403

    from xrm.auth import UserService

    infos = ui.blocking_portal.call(UserService(ui.app.state.platform.db).list_tokens, "anna")
    first = next(t for t in infos if t.label == "my <script> tool")
    revoked = ui.post("/account/tokens/revoke", data={"csrf_token": session, "token_id": str(first.id)})
    assert revoked.status_code == 200 and "is revoked" in revoked.text and "revoked " in revoked.text
    assert api.get("/api/v1/account", headers=bearer).status_code == 401
    assert api.get("/api/v1/account", headers=read_header).status_code == 200  # the other one still works
    assert [e["principal_name"] for e in _audit(ui, "auth.token_revoked")] == ["anna"]


def test_a_user_cannot_revoke_another_users_token_but_an_admin_can(ui: TestClient, ui_admin: str) -> None:
    admin_token, _ = _new_token(ui, ui_admin, "admin tool")
    make_user(ui, "anna", ["sales"])
    make_user(ui, "ben", ["service"])
    anna = log_in(ui, "anna")
    anna_token, _ = _new_token(ui, anna, "anna tool")
    from xrm.auth import UserService

    tokens = ui.blocking_portal.call(UserService(ui.app.state.platform.db).list_tokens, None)
    anna_id = next(t.id for t in tokens if t.user == "anna")
    admin_id = next(t.id for t in tokens if t.user == "admin")

    ben = log_in(ui, "ben")
    page = ui.get("/account/tokens").text
    assert "anna tool" not in page and "admin tool" not in page and "Tokens of other users" not in page
    for token_id in (anna_id, admin_id, "not-a-uuid"):
        assert ui.post("/account/tokens/revoke", data={"csrf_token": ben, "token_id": str(token_id)}).status_code == 404
    api = ui  # the bearer token wins over the session cookie
    assert api.get("/api/v1/account", headers={"Authorization": f"Bearer {anna_token}"}).status_code == 200
    assert api.get("/api/v1/account", headers={"Authorization": f"Bearer {admin_token}"}).status_code == 200

    admin = log_in(ui, "admin")
    page = ui.get("/account/tokens").text
    assert "Tokens of other users" in page and "anna tool" in page
    revoked = ui.post("/account/tokens/revoke", data={"csrf_token": admin, "token_id": str(anna_id)})
    assert revoked.status_code == 200
    assert api.get("/api/v1/account", headers={"Authorization": f"Bearer {anna_token}"}).status_code == 401
    assert [(e["principal_name"], e["details"]["user"]) for e in _audit(ui, "auth.token_revoked")] == [("admin", "anna")]


@pytest.mark.parametrize("url", ["/account/tokens", *ADMIN_PAGES])
def test_pages_need_a_login(ui: TestClient, url: str) -> None:
    response = ui.get(url, follow_redirects=False)
    assert response.status_code == 303 and response.headers["location"].startswith("/login?next=")


def test_admin_and_token_pages_in_german(ui: TestClient, ui_admin: str) -> None:
    ui.post("/language", data={"csrf_token": ui_admin, "language": "de", "next": "/"})
    assert "Neuer Benutzer" in ui.get("/admin/users").text
    roles = ui.get("/admin/roles?role=sales").text
    assert "Alle Entitäten (*)" in roles and ">Team und Unterteams<" in roles and ">anlegen<" in roles
    assert "Noch keine Teams." in ui.get("/admin/teams").text
    created = ui.post("/account/tokens/create", data={"csrf_token": ui_admin, "label": "x"}).text
    assert "Ihr neues Token" in created and "nur dieses eine Mal" in created
    assert "Firmen importieren" in ui.get("/e/account/import").text
