"""Bulk actions and saved views on the web UI's lists, over HTTP on a real database."""

from __future__ import annotations

import re
from typing import Any

import pytest
from litestar.testing import TestClient

from conftest import log_in, make_user


def new_deal(ui: TestClient, token: str, title: str, stage: str = "prospecting", **values: str) -> str:
    response = ui.post("/e/deal/new", data={"csrf_token": token, "title": title, "stage": stage, **values}, follow_redirects=False)
    assert response.status_code == 303, response.text
    return response.headers["location"].rsplit("/", 1)[1]  # type: ignore[no-any-return]


def row(ui: TestClient, record_id: str) -> Any:
    """The deal's row as stored (deleted or not), with its owner's name."""
    table = ui.app.state.platform.registry.get("deal").table

    async def read() -> Any:
        async with ui.app.state.platform.db.connection() as connection:
            return await connection.fetchrow(
                f"SELECT d.title, d.deleted_at, coalesce(u.name, t.name) AS owner FROM {table} d "
                "LEFT JOIN xrm_sys.app_user u ON u.id = d.owner_id LEFT JOIN xrm_sys.team t ON t.id = d.owner_id WHERE d.id = $1::uuid",
                record_id)

    return ui.blocking_portal.call(read)


@pytest.fixture
def team(ui: TestClient) -> None:
    """Team North: sales users sam and sid, service user sue; an admin outside it (log_in switches between them)."""
    security = ui.app.state.platform.security()
    ui.blocking_portal.call(security.create_team, "North")
    make_user(ui, "admin", ["admin"])
    for name, role in [("sam", "sales"), ("sid", "sales"), ("sue", "service")]:
        make_user(ui, name, [role])
        ui.blocking_portal.call(security.add_member, "North", name)


def bulk(ui: TestClient, token: str, ids: list[str], action: str, htmx: bool = True, **extra: str) -> Any:
    data: dict[str, Any] = {"csrf_token": token, "ids": ids, "action": action, **extra}
    return ui.post("/e/deal/bulk", data=data, headers={"HX-Request": "true"} if htmx else {})


def test_bulk_delete_is_all_or_nothing(ui: TestClient, team: None) -> None:
    sid = log_in(ui, "sid")
    theirs = new_deal(ui, sid, "Sid's deal")
    sam = log_in(ui, "sam")
    mine = [new_deal(ui, sam, f"Sam's deal {i}") for i in range(2)]
    listing = ui.get("/e/deal").text
    assert 'id="bulk-form"' in listing and "data-select-all" in listing
    assert f'name="ids" value="{mine[0]}" form="bulk-form"' in listing and f'value="{theirs}" form="bulk-form"' in listing
    assert 'value="delete"' in listing and 'value="assign"' in listing

    # Sales may delete their own deals only: with Sid's deal in the selection, nothing is deleted.
    refused = bulk(ui, sam, [*mine, theirs], "delete")
    assert refused.status_code == 403
    assert "Nothing was changed" in refused.text and "Sid&#39;s deal" in refused.text and "you may not delete it" in refused.text
    assert all(row(ui, r)["deleted_at"] is None for r in [*mine, theirs])
    assert "Sam&#39;s deal 0" in ui.get("/e/deal").text

    done = bulk(ui, sam, mine, "delete")
    assert done.status_code == 200 and "2 records deleted." in done.text and done.headers["HX-Trigger"] == "xrm-list-changed"
    assert all(row(ui, r)["deleted_at"] is not None for r in mine) and row(ui, theirs)["deleted_at"] is None
    listing = ui.get("/e/deal").text
    assert "Sam&#39;s deal" not in listing and "Sid&#39;s deal" in listing
    # The deleted records keep their history (the audit trail of the one door).
    assert "deleted" in ui.get(f"/e/deal/{mine[0]}").text

    # Without JavaScript: a page with the message and the way back to the list.
    nothing = bulk(ui, sam, [], "delete", htmx=False, back="stage=won&after=x")
    assert nothing.status_code == 422 and "Select at least one record first." in nothing.text
    assert 'href="/e/deal?stage=won"' in nothing.text


def test_bulk_assign_gives_every_record_the_new_owner_or_none(ui: TestClient, team: None) -> None:
    admin = log_in(ui, "admin")
    outside = new_deal(ui, admin, "Admin's deal")  # not in team North: sam cannot see it
    sam = log_in(ui, "sam")
    mine = [new_deal(ui, sam, f"Deal {i}") for i in range(3)]
    unknown = bulk(ui, sam, mine, "assign", owner="nobody", owner_kind="user")
    assert unknown.status_code == 422 and "There is no user named “nobody”." in unknown.text
    forged = bulk(ui, sam, [*mine, outside], "assign", owner="sid", owner_kind="user")
    assert forged.status_code == 404 and "Nothing was changed" in forged.text and "you may not see it" in forged.text
    assert [row(ui, r)["owner"] for r in mine] == ["sam"] * 3 and row(ui, outside)["owner"] == "admin"

    to_team = bulk(ui, sam, mine[:2], "assign", owner="North", owner_kind="team")
    assert to_team.status_code == 200 and "2 records now belong to North." in to_team.text
    assert [row(ui, r)["owner"] for r in mine] == ["North", "North", "sam"]
    to_user = bulk(ui, sam, [mine[2]], "assign", owner="sid", owner_kind="user")
    assert to_user.status_code == 200 and "1 record now belongs to sid." in to_user.text and row(ui, mine[2])["owner"] == "sid"


def test_bulk_controls_only_for_users_with_the_action(ui: TestClient, team: None) -> None:
    sam = log_in(ui, "sam")
    deal = new_deal(ui, sam, "Visible deal")
    log_in(ui, "sam")
    accounts = ui.get("/e/account").text  # sales: assign own accounts, but no delete
    assert 'value="assign"' in accounts and 'value="delete"' not in accounts
    sue = log_in(ui, "sue")  # service reads the team's deals, nothing more
    listing = ui.get("/e/deal").text
    assert "Visible deal" in listing and 'id="bulk-form"' not in listing and 'name="ids"' not in listing and "data-select-all" not in listing
    forged = bulk(ui, sue, [deal], "delete")
    assert forged.status_code == 403 and row(ui, deal)["deleted_at"] is None


def test_saved_views_personal_and_shared(ui: TestClient, team: None) -> None:
    sam = log_in(ui, "sam")
    new_deal(ui, sam, "Won big", "won", amount="90000", amount__currency="EUR")
    new_deal(ui, sam, "Still open", "prospecting")
    listing = ui.get("/e/deal?stage=won&sort=-amount").text
    query = re.search(r'name="query" value="([^"]*)"', listing).group(1).replace("&amp;", "&")  # type: ignore[union-attr]
    assert sorted(query.split("&")) == ["sort=-amount", "stage=won"]  # the view as the list shows it

    saved = ui.post("/e/deal/views", data={"csrf_token": sam, "name": "My wins", "query": query + "&after=abc"}, follow_redirects=False)
    assert saved.status_code == 303 and saved.headers["location"] == f"/e/deal?{query}"  # no page position kept
    shared = ui.post("/e/deal/views", data={"csrf_token": sam, "name": "Team pipeline", "query": "stage=prospecting", "shared": "on"},
                     follow_redirects=False)
    assert shared.status_code == 303
    page = ui.get("/e/deal").text
    assert f'<a href="/e/deal?{query.replace("&", "&amp;")}">My wins</a>' in page
    assert '<a href="/e/deal?stage=prospecting">Team pipeline</a>' in page and "(shared)" in page
    applied = ui.get("/e/deal?stage=won&sort=-amount").text
    assert "Won big" in applied and "Still open" not in applied

    sid = log_in(ui, "sid")
    others = ui.get("/e/deal").text
    assert "My wins" not in others  # personal
    assert '<a href="/e/deal?stage=prospecting">Team pipeline</a>' in others and "shared by sam" in others
    assert "Delete the view" not in others  # neither the owner nor an admin
    personal_id, shared_id = re.findall(r'action="/e/deal/views/([0-9a-f-]{36})/delete"', page)  # by name: "My wins", "Team pipeline"
    assert ui.post(f"/e/deal/views/{shared_id}/delete", data={"csrf_token": sid}, follow_redirects=False).status_code == 403
    assert ui.post(f"/e/deal/views/{personal_id}/delete", data={"csrf_token": sid}, follow_redirects=False).status_code == 404
    assert ui.post("/e/deal/views", data={"csrf_token": sid, "name": "  ", "query": ""}).status_code == 400
    log_in(ui, "sue")  # may read deals: sees the shared view
    assert "Team pipeline" in ui.get("/e/deal").text

    admin = log_in(ui, "admin")
    assert "My wins" not in ui.get("/e/deal").text
    assert ui.post(f"/e/deal/views/{shared_id}/delete", data={"csrf_token": admin}, follow_redirects=False).status_code == 303
    assert "Team pipeline" not in ui.get("/e/deal").text
    sam = log_in(ui, "sam")
    assert ui.post(f"/e/deal/views/{personal_id}/delete", data={"csrf_token": sam}, follow_redirects=False).status_code == 303
    assert "My wins" not in ui.get("/e/deal").text and "Saved views" not in ui.get("/e/deal").text


def test_a_user_who_may_not_read_the_entity_gets_no_views(ui: TestClient, ui_admin: str) -> None:
    ui.post("/e/deal/views", data={"csrf_token": ui_admin, "name": "Everything", "query": "", "shared": "on"})
    security = ui.app.state.platform.security()
    ui.blocking_portal.call(security.create_role, "reader")
    ui.blocking_portal.call(security.grant, "reader", "account", "read", "all")
    make_user(ui, "rita", ["reader"])
    rita = log_in(ui, "rita")
    assert ui.get("/e/deal").status_code == 403
    assert ui.post("/e/deal/views", data={"csrf_token": rita, "name": "Mine", "query": ""}).status_code == 403
    assert "Everything" not in ui.get("/e/account").text


def test_new_posts_need_the_csrf_token(ui: TestClient, ui_admin: str) -> None:
    deal = new_deal(ui, ui_admin, "Kept deal")
    ui.post("/e/deal/views", data={"csrf_token": ui_admin, "name": "Kept view", "query": "stage=won"})
    view_id = re.search(r'action="/e/deal/views/([0-9a-f-]{36})/delete"', ui.get("/e/deal").text).group(1)  # type: ignore[union-attr]
    for url, data in [("/e/deal/bulk", {"ids": deal, "action": "delete"}),
                      ("/e/deal/bulk", {"ids": deal, "action": "assign", "owner": "admin", "owner_kind": "user"}),
                      ("/e/deal/views", {"name": "Forged view", "query": ""}), (f"/e/deal/views/{view_id}/delete", {})]:
        for token in (None, "wrong-token"):
            body = dict(data, **({"csrf_token": token} if token else {}))
            assert ui.post(url, data=body, follow_redirects=False).status_code == 403, (url, token)
    listing = ui.get("/e/deal").text
    assert "Kept deal" in listing and "Kept view" in listing and "Forged view" not in listing
