"""Shared test setup: every test gets its own CAPI_HOME and a plain, wide, colourless terminal."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

# Rich reads these at console creation; fixed here so output is the same on every machine.
os.environ["COLUMNS"] = "200"
os.environ["NO_COLOR"] = "1"
os.environ.pop("FORCE_COLOR", None)

pytest_plugins = ["pg_fixtures"]  # postgres_server, pg_url: a real PostgreSQL server


@pytest.fixture(autouse=True)
def capi_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in list(os.environ):
        if name.startswith("CAPI_"):
            monkeypatch.delenv(name, raising=False)
    home = tmp_path / "capi-home"
    monkeypatch.setenv("CAPI_HOME", str(home))
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.setenv("NO_COLOR", "1")
    return home


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()
