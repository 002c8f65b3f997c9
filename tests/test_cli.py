"""The `xrm` command line against a real (per-test) database."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from xrm.cli import main

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def cli(database_uri: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> CliRunner:
    monkeypatch.setenv("XRM_DATABASE_URL", database_uri)
    monkeypatch.setenv("XRM_SCHEMA_DIR", str(ROOT / "entity_schemas"))
    monkeypatch.chdir(tmp_path)
    return CliRunner()


def _commands(group, prefix=()):  # type: ignore[no-untyped-def]
    for name, command in getattr(group, "commands", {}).items():
        yield (*prefix, name)
        yield from _commands(command, (*prefix, name))


def test_every_command_has_help() -> None:
    runner = CliRunner()
    paths = [()] + list(_commands(main))
    assert ("db", "uri") in paths and ("schema", "apply") in paths and ("schema", "revert") in paths
    for path in paths:
        result = runner.invoke(main, [*path, "--help"])
        assert result.exit_code == 0, (path, result.output)
        assert "Usage:" in result.output


def test_db_uri_prints_the_configured_database(cli: CliRunner, database_uri: str) -> None:
    result = cli.invoke(main, ["db", "uri"])
    assert result.exit_code == 0
    assert result.output.strip() == database_uri


def test_plan_apply_revert_cycle(cli: CliRunner, tmp_path: Path) -> None:
    plan = cli.invoke(main, ["schema", "plan", str(ROOT / "entity_schemas")])
    assert plan.exit_code == 0, plan.output
    assert "create entity account" in plan.output and "safe" in plan.output

    applied = cli.invoke(main, ["schema", "apply", str(ROOT / "entity_schemas")])
    assert applied.exit_code == 0, applied.output
    assert "Applied as change 1" in applied.output
    assert "No changes" in cli.invoke(main, ["schema", "plan", str(ROOT / "entity_schemas")]).output

    # Remove a field: destructive, refused without the flag, archived with it.
    contact = json.loads((ROOT / "entity_schemas" / "contact.json").read_text())
    del contact["properties"]["birthday"]
    changed = tmp_path / "contact.json"
    changed.write_text(json.dumps(contact))
    refused = cli.invoke(main, ["schema", "apply", str(changed)])
    assert refused.exit_code == 1
    assert "destructive" in refused.output and "Traceback" not in refused.output
    plan = cli.invoke(main, ["schema", "plan", str(changed)])
    assert "destructive remove field contact.birthday" in plan.output
    done = cli.invoke(main, ["schema", "apply", str(changed), "--allow-destructive"])
    assert done.exit_code == 0, done.output
    archives = cli.invoke(main, ["schema", "archives"])
    assert "contact.birthday" in archives.output

    reverted = cli.invoke(main, ["schema", "revert"])
    assert reverted.exit_code == 0, reverted.output
    assert "restore field contact.birthday" in reverted.output
    history = cli.invoke(main, ["schema", "history", "contact"])
    assert history.output.count("contact v") == 3


def test_invalid_definition_file_reports_pointer_without_traceback(cli: CliRunner, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"type": "object", "x-xrm": {"name": "thing", "label": {"en": "Thing"}}, "properties": {"Name": {"type": "string"}}}))
    result = cli.invoke(main, ["schema", "apply", str(bad)])
    assert result.exit_code == 1
    assert "/properties/Name" in result.output and "Traceback" not in result.output
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    result = cli.invoke(main, ["schema", "plan", str(broken)])
    assert result.exit_code == 1 and "not valid JSON" in result.output


def test_demo_loads_records_once(cli: CliRunner) -> None:
    first = cli.invoke(main, ["demo"])
    assert first.exit_code == 0, first.output
    assert "account: 33 demo records created" in first.output  # 8 well-known and 25 generated (--size small)
    second = cli.invoke(main, ["demo"])
    assert "already has records" in second.output


def test_users_and_tokens_from_the_command_line(xrm_cli: Any) -> None:
    xrm_cli("user", "create", "rita", "--password", "a-long-password", "--role", "sales")
    token = xrm_cli("token", "create", "--user", "rita", "--label", "dashboard", "--read-only").splitlines()[0]
    assert token.startswith("xrm_")
    listed = xrm_cli("token", "list", "--user", "rita")
    assert "read-only" in listed and "dashboard" in listed and "never used" in listed
    token_id = listed.split()[0]
    xrm_cli("token", "revoke", token_id)
    assert "revoked" in xrm_cli("token", "list", "--user", "rita")
    xrm_cli("token", "create", "--user", "nobody", code=1)
