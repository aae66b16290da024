"""Results written to `-o FILE` or a pipe (SPEC §1): a table is for a person at a terminal.

`-o FILE` takes its format from `--format`, else from the file's extension (`.ndjson`, `.jsonl`,
`.json`, `.csv`), else NDJSON; a table to stdout that is not a terminal is a plain ASCII table,
never rich's renderer (which took 11 s for 20,000 referrals).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from capi_cli.cli.app import app
from capi_cli.ledger import Ledger, LedgerState, PendingEvent

FIXTURES = Path(__file__).parent / "fixtures" / "webhooks"
WA = str(FIXTURES / "whatsapp/cloud_two_entries.json")
BOX = set("┏┓┗┛━┃│─┡┩╇")


def _extract(runner: CliRunner, *args: str) -> None:
    result = runner.invoke(app, ["extract-referral", WA, "--no-store", *args])
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("name", ["refs", "refs.ndjson", "refs.jsonl", "refs.txt"])
def test_an_output_file_without_format_is_ndjson_unless_its_name_says_otherwise(runner, tmp_path, name) -> None:
    out = tmp_path / name
    _extract(runner, "-o", str(out))
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["channel"] for r in records] == ["whatsapp", "whatsapp"]
    assert records[0]["ctwa_clid"].startswith("ARAkLkA8")


def test_an_output_file_named_json_or_csv_gets_that_format(runner, tmp_path) -> None:
    _extract(runner, "-o", str(tmp_path / "refs.json"))
    _extract(runner, "-o", str(tmp_path / "refs.CSV"))
    assert len(json.loads((tmp_path / "refs.json").read_text())) == 2
    rows = list(csv.DictReader((tmp_path / "refs.CSV").open()))
    assert len(rows) == 2 and rows[0]["channel"] == "whatsapp"


def test_format_given_wins_over_the_extension(runner, tmp_path) -> None:
    _extract(runner, "--format", "csv", "-o", str(tmp_path / "refs.json"))
    assert (tmp_path / "refs.json").read_text().startswith("channel,")
    _extract(runner, "--format", "table", "-o", str(tmp_path / "table.json"))
    text = (tmp_path / "table.json").read_text()
    assert text.startswith("+-") and "| channel" in text and not BOX & set(text)


def test_ledger_export_to_a_csv_file_is_csv(runner, capi_home) -> None:
    with Ledger.open(capi_home / "ledger.sqlite3") as ledger:
        ledger.begin_batch("111", "b1", [PendingEvent("Purchase", "p1", 1_700_000_000, "orders.csv", 2)])
        ledger.settle("111", "b1", [("Purchase", "p1")], LedgerState.SENT)
    out = capi_home.parent / "ledger.csv"
    result = runner.invoke(app, ["ledger", "export", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert [r["event_id"] for r in csv.DictReader(out.open())] == ["p1"]


def test_a_table_to_a_pipe_is_plain_text_with_every_value(runner) -> None:
    result = runner.invoke(app, ["extract-referral", WA, "--no-store"])  # CliRunner's stdout is no terminal
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert lines[0].startswith("+-") and lines[1].startswith("| channel ") and lines[-1].startswith("+-")
    assert not BOX & set(result.stdout)
    assert len(lines) == 3 + 2 + 1 and all(len(line) == len(lines[0]) for line in lines)
    assert "905321234567" in result.stdout
