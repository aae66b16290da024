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


# The subprocess-heavy campaigns and whole-system tests: `pytest -m "not slow"` is the fast suite a
# developer runs while working (under a minute on 2 cores); `.ci/run` runs everything.
SLOW_MODULES = frozenset({
    "test_bench_smoke", "test_concurrency", "test_corpus", "test_crash_campaign", "test_cron", "test_fault_matrix",
    "test_ledger_backends", "test_ledger_copy", "test_ledger_faults", "test_one_join", "test_parallel_build",
    "test_postgres_faults", "test_postgres_senders", "test_readme", "test_report_html", "test_secrets",
    "test_send_cli", "test_exports", "test_webhooks_real", "test_input_edges", "test_resend_cli", "test_report",
    "test_referral_join", "test_sandbox_cli", "test_entry", "test_quiet", "test_dataset_cli", "test_config_init",
})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.module is not None and item.module.__name__.rpartition(".")[2] in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
