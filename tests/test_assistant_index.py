"""The assistant's vector index and hybrid retrieval, with the real embedding model and pgvector.

What a user would notice: a question finds the record that means the same
thing even without a shared word; a German word part finds the compound; a
user who may open few records still gets a full top-k of exactly those; a
sensitive value never enters the embedded text; changes reach the index from
the outbox, and unchanged text is not embedded again.
"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
import uuid
from typing import Any

import pytest

from xrm.assistant.embedding import get_embedder
from xrm.assistant.index import RecordIndex, record_text
from xrm.assistant.retrieval import HybridRetriever, query_words
from xrm.auth import UserService
from xrm.db.database import Database
from xrm.records.principal import SYSTEM_PRINCIPAL
from xrm.records.service import RecordService
from xrm.security.model import SecurityService
from xrm.security.policy import RolePolicy

ACCOUNT = {
    "type": "object",
    "x-xrm": {"name": "account", "label": {"en": "Account", "de": "Firma"}, "display_field": "name", "search_fields": ["name", "city"]},
    "required": ["name"],
    "properties": {
        "name": {"type": "string"},
        "city": {"type": "string", "x-xrm": {"label": {"en": "City", "de": "Ort"}}},
        "secret_note": {"type": "string", "x-xrm": {"sensitive": True}},
    },
}
TICKET = {
    "type": "object",
    "x-xrm": {"name": "ticket", "label": {"en": "Ticket", "de": "Ticket"}, "display_field": "subject",
              "search_fields": ["subject", "description"]},
    "required": ["subject"],
    "properties": {
        "subject": {"type": "string"},
        "description": {"x-xrm": {"type": "long_text"}},
        "priority": {"type": "string", "enum": ["low", "high"],
                     "x-xrm": {"option_labels": {"low": {"en": "Low", "de": "Niedrig"}, "high": {"en": "High", "de": "Hoch"}}}},
        "seats": {"type": "integer"},
        "account": {"x-xrm": {"type": "reference", "references": "account", "label": {"en": "Account", "de": "Firma"}}},
    },
}

FILLER = ["Invoice address needs an update", "Password reset for the portal", "Question about the licence renewal",
          "Printer driver missing", "Add two more user seats", "Change of contact person", "Training dates for March",
          "Export of last year's orders", "VAT number on invoices", "Dark mode request"]


@pytest.fixture(scope="session")
def embedder() -> Any:
    return get_embedder()


@pytest.fixture
async def world(db: Database, make_entities: Any, embedder: Any) -> dict[str, Any]:
    registry = await make_entities(copy.deepcopy(ACCOUNT), copy.deepcopy(TICKET))
    policy = RolePolicy()
    await policy.load(db)
    security = SecurityService(db, policy, registry)
    users = UserService(db)
    ids = {name: (await users.create_user(name, "a-long-password")).id for name in ("boss", "rep")}
    await security.create_role("own_tickets")
    for entity in ("ticket", "account"):
        await security.grant("own_tickets", entity, "read", "own")
    await security.grant_role("rep", "own_tickets")
    await security.grant_role("boss", "admin")
    accounts = RecordService(db, registry, "account", SYSTEM_PRINCIPAL)
    acme = await accounts.create({"name": "ACME Corp", "city": "Springfield", "secret_note": "Zebra-Passwort 4711"})
    tickets = RecordService(db, registry, "ticket", SYSTEM_PRINCIPAL)
    late = await tickets.create({"subject": "Shipment arrived three weeks late",
                                 "description": "The pallets came long after the promised date; the customer is angry.",
                                 "account": acme["id"], "priority": "high"})
    german = await tickets.create({"subject": "Lieferverzögerung bei Bestellung 4411", "priority": "low"})
    others = [await tickets.create({"subject": f"{FILLER[i % len(FILLER)]} ({i})"}) for i in range(40)]
    mine = [await tickets.create({"subject": f"{FILLER[i % len(FILLER)]} for the rep ({i})"}) for i in range(12)]
    async with db.connection() as connection:
        await connection.execute("UPDATE public.ticket SET owner_id = $1 WHERE id = ANY($2::uuid[])",
                                 ids["rep"], [t["id"] for t in mine])
    return {
        "db": db, "registry": registry, "policy": policy, "embedder": embedder,
        "index": RecordIndex(db, registry, embedder), "acme": acme, "late": late, "german": german,
        "mine": {t["id"] for t in mine}, "others": others, "tickets": tickets, "accounts": accounts,
        "boss": await security.principal_for_user("boss"), "rep": await security.principal_for_user("rep"),
    }


def retriever(world: dict[str, Any]) -> HybridRetriever:
    return HybridRetriever(world["db"], world["registry"], world["embedder"], world["policy"])


async def stored(world: dict[str, Any]) -> dict[uuid.UUID, bytes]:
    async with world["db"].connection() as connection:
        return {r["record_id"]: bytes(r["text_hash"]) for r in await connection.fetch(
            "SELECT record_id, text_hash FROM xrm_index.record_embedding")}


async def test_reindex_embeds_every_record_and_shows_progress(world: dict[str, Any]) -> None:
    seen: list[tuple[str, int, int]] = []
    result = await world["index"].reindex(progress=lambda entity, done, total: seen.append((entity, done, total)))
    assert (result["account"].embedded, result["ticket"].embedded) == (1, 54)
    assert seen[-1][1:] == (54, 54) and ("account", 1, 1) in seen
    assert len(await stored(world)) == 55
    again = await world["index"].reindex()
    assert (again["ticket"].embedded, again["ticket"].unchanged) == (0, 54)  # unchanged text is not embedded again


async def test_the_text_has_labels_related_names_and_no_sensitive_value(world: dict[str, Any]) -> None:
    registry = world["registry"]
    text = record_text(registry.get("ticket"), world["late"], {world["acme"]["id"]: "ACME Corp"})
    assert text.startswith("Ticket: Shipment arrived three weeks late.")
    assert "Account / Firma: ACME Corp." in text and "pallets" in text
    account_text = record_text(registry.get("account"), world["acme"], {})
    assert "Springfield" in account_text and "Zebra" not in account_text and "4711" not in account_text


async def test_a_question_finds_the_record_that_means_the_same_without_a_shared_word(world: dict[str, Any]) -> None:
    await world["index"].reindex()
    hits = await retriever(world).search(world["boss"], "customers complaining about delivery delays", k=3)
    assert hits[0].id == world["late"]["id"]
    assert "meaning" in hits[0].ranks and "words" not in hits[0].ranks  # found by meaning alone
    # One ranking across entities: the only account is not also "first by meaning" just for being the first account.
    meaning_ranks = [h.ranks["meaning"] for h in hits if "meaning" in h.ranks]
    assert hits[0].ranks["meaning"] == 1 and len(set(meaning_ranks)) == len(meaning_ranks)


async def test_a_german_word_part_finds_the_compound(world: dict[str, Any]) -> None:
    await world["index"].reindex()
    assert query_words("Wer hat eine Liefer-Beschwerde?") == ["liefer", "beschwerde"]
    hits = await retriever(world).search(world["boss"], "Liefer Bestellung", k=3)
    assert hits[0].id == world["german"]["id"] and "words" in hits[0].ranks


async def test_a_user_who_may_open_few_records_gets_a_full_top_k_of_exactly_those(world: dict[str, Any]) -> None:
    await world["index"].reindex()
    hits = await retriever(world).search(world["rep"], "customers complaining about delivery delays", k=10)
    assert len(hits) == 10
    assert {h.id for h in hits} <= world["mine"]  # never the late shipment or another owner's ticket
    assert {h.entity for h in hits} == {"ticket"}  # the rep owns no account
    boss = await retriever(world).search(world["boss"], "customers complaining about delivery delays", k=10)
    assert world["late"]["id"] in {h.id for h in boss}


async def test_changes_reach_the_index_through_the_outbox(world: dict[str, Any]) -> None:
    index = world["index"]
    await index.reindex()
    await index.catch_up()  # the records created before are already there: nothing new to embed
    before = await stored(world)
    tickets, accounts = world["tickets"], world["accounts"]
    await tickets.update(world["german"]["id"], {"subject": "Lieferverzögerung bei Bestellung 4412"})
    await tickets.update(world["others"][0]["id"], {"seats": 3})  # not part of the text
    await tickets.delete(world["others"][1]["id"])
    stats = await index.catch_up()
    assert (stats.embedded, stats.unchanged, stats.removed) == (1, 1, 1)
    after = await stored(world)
    assert after[world["german"]["id"]] != before[world["german"]["id"]]
    assert world["others"][1]["id"] not in after
    # A renamed account changes the text of its tickets too.
    await accounts.update(world["acme"]["id"], {"name": "ACME Holding"})
    stats = await index.catch_up()
    assert stats.embedded == 2  # the account and its ticket
    hits = await retriever(world).search(world["boss"], "ACME Holding", entities=["ticket"], k=1)
    assert hits[0].id == world["late"]["id"]
    assert (await index.catch_up()).embedded == 0


async def test_another_model_empties_the_index(world: dict[str, Any]) -> None:
    await world["index"].reindex()
    async with world["db"].connection() as connection:
        await connection.execute("UPDATE xrm_sys.embedding_model SET model = 'some-older-model'")
    await world["index"].prepare()
    assert await stored(world) == {}


def test_xrm_reindex_embeds_the_shipped_entities_with_progress(xrm_cli: Any, embedder: Any, tmp_path: Path) -> None:
    xrm_cli("schema", "apply", str(Path(__file__).resolve().parent.parent / "entity_schemas" / "account.json"))
    (tmp_path / "accounts.csv").write_text("name,city\nMüller GmbH,München\n", encoding="utf-8")
    xrm_cli("import", "account", str(tmp_path / "accounts.csv"))
    output = xrm_cli("reindex", "--entity", "account")
    assert "account: 1 embedded, 0 unchanged, 0 removed" in output
    assert "account: 0 embedded, 1 unchanged, 0 removed" in xrm_cli("reindex", "--entity", "account")
    assert "no such entity: nope" in xrm_cli("reindex", "--entity", "nope", code=2)


def test_the_server_applies_changes_to_the_index_within_seconds(database_uri: str, tmp_path: Path, embedder: Any,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """`xrm serve`'s follower: a record created through the API is in the index a few polls later."""
    import time

    from litestar.testing import TestClient

    from conftest import ROOT, bearer, ok
    from xrm.app import create_app
    from xrm.settings import Settings

    monkeypatch.setenv("XRM_ASSISTANT_INDEX", "true")
    settings = Settings(data_dir=tmp_path, database_url=database_uri, schema_dir=ROOT / "entity_schemas", secret_key=None,
                        worker_poll_seconds=1)
    with TestClient(app=create_app(settings)) as client:
        headers = bearer(client, "ada", ["admin"])
        created = ok(client.post("/api/v1/account", json={"name": "Globex", "city": "Cypress Creek"}, headers=headers), 201)
        platform = client.app.state.platform

        async def indexed() -> set[str]:
            async with platform.db.connection() as connection:
                return {str(r["record_id"]) for r in await connection.fetch("SELECT record_id FROM xrm_index.record_embedding")}

        deadline = time.monotonic() + 60  # the first poll loads the model
        while created["id"] not in client.blocking_portal.call(indexed):
            assert time.monotonic() < deadline, "the new account never reached the index"
            time.sleep(0.2)


PERSON = {
    "type": "object",
    "x-xrm": {"name": "person", "label": {"en": "Person"}, "display_field": "name", "search_fields": ["name", "email"]},
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "x-xrm": {"personal": True}},
        "email": {"type": "string", "format": "email", "x-xrm": {"personal": True}},
    },
}


async def test_erasure_drops_the_vector_at_once_and_the_follower_embeds_only_the_redacted_text(
        db: Database, make_entities: Any, embedder: Any) -> None:
    from xrm.privacy.service import PrivacyService, SubjectQuery
    from xrm.records.principal import Principal

    registry = await make_entities(copy.deepcopy(PERSON))
    admin = Principal(uuid.uuid4(), "dpo", frozenset({"admin"}))
    people = RecordService(db, registry, "person", admin)
    erika = await people.create({"name": "Erika Musterfrau", "email": "erika@example.org"})
    await people.create({"name": "Max Mustermann", "email": "max@example.org"})
    index = RecordIndex(db, registry, embedder)
    await index.reindex()
    await index.catch_up()
    await PrivacyService(db, registry, admin).erase(SubjectQuery(email="erika@example.org"))
    async with db.connection() as connection:
        left = {r["record_id"] for r in await connection.fetch("SELECT record_id FROM xrm_index.record_embedding")}
    assert erika["id"] not in left and len(left) == 1  # gone in the erasure's own transaction
    assert (await index.catch_up()).embedded == 1
    redacted = record_text(registry.get("person"), await people.get(erika["id"]), {})
    assert "Erika" not in redacted and "erika@" not in redacted
    async with db.connection() as connection:
        stored_hash = await connection.fetchval("SELECT text_hash FROM xrm_index.record_embedding WHERE record_id = $1", erika["id"])
    assert bytes(stored_hash) == hashlib.sha256(redacted.encode()).digest()
    hits = await HybridRetriever(db, registry, embedder).search(admin, "Erika Musterfrau", k=2)
    assert hits and all("Erika" not in str(h.record) and "erika@" not in str(h.record) for h in hits)
