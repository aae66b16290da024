"""`capi report` (SPEC §8 report facts, §10): a scripted history through the real commands
(extract-referral, send against the Graph stand-in on 127.0.0.1, report) gives exactly the
expected figures per ad, per channel and event, in coverage and in the runs."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from capi_cli.cli.app import app
from capi_cli.ledger import Ledger
from capi_cli.ledger.schema import MIGRATIONS, split_sql
from support.report_history import AD_A, AD_B, AD_C, EXPECTED_ROWS, NOW, PAGE, play_history
from support.sending import DATASET

SUMMARY_COUNTS = ("read", "invalid", "unattributed", "filtered", "skipped", "sent", "rejected", "failed",
                  "uncertain")


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return play_history(tmp_path_factory.mktemp("history"))


def report(history: dict, *args: str) -> CliRunner:
    result = CliRunner().invoke(app, ["report", *args], env=history["env"])
    assert result.exit_code == 0, result.output
    return result


def test_the_history_was_played_as_scripted(history: dict) -> None:
    codes = [code for code, _ in history["sends"]]
    assert codes[:5] == [1, 0, 0, 4, 3]  # refused event, joined, messenger, ambiguous outcome, refused token
    assert history["sends"][0][1]["rejected"] == 1 and history["sends"][0][1]["sent"] == 4
    assert history["sends"][1][1]["attributed"] == 1  # by the referral join
    assert history["sends"][3][1]["uncertain"] == 1


def test_per_ad_figures_are_exact(history: dict) -> None:
    document = json.loads(report(history, "--format", "json").stdout)
    assert document["by"] == "ad"
    assert document["rows"] == EXPECTED_ROWS


def test_an_ad_with_conversations_and_no_conversion_is_listed(history: dict) -> None:
    out = report(history).stdout
    line = next(line for line in out.splitlines() if AD_B in line)
    cells = [cell.strip() for cell in line.strip("│ ").split("│")]
    assert cells[:6] == [AD_B, "whatsapp", "", "3", "0", "0.0%"]
    assert out.index(AD_A) < out.index(AD_C) < out.index(AD_B) < out.index("(ad unknown)")
    bars = {ad: next(line for line in out.splitlines() if ad in line).count("█") for ad in (AD_A, AD_C, AD_B)}
    assert bars[AD_A] > bars[AD_C] > bars[AD_B] == 0  # bars for the top ads, by converted conversations
    assert "\x1b[" not in out  # no colour: not a terminal


def test_coverage_is_exact(history: dict) -> None:
    coverage = json.loads(report(history, "--json").stdout)["coverage"]
    unattributed = sum(summary.get("unattributed", 0) for _, summary in history["sends"])
    assert {k: v for k, v in coverage.items() if k != "match_keys"} == {
        "events_sent": 6, "with_ad": 5, "unattributed": unattributed, "rejected": 1, "uncertain": 1}
    shares = coverage["match_keys"]
    assert shares["em"] == shares["ph"] == round(4 / 6, 4)
    assert all(shares[key] == 0.0 for key in ("fn", "ln", "ge", "db", "ct", "st", "zp", "country", "external_id"))


def test_runs_keep_every_send_with_its_counts_and_exit_code(history: dict) -> None:
    runs = json.loads(report(history, "--json").stdout)["runs"]
    assert len(runs) == 6
    for run, (code, summary) in zip(runs, reversed(history["sends"]), strict=True):
        assert run["exit_code"] == code
        assert run["dataset_id"] == DATASET and len(run["inputs"]) == 1
        assert {k: run[k] for k in SUMMARY_COUNTS if k in summary} == {k: summary[k] for k in SUMMARY_COUNTS
                                                                       if k in summary}
    assert [run["exit_code"] for run in runs][1:] == [3, 4, 0, 0, 1]
    assert runs[1]["inputs"][0].endswith("orders-token.csv") and runs[1]["failed"] == 1
    table = report(history).stdout
    assert "orders-token.csv" in table and "runs" in table


def test_by_channel_event_and_day(history: dict) -> None:
    by_channel = {r["channel"]: r for r in json.loads(report(history, "--by", "channel", "--json").stdout)["rows"]}
    assert by_channel["whatsapp"]["conversations"] == 7 and by_channel["whatsapp"]["converted_conversations"] == 3
    assert by_channel["whatsapp"]["events"] == {"OrderShipped": 1, "Purchase": 4}
    assert by_channel["whatsapp"]["value"] == {"INR": 720.0}
    assert by_channel["messenger"]["conversion_rate"] == 0.5 and by_channel["messenger"]["value"] == {"USD": 80.0}
    by_event = {r["event_name"]: r for r in json.loads(report(history, "--by", "event", "--json").stdout)["rows"]}
    assert by_event["Purchase"]["conversations"] == 9 and by_event["Purchase"]["converted_conversations"] == 4
    assert by_event["OrderShipped"]["converted_conversations"] == 1
    by_day = json.loads(report(history, "--by", "day", "--json").stdout)["rows"]
    assert sum(r["conversations"] for r in by_day) == 9
    assert sum(sum(r["events"].values()) for r in by_day) == 6
    assert [r["day"] for r in by_day] == sorted(r["day"] for r in by_day)


def test_period_selects_conversations_and_events(history: dict) -> None:
    rows = json.loads(report(history, "--since", "1d", "--json").stdout)["rows"]
    assert rows == []  # the referrals are 3 days old, the events 2 days
    older = json.loads(report(history, "--since", "30d", "--until", "1d", "--json").stdout)["rows"]
    assert older == EXPECTED_ROWS
    other = json.loads(report(history, "--dataset", "999", "--json").stdout)
    assert other["coverage"]["events_sent"] == 0 and other["runs"] == []


def test_csv_has_a_column_per_event_name_and_currency(history: dict) -> None:
    rows = list(csv.DictReader(io.StringIO(report(history, "--format", "csv").stdout)))
    assert rows[0]["ad_id"] == AD_A and rows[0]["events.Purchase"] == "3" and rows[0]["value.INR"] == "650.0"
    assert rows[2]["ad_id"] == AD_B and rows[2]["events.Purchase"] == "0" and rows[2]["value.INR"] == ""


def test_report_facts_hold_nothing_personal(history: dict) -> None:
    with sqlite3.connect(history["home"] / "ledger.sqlite3") as conn:
        facts = conn.execute("SELECT event_id, channel, value, currency, referral_key, ad_id, attribution, "
                             "match_keys FROM events ORDER BY event_id").fetchall()
    by_id = {row[0]: row[1:] for row in facts}
    # A conversation is its referral's stored key: the business (phone number id, page) and message id.
    phone_number_id = "106540352242922"
    assert by_id["ev-a1"] == ("whatsapp", 100.0, "INR", f"{phone_number_id}|wamid.HBgM10001", AD_A, "click_id", "em,ph")
    assert by_id["ev-a3"] == ("whatsapp", 300.0, "INR", f"{phone_number_id}|wamid.HBgM10003", AD_A, "joined", "ph")
    assert by_id["ev-c1"] == ("messenger", 80.0, "USD", f"{PAGE}|m_{'6123456789012345'}", AD_C, "click_id", "em")
    assert by_id["ev-x"][4:] == (None, "none", "ph")
    assert by_id["ev-b1"][4] == AD_B  # refused: its ad is known, it converts nothing


def test_old_ledger_migrates_and_reports_old_events_as_ad_unknown(tmp_path: Path, capi_home: Path) -> None:
    path = capi_home / "ledger.sqlite3"
    capi_home.mkdir(parents=True)
    conn = sqlite3.connect(path)
    # The ledger as capi wrote it before the report facts: every migration before the one adding them
    # (found by what it does, so that renumbering the list at a merge changes nothing here).
    before = next(n for n, script in enumerate(MIGRATIONS) if "CREATE TABLE runs" in script)
    for number, script in enumerate(MIGRATIONS[:before]):
        for statement in split_sql(script):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {number + 1}")
    conn.execute("INSERT INTO events (dataset_id, event_name, event_id, state, event_time, attempts, created_at, "
                 "updated_at) VALUES (?, 'Purchase', 'old-1', 'sent', ?, 1, ?, ?)", (DATASET, NOW - 3600, NOW, NOW))
    conn.execute("INSERT INTO referrals (channel, user_key, message_key, ctwa_clid, ad_id, source_type, ts, "
                 "stored_at) VALUES ('whatsapp', 'u', 'wamid.OLD', 'ARAkOld', ?, 'ad', ?, ?)",
                 (AD_A, NOW - 7200, NOW))
    conn.commit()
    conn.close()
    result = CliRunner().invoke(app, ["report", "--json"], env={"CAPI_DATASET_ID": DATASET})
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    unknown = [row for row in document["rows"] if row["ad_id"] is None]
    assert len(unknown) == 1 and unknown[0]["events"] == {"Purchase": 1} and unknown[0]["channel"] is None
    ad = next(row for row in document["rows"] if row["ad_id"] == AD_A)
    assert (ad["conversations"], ad["converted_conversations"], ad["headline"]) == (1, 0, None)
    assert document["coverage"]["events_sent"] == 1 and document["coverage"]["with_ad"] == 0
    assert document["coverage"]["match_keys"]["em"] == 0.0  # the old event's keys are unknown
    with sqlite3.connect(path) as check:
        assert check.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


def test_unattributed_counts_come_from_the_runs(capi_home: Path) -> None:
    with Ledger.open(capi_home / "ledger.sqlite3") as ledger:
        for unattributed in (3, 4):
            ledger.record_run(started_at=NOW - 60 + unattributed, dataset_id=DATASET, inputs=["orders.csv"],
                              counts={"read": 10, "unattributed": unattributed, "sent": 0}, exit_code=0)
        ledger.record_run(started_at=NOW - 40 * 86400, dataset_id=DATASET, inputs=["old.csv"],
                          counts={"unattributed": 50}, exit_code=0)
    document = json.loads(CliRunner().invoke(app, ["report", "--json"], env={"CAPI_DATASET_ID": DATASET}).stdout)
    assert document["coverage"]["unattributed"] == 7
    assert [run["unattributed"] for run in document["runs"]] == [4, 3, 50]  # newest first


def test_no_ledger_is_an_empty_report_and_creates_nothing(capi_home: Path) -> None:
    result = CliRunner().invoke(app, ["report", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["rows"] == []
    assert not (capi_home / "ledger.sqlite3").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--by", "week"], "--by"),
    (["--since", "yesterday"], "--since 'yesterday'"),
    (["--since", "1d", "--until", "3d"], "is after --until"),
])
def test_bad_options_are_one_line_exit_2(args: list[str], message: str) -> None:
    result = CliRunner().invoke(app, ["report", *args])
    assert result.exit_code == 2
    assert message in result.stderr and "Traceback" not in result.stderr


def test_colour_on_a_terminal_only(history: dict) -> None:
    import os
    import pty
    import subprocess
    import sys

    master, slave = pty.openpty()
    env = {k: v for k, v in history["env"].items() if k != "NO_COLOR"}
    proc = subprocess.run([sys.executable, "-m", "capi_cli", "report"], env=env, stdout=slave,
                          stderr=subprocess.PIPE, timeout=60)
    os.close(slave)
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    assert proc.returncode == 0, proc.stderr
    assert b"\x1b[" in b"".join(chunks) and AD_A.encode() in b"".join(chunks)
