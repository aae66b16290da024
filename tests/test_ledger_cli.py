"""`capi ledger ...` through Typer's CliRunner, on a real SQLite ledger in CAPI_HOME."""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from capi_cli.cli.app import app
from capi_cli.cli.ledger_cmd import parse_duration
from capi_cli.errors import UsageError
from capi_cli.ledger import Ledger, LedgerState, PendingEvent

# SPEC §8: the keys of `capi ledger list --format json`, pinned here as the contract.
EVENT_COLUMNS = ("dataset_id", "event_name", "event_id", "state", "event_time", "attempts", "error_code",
                 "error_subcode", "error_message", "source", "updated_at")

NOW = int(time.time())


@pytest.fixture
def filled(capi_home: Path) -> Path:
    path = capi_home / "ledger.sqlite3"
    with Ledger.open(path) as ledger:
        ledger.begin_batch("111", "b1", [PendingEvent("Purchase", f"p{i}", NOW - 3600, "orders.csv", i + 2)
                                         for i in range(3)])
        ledger.settle("111", "b1", [("Purchase", "p0"), ("Purchase", "p1")], LedgerState.SENT, fbtrace_id="T")
        ledger.settle("111", "b1", [("Purchase", "p2")], LedgerState.REJECTED, error_code=100,
                      error_subcode=2804019, error_message="Invalid parameter")
        ledger.begin_batch("222", "b2", [PendingEvent("LeadSubmitted", "l1", NOW - 5 * 86400, "leads.csv", 7)])
        ledger.settle("222", "b2", [("LeadSubmitted", "l1")], LedgerState.UNCERTAIN, error_message="no answer")
    return path


def run(runner: CliRunner, *args: str, input: str | None = None):  # noqa: A002
    result = runner.invoke(app, list(args), input=input)
    return result


def test_path(runner: CliRunner, capi_home: Path) -> None:
    result = run(runner, "ledger", "path")
    assert result.exit_code == 0 and result.stdout.strip() == str(capi_home / "ledger.sqlite3")


def test_stats_json_shape(runner: CliRunner, filled: Path) -> None:
    result = run(runner, "ledger", "stats", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {
        "total": {"sent": 2, "rejected": 1, "uncertain": 1},
        "by_dataset": {"111": {"sent": 2, "rejected": 1}, "222": {"uncertain": 1}},
    }
    table = run(runner, "ledger", "stats")
    assert "111" in table.stdout and "all" in table.stdout


def test_stats_and_list_without_a_ledger_create_nothing(runner: CliRunner, capi_home: Path) -> None:
    assert json.loads(run(runner, "ledger", "stats", "--json").stdout)["total"] == {}
    assert json.loads(run(runner, "ledger", "list", "--format", "json").stdout) == []
    assert not (capi_home / "ledger.sqlite3").exists()


def test_list_json_keys_and_filters(runner: CliRunner, filled: Path) -> None:
    result = run(runner, "ledger", "list", "--format", "json")
    records = json.loads(result.stdout)
    assert len(records) == 4 and all(list(r) == list(EVENT_COLUMNS) for r in records)
    rejected = json.loads(run(runner, "ledger", "list", "--status", "rejected", "--json").stdout)
    assert [(r["event_id"], r["error_code"], r["error_subcode"], r["source"]) for r in rejected] == [
        ("p2", 100, 2804019, "orders.csv:4")
    ]
    by_name = json.loads(run(runner, "ledger", "list", "--event-name", "LeadSubmitted", "--json").stdout)
    assert [r["event_id"] for r in by_name] == ["l1"]
    by_dataset = json.loads(run(runner, "ledger", "list", "--dataset", "111", "--limit", "2", "--json").stdout)
    assert len(by_dataset) == 2
    recent = json.loads(run(runner, "ledger", "list", "--since", "2d", "--json").stdout)
    assert {r["event_id"] for r in recent} == {"p0", "p1", "p2"}
    older = json.loads(run(runner, "ledger", "list", "--until", "2d", "--json").stdout)
    assert [r["event_id"] for r in older] == ["l1"]


def test_list_formats(runner: CliRunner, filled: Path) -> None:
    ndjson = run(runner, "ledger", "list", "--format", "ndjson").stdout.splitlines()
    assert len(ndjson) == 4 and json.loads(ndjson[0])["dataset_id"]
    rows = list(csv.DictReader(io.StringIO(run(runner, "ledger", "list", "--format", "csv").stdout)))
    assert len(rows) == 4 and list(rows[0]) == list(EVENT_COLUMNS)
    table = run(runner, "ledger", "list", "--status", "uncertain")
    assert "l1" in table.stdout and "1 event(s)" in table.stderr


def test_bad_status_is_a_usage_error(runner: CliRunner, filled: Path) -> None:
    result = run(runner, "ledger", "list", "--status", "lost")
    assert result.exit_code == 2 and "--status" in result.stderr and "Traceback" not in result.output
    assert run(runner, "ledger", "list", "--since", "yesterday").exit_code == 2


def test_export_to_file(runner: CliRunner, filled: Path, tmp_path: Path) -> None:
    out = tmp_path / "export.ndjson"
    result = run(runner, "ledger", "export", "--dataset", "111", "-o", str(out))
    assert result.exit_code == 0 and result.stdout == ""
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["event_id"] for r in lines} == {"p0", "p1", "p2"}
    assert os.stat(out).st_mode & 0o777 == 0o600
    as_json = json.loads(run(runner, "ledger", "export", "--format", "json").stdout)
    assert len(as_json) == 4


def test_forget_needs_a_filter_and_confirmation(runner: CliRunner, filled: Path) -> None:
    assert run(runner, "ledger", "forget", "--yes").exit_code == 2
    assert run(runner, "ledger", "forget", "--status", "uncertain").exit_code == 2  # no TTY, no --yes
    assert run(runner, "ledger", "forget", "--all", "--status", "sent", "--yes").exit_code == 2
    result = run(runner, "ledger", "forget", "--status", "uncertain", "--yes", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout) == {"forgotten": 1}
    one = run(runner, "ledger", "forget", "--event-id", "p0", "--yes", "--json")
    assert json.loads(one.stdout) == {"forgotten": 1}
    with Ledger.open(filled) as ledger:
        assert ledger.stats()["total"] == {"sent": 1, "rejected": 1}
    everything = run(runner, "ledger", "forget", "--all", "--yes")
    assert everything.exit_code == 0 and "forgot 2" in everything.stderr


def test_forget_waits_for_no_running_send(runner: CliRunner, filled: Path) -> None:
    with Ledger.open(filled) as ledger, ledger.send_lock():
        result = run(runner, "ledger", "forget", "--all", "--yes")
    assert result.exit_code == 5


def test_prune(runner: CliRunner, filled: Path) -> None:
    assert run(runner, "ledger", "prune", "--older-than", "soon").exit_code == 2
    assert run(runner, "ledger", "prune", "--older-than", "12h").exit_code == 2  # under 7 days
    kept = run(runner, "ledger", "prune", "--older-than", "30d", "--json")
    assert kept.exit_code == 0 and json.loads(kept.stdout) == {"pruned": 0}
    time.sleep(0.05)
    forced = run(runner, "ledger", "prune", "--older-than", "0s", "--force", "--status", "sent", "--json")
    assert json.loads(forced.stdout) == {"pruned": 2}


def test_parse_duration() -> None:
    assert parse_duration("2d") == 172800 and parse_duration("12h") == 43200 and parse_duration("90m") == 5400
    assert parse_duration("1.5d") == 129600 and parse_duration("2W") == 1209600
    with pytest.raises(UsageError):
        parse_duration("30")


def test_help_has_examples(runner: CliRunner) -> None:
    for command in ("stats", "list", "export", "forget", "prune", "path"):
        result = run(runner, "ledger", command, "--help")
        assert result.exit_code == 0 and "Example" in result.stdout, command


def test_cli_state_names_match_the_ledger() -> None:
    from capi_cli.cli.ledger_cmd import STATES
    from capi_cli.ledger import LedgerState

    assert STATES == tuple(state.value for state in LedgerState)
