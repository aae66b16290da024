"""`capi report` on a large ledger (SPEC §10: a million events in under 2 s): the reads keep to
the plans that make them fast, and the migration that made them so keeps the figures."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from capi_cli.ledger import Ledger
from capi_cli.ledger.schema import MIGRATIONS, split_sql, sqlite_sql
from capi_cli.report import Period, build_report

DATASET, OTHER = "1234567890", "9876543210"
T = 1_790_000_000
AD_A, AD_B = "120210000000001", "120210000000002"


class Recorder:
    """A ReportSource that keeps each read's SQL and answers it from a SQLite connection."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.reads: list[tuple[str, list[Any]]] = []

    def report_query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        self.reads.append((sql, list(params)))
        return self.conn.execute(sql, list(params)).fetchall()

    def plan(self, starts: str) -> str:
        sql, params = next((sql, params) for sql, params in self.reads if sql.startswith(starts))
        return "\n".join(row[3] for row in self.conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))


def test_the_reads_keep_to_their_indexes_with_a_dataset(tmp_path: Path) -> None:
    """With a dataset, SQLite took the event key's index (dataset_id first) for the sent events and
    sorted a million rows; and each "converted?" probe read table rows (events_referral)."""
    with Ledger.open(tmp_path / "ledger.sqlite3") as ledger:
        source = Recorder(ledger._conn)
        build_report(source, Period(T - 86400, T, DATASET))
        sent = source.plan("SELECT 'sent'")
        assert "events_by_ad" in sent and "TEMP B-TREE" not in sent, sent
        conversations = source.plan("SELECT r.channel, r.ad_id")
        # events_converted holds every column the probe reads (state is the partial index's own).
        assert "INDEX events_converted (referral_key=? AND channel=? AND event_time<?)" in conversations, conversations


def test_the_two_long_reads_run_on_two_connections(tmp_path: Path) -> None:
    """Every sent event on the ledger's connection, the probe per conversation on its second one
    at the same time (report.build._long_reads): on two cores, the report takes the longer read
    instead of their sum."""
    _ledger_before_events_converted(tmp_path / "ledger.sqlite3")
    with Ledger.open(tmp_path / "ledger.sqlite3") as ledger:
        on: dict[str, list[str]] = {"main": [], "second": []}
        ledger._conn.set_trace_callback(on["main"].append)
        ledger._read_connection().set_trace_callback(on["second"].append)
        document = build_report(ledger, Period(T - 86400, T, DATASET)).to_dict()
    assert any(sql.startswith("SELECT 'sent'") for sql in on["main"])
    assert [sql for sql in on["second"] if sql.startswith("SELECT")] == [
        next(sql for sql in on["second"] if sql.startswith("SELECT r.channel, r.ad_id"))]
    assert {row["ad_id"]: row["converted_conversations"] for row in document["rows"]} == {AD_A: 1, AD_B: 0, None: 0}


def _ledger_before_events_converted(path: Path) -> None:
    """A ledger as the capi before events_converted wrote it (the migrations before the one that
    makes it, found by what it does), with events of two datasets around the period's end."""
    conn = sqlite3.connect(path)
    before = next(n for n, script in enumerate(MIGRATIONS) if "events_converted" in sqlite_sql(script))
    for number, script in enumerate(MIGRATIONS[:before]):
        for statement in split_sql(sqlite_sql(script)):
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {number + 1}")
    referrals = [("wamid.A1", AD_A, T - 5000), ("wamid.A2", AD_A, T - 4000), ("wamid.A3", AD_A, T - 3000),
                 ("wamid.B1", AD_B, T - 2000)]
    for key, ad, ts in referrals:
        conn.execute("INSERT INTO referrals (channel, user_key, message_key, ctwa_clid, ad_id, source_type, ts, "
                     "stored_at, headline) VALUES ('whatsapp', ?, ?, ?, ?, 'ad', ?, ?, 'Sale')",
                     (f"u-{key}", key, f"clid-{key}", ad, ts, T))
    events = [  # (dataset, id, state, time, referral)
        (DATASET, "e1", "sent", T - 100, "wamid.A1"),  # A1 converts
        (DATASET, "e2", "sent", T - 50, "wamid.A1"),  # ... once, however many events
        (DATASET, "e3", "sent", T + 100, "wamid.A2"),  # A2: after the period's end
        (OTHER, "e4", "sent", T - 100, "wamid.A3"),  # A3: in the other dataset only
        (DATASET, "e5", "rejected", T - 100, "wamid.B1"),  # B1: refused, converts nothing
        (DATASET, "e6", "sent", T - 10, None),  # ad unknown
    ]
    for dataset, event_id, state, event_time, key in events:
        conn.execute("INSERT INTO events (dataset_id, event_name, event_id, state, event_time, attempts, created_at, "
                     "updated_at, channel, value, currency, referral_key, ad_id, attribution, match_keys) "
                     "VALUES (?, 'Purchase', ?, ?, ?, 1, ?, ?, 'whatsapp', 10.5, 'INR', ?, ?, ?, 'ph')",
                     (dataset, event_id, state, event_time, T, T, key,
                      {"wamid.B1": AD_B}.get(key or "", AD_A if key else None), "click_id" if key else "none"))
    conn.commit()
    conn.close()


@pytest.mark.parametrize("dataset", [DATASET, None])
def test_an_older_ledger_migrates_to_events_converted_and_reports_the_same(tmp_path: Path,
                                                                             dataset: str | None) -> None:
    path = tmp_path / "ledger.sqlite3"
    _ledger_before_events_converted(path)
    period = Period(T - 86400, T, dataset)
    with sqlite3.connect(path) as conn:
        before = build_report(Recorder(conn), period).to_dict()
    with Ledger.open(path) as ledger:
        after = build_report(ledger, period).to_dict()
        indexes = {row[0] for row in ledger._conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert after == before
    assert "events_converted" in indexes and "events_referral" not in indexes
    assert "events_batch" not in indexes  # no query read it; every claim and settle wrote it
    rows = {row["ad_id"]: row for row in after["rows"]}
    assert (rows[AD_A]["conversations"], rows[AD_A]["converted_conversations"]) == (3, 2 if dataset is None else 1)
    assert (rows[AD_B]["conversations"], rows[AD_B]["converted_conversations"]) == (1, 0)
    assert after["coverage"]["rejected"] == 1 and after["coverage"]["events_sent"] == (4 if dataset is None else 3)


def test_postgres_report_reads_are_not_jit_compiled(pg_url: str) -> None:
    """PostgreSQL compiled the report's reads of a large ledger (their estimated cost is high),
    which took longer than it saved; the session's own setting is left as it was."""
    from capi_cli.ledger.postgres import PostgresLedger

    with PostgresLedger.open(pg_url) as ledger:
        assert ledger.report_query("SELECT current_setting('jit')") == [("off",)]
        assert ledger._raw.execute("SELECT current_setting('jit')").fetchone()[0] == "on"
