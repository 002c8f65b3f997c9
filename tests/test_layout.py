"""The installable layout: `xrm` maps onto the design-card folders, stdlib intact."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def test_import_platform_from_repo_root_is_the_standard_library() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import platform, sys; print(platform.system()); print(platform.__file__)"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    )
    system, location = result.stdout.split()
    assert system in {"Linux", "Darwin", "Windows"}
    assert not location.startswith(str(ROOT / "platform"))


def test_xrm_package_maps_onto_the_design_card_folders() -> None:
    import xrm.assistant
    import xrm.records.service
    import xrm.webui

    assert Path(xrm.records.service.__file__).is_relative_to(ROOT / "platform")
    assert Path(xrm.webui.__file__).is_relative_to(ROOT / "webui")
    assert Path(xrm.assistant.__file__).is_relative_to(ROOT / "assistant")
    assert not (ROOT / "platform" / "__init__.py").exists(), "would shadow the stdlib `platform` module"
    for folder in ("platform", "plugins", "entity_schemas", "assistant", "webui", "tests", "docs", "bench"):
        assert (ROOT / folder).is_dir(), folder


def test_readme_opens_with_the_two_setup_commands_and_ci_runs_the_test_one() -> None:
    readme = (ROOT / "README.md").read_text()
    commands = [line.strip() for line in readme.split("```")[1].strip().splitlines() if line.strip() and not line.startswith("#")]
    assert len(commands) == 2
    run_command, test_command = commands
    assert "xrm demo" in run_command and "xrm serve" in run_command
    assert "pytest" in test_command
    assert test_command in (ROOT / ".ci" / "run").read_text()


def test_docker_compose_runs_the_app_against_a_pgvector_postgres() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    db, app = compose["services"]["db"], compose["services"]["app"]
    assert db["image"].startswith("pgvector/pgvector:pg")
    assert int(db["image"].split(":pg")[1]) >= 15
    assert app["environment"]["XRM_DATABASE_URL"].startswith("postgresql://")
    assert "db" in app["depends_on"]


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client")
def test_docker_compose_config_is_valid() -> None:
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("docker client without the compose plugin")
    subprocess.run(["docker", "compose", "config", "--quiet"], cwd=ROOT, check=True)


def test_the_built_in_plugins_fallback_lists_what_pyproject_declares() -> None:
    """Without installed metadata xrm registers BUILTIN_PLUGINS instead: it must be the same set of plugins."""
    import tomllib

    from xrm.plugins import BUILTIN_PLUGINS

    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]["xrm.plugins"]
    assert BUILTIN_PLUGINS == declared
