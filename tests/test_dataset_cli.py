"""`capi dataset` (SPEC §1): the dataset of the configured WABA / Page / Instagram account; `--create`
gets or creates it through `POST /{asset_id}/dataset` (here the sandbox), `--save` stores it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from capi_cli.cli.app import app
from capi_cli.sandbox.server import GraphStandin

WABA, PAGE, IG = "104996122399160", "109876543210987", "17841400000000001"
TOKEN = "EAAG-dataset-token-51c2"


@pytest.fixture
def graph(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    with GraphStandin(token=TOKEN) as standin:
        monkeypatch.setenv("CAPI_GRAPH_URL", standin.url)
        monkeypatch.setenv("CAPI_ACCESS_TOKEN", TOKEN)
        yield standin


def test_create_gets_the_same_dataset_and_save_stores_it(runner: CliRunner, graph, capi_home: Path,  # type: ignore[no-untyped-def]
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPI_WHATSAPP_BUSINESS_ACCOUNT_ID", WABA)
    first = runner.invoke(app, ["dataset", "--create", "--json"])
    assert first.exit_code == 0, first.stderr
    found = json.loads(first.stdout)
    assert found["channel"] == "whatsapp" and found["asset_id"] == WABA and found["dataset_id"].isdigit()
    assert "--save" in first.stderr  # not stored yet: says how
    again = runner.invoke(app, ["dataset", "--create", "--save"])
    assert again.exit_code == 0 and again.stdout.strip() == found["dataset_id"]
    profile = yaml.safe_load((capi_home / "config.yaml").read_text())["profiles"]["default"]
    assert profile["dataset_id"] == found["dataset_id"]
    shown = runner.invoke(app, ["dataset", "--json"])
    assert json.loads(shown.stdout)["configured_dataset_id"] == found["dataset_id"]
    assert [r.path for r in graph.requests].count(f"/{_version()}/{WABA}/dataset") == 2
    assert TOKEN not in first.output + again.output + shown.output


def _version() -> str:
    from capi_cli.rules import API_VERSION as DEFAULT_API_VERSION

    return DEFAULT_API_VERSION


@pytest.mark.parametrize(("channel", "variable", "asset", "permission"), [
    ("whatsapp", "CAPI_WHATSAPP_BUSINESS_ACCOUNT_ID", WABA, "whatsapp_business_management"),
    ("messenger", "CAPI_PAGE_ID", PAGE, "page_events"),
    ("instagram", "CAPI_IG_ACCOUNT_ID", IG, "instagram_manage_events"),
])
def test_a_refusal_names_the_permission_to_grant(runner: CliRunner, graph, monkeypatch: pytest.MonkeyPatch,  # type: ignore[no-untyped-def]
                                                 channel: str, variable: str, asset: str, permission: str) -> None:
    monkeypatch.setenv(variable, asset)
    graph.assets = set()  # the token may manage no asset
    result = runner.invoke(app, ["dataset", "--create", "--channel", channel])
    assert result.exit_code == 3
    line = result.stderr.strip()
    assert line.startswith("capi: error: Graph API: code 200: (#200) Permissions error") and permission in line
    assert asset in line and "\n" not in line


def test_usage_and_setup_errors(runner: CliRunner, graph) -> None:  # type: ignore[no-untyped-def]
    nothing = runner.invoke(app, ["dataset"])
    assert nothing.exit_code == 3 and "whatsapp_business_account_id" in nothing.stderr
    assert runner.invoke(app, ["dataset", "--save"]).exit_code == 2
    assert runner.invoke(app, ["dataset", "--channel", "telegram"]).exit_code == 2
