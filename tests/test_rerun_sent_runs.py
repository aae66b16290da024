"""A re-run's usual chunk, every record sent before, travels as one SENT_RUN item (its keys alone)
instead of one staged record per row: the duplicate check, the `skipped` count and the problems
must come out exactly as they did row by row. Also the pieces that keep a re-run short: the
duplicate check's table sized from the file, and a worker's single PostgreSQL connection."""

from __future__ import annotations

import os
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from capi_cli.events.build import EventBuilder, derive_event_id
from capi_cli.events.fields import FieldMapper
from capi_cli.events.keyset import KeySet, expected_records
from capi_cli.events.staging import SentKeys, Stager

NOW = int(time.time())
HEADER = "event_name,event_time,order_id,ctwa_clid,whatsapp_business_account_id,value,currency"


def _row(order: str) -> str:
    return f"Purchase,{NOW - 60},{order},ARAkClid{order},104996122399160,9.5,USD"


def _stager() -> Stager:
    settings_ = SimpleNamespace(default_country="US", timezone="UTC", ig_account_field=None, channel="whatsapp",
                                currency=None, whatsapp_business_account_id="1", page_id=None, ig_account_id=None)
    return Stager(FieldMapper(None, {}), EventBuilder(settings_, now=NOW, window_seconds=7 * 86400), None, None)


def _key(order: str) -> tuple[str, str]:
    return ("Purchase", derive_event_id("Purchase", "order", order))


def test_a_chunk_is_one_run_of_keys_only_when_every_record_was_sent() -> None:
    stager = _stager()
    header = HEADER.split(",")
    raws = [(header, _row(f"o-{i}").split(",")) for i in range(5)]
    sent_keys = {_key(f"o-{i}") for i in range(5)}
    everything = stager.stage_chunk(raws, lambda keys: sent_keys & set(keys), whole=True)
    assert type(everything) is SentKeys
    assert list(everything) == [f"Purchase\x1f{_key(f'o-{i}')[1]}" for i in range(5)]

    def staged_one_by_one(chunk: list[Any], sent: set[tuple[str, str]]) -> bool:
        answer = stager.stage_chunk(chunk, lambda keys: sent & set(keys), whole=True)
        return type(answer) is list and len(answer) == len(chunk)

    assert staged_one_by_one(raws, sent_keys - {_key("o-3")})  # one not sent
    assert staged_one_by_one([*raws, raws[1]], sent_keys)  # a duplicate in the chunk
    with_unknown = [([*header, "colour"], [*_row(f"o-{i}").split(","), "red"]) for i in range(5)]
    assert staged_one_by_one(with_unknown, sent_keys)  # an unknown column: its warning is due
    assert type(stager.stage_chunk(raws, lambda keys: sent_keys & set(keys))) is list  # not asked for


@pytest.mark.parametrize("workers", ["0", "2"])
def test_a_rerun_in_runs_counts_and_reports_duplicates_as_row_by_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: str
) -> None:
    """6,000 orders sent; the re-run's file repeats one of them inside an all-sent chunk far from its
    first row (only the run's keys show it), another within the first chunk, and adds three new
    orders: each repeat is reported on its own line, the rest skipped, the new ones built."""
    from capi_cli.config import load_settings
    from capi_cli.delivery.skip import LedgerSkip
    from capi_cli.events import pipeline
    from capi_cli.events.pipeline import BuiltEvent, Problem, iter_events
    from capi_cli.ledger import Ledger, PendingEvent

    monkeypatch.setenv("CAPI_WORKERS", workers)
    orders = [f"o-{i}" for i in range(6000)]
    rows = [_row(order) for order in orders]
    rows.insert(10, _row("o-3"))  # line 12 (after the header and ten rows)
    rows.insert(3001, _row("o-5"))  # line 3003
    rows += [_row(f"new-{i}") for i in range(3)]
    path = tmp_path / "orders.csv"
    path.write_text(HEADER + "\n" + "\n".join(rows) + "\n")
    ledger = Ledger.open(tmp_path / "ledger.sqlite3")
    sent = [PendingEvent(*_key(order), NOW - 60) for order in orders]
    ledger.begin_batch("42", "b1", sent)
    ledger.settle("42", "b1", [(e.event_name, e.event_id) for e in sent], "sent")
    runs: list[int] = []
    real_add_all = KeySet.add_all
    monkeypatch.setattr(KeySet, "add_all", lambda self, keys: runs.append(len(keys)) or real_add_all(self, keys))

    skip = LedgerSkip(ledger, "42")
    settings_ = load_settings(env={"CAPI_HOME": str(tmp_path), "CAPI_WORKERS": workers})
    items = list(iter_events([path], settings_, skip=skip))
    ledger.close()

    built = [item for item in items if isinstance(item, BuiltEvent)]
    duplicates = [(item.line, item.code) for item in items
                  if isinstance(item, Problem) and item.code == "duplicate_event_id"]
    assert sorted(duplicates) == [(12, "duplicate_event_id"), (3003, "duplicate_event_id")]
    assert len(built) == 3
    assert skip.skipped == 6000 and skip.counts.read == 6000
    assert sum(runs) >= 2500, "the all-sent chunks came as runs of keys"
    assert pipeline.SENT_RUN == 6


def test_add_all_answers_what_add_answers_one_at_a_time() -> None:
    keys = [f"Purchase\x1fid-{i % 7000}" for i in range(20_000)]  # repeats, and growth past 16k slots
    one, many = KeySet(8), KeySet(8)
    expected = [position for position, key in enumerate(keys) if one.add(key)]
    assert many.add_all(keys[:9000]) + [p + 9000 for p in many.add_all(keys[9000:])] == expected
    assert len(one) == len(many) == 7000


def test_expected_records_is_about_the_number_of_lines(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(HEADER + "\n" + "\n".join(_row(f"o-{i}") for i in range(30_000)) + "\n")
    assert 27_000 <= expected_records([path, path]) // 2 <= 33_000
    assert expected_records(["-", tmp_path / "missing.csv"]) == 0
    (tmp_path / "empty.csv").write_bytes(b"")
    assert expected_records([tmp_path / "empty.csv"]) == 0
    pretty = tmp_path / "orders.json"  # a record over many lines: no guess from its lines
    pretty.write_text("[\n" + ",\n".join(f'{{\n "order_id": "o-{i}"\n}}' for i in range(3000)) + "\n]\n")
    assert expected_records([pretty]) == 0
    assert expected_records([path], "ndjson") == expected_records([path])


def _capi_connections(pg_url: str) -> int:
    import psycopg

    database = pg_url.rsplit("/", 1)[1].split("?")[0]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        return int(conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND "
                                "application_name = 'capi'", (database,)).fetchone()[0])


def test_a_worker_asks_the_postgresql_ledger_on_one_connection_made_early(
    pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker connects while the command still reads its options (CAPI_LEDGER), and reads on
    that one connection; the command's own ledger keeps its second connection for reads."""
    from capi_cli.events.worker import _Worker, early_connection
    from capi_cli.ledger import LedgerRef, open_ledger

    with open_ledger(pg_url) as ledger:  # migrated, as the command does before its workers read
        ledger.sent_among("42", [("Purchase", "x")])
        assert _capi_connections(pg_url) == 2
    monkeypatch.setenv("CAPI_LEDGER", pg_url)
    early = early_connection()
    assert early is not None and early[0] == pg_url
    config = {"settings": {name: None for name in EventBuilder.SETTINGS}, "now": NOW, "window_seconds": 86400,
              "mapping": None, "sets": {}, "since": None, "until": None, "sent": (LedgerRef.parse(pg_url), "42", None)}
    worker = _Worker(config, early)
    assert worker.sent_among is not None
    assert worker.sent_among([("Purchase", "x")]) == set()
    assert _capi_connections(pg_url) == 1
    assert not early[1].closed  # the worker's ledger reads on it

    monkeypatch.setenv("CAPI_LEDGER", str(Path(os.devnull)))
    assert early_connection() is None
    monkeypatch.setenv("CAPI_LEDGER", pg_url.rsplit("/", 1)[0] + "/no_such_database")
    assert early_connection() is None  # the command's own connection says what is wrong
    early[1].close()


def test_an_early_connection_to_another_ledger_is_closed(pg_url: str, tmp_path: Path) -> None:
    from capi_cli.events.worker import _Worker
    from capi_cli.ledger import LedgerRef
    from capi_cli.ledger.pg_sql import connect

    early = (pg_url, connect(pg_url))
    config = {"settings": {name: None for name in EventBuilder.SETTINGS}, "now": NOW, "window_seconds": 86400,
              "mapping": None, "sets": {}, "since": None, "until": None,
              "sent": (LedgerRef.parse(str(tmp_path / "ledger.sqlite3")), "42", None)}
    _Worker(config, early)
    assert early[1].closed


@pytest.mark.parametrize("workers", ["0", "2"])
def test_stretches_of_skipped_records_in_a_mixed_chunk_keep_their_place(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: str
) -> None:
    """A nightly file: sent orders and new ones side by side, as a --shard host sees its share among
    the others'. No chunk is sent whole, so they go row by row: a repeat of a sent order is
    reported on its own line, in line order with the new orders' problems, and --limit counts
    only what is not skipped."""
    from capi_cli.config import load_settings
    from capi_cli.delivery.skip import LedgerSkip
    from capi_cli.events.pipeline import BuildOptions, BuiltEvent, Problem, iter_events
    from capi_cli.ledger import Ledger, PendingEvent

    monkeypatch.setenv("CAPI_WORKERS", workers)
    orders = [f"o-{i}" for i in range(6000)]
    rows = [_row(order) if i % 3 else _row(order).replace(",9.5,", ",-1,") for i, order in enumerate(orders)]
    rows.insert(4001, _row("o-4"))  # a repeat of a sent order among sent ones (o-4 is sent: 4 % 3 != 0)
    path = tmp_path / "orders.csv"
    path.write_text(HEADER + "\n" + "\n".join(rows) + "\n")
    ledger = Ledger.open(tmp_path / "ledger.sqlite3")
    sent = [PendingEvent(*_key(order), NOW - 60) for i, order in enumerate(orders) if i % 3]
    ledger.begin_batch("42", "b1", sent)
    ledger.settle("42", "b1", [(e.event_name, e.event_id) for e in sent], "sent")
    settings_ = load_settings(env={"CAPI_HOME": str(tmp_path), "CAPI_WORKERS": workers})

    skip = LedgerSkip(ledger, "42")
    items = list(iter_events([path], settings_, skip=skip))
    problems = [(item.line, item.code) for item in items if isinstance(item, Problem)]
    built = [item for item in items if isinstance(item, BuiltEvent)]
    assert skip.skipped == 4000 and len(built) + len({line for line, _ in problems}) == 2001
    assert (4003, "duplicate_event_id") in problems
    assert [line for line, _ in problems] == sorted(line for line, _ in problems)  # in line order

    limited = LedgerSkip(ledger, "42")
    items = list(iter_events([path], settings_, BuildOptions(limit=10), skip=limited))
    assert len([item for item in items if isinstance(item, BuiltEvent)]) <= 10
    assert limited.skipped == 20  # the sent ones among the first 30 rows, not one more
    ledger.close()


def test_expected_records_never_reads_a_pipe(tmp_path: Path) -> None:
    """A named pipe or <(gunzip -c ...) given as a CSV: sampling it would take its first lines
    from the reader. It is left alone (no estimate), and every row still reaches the pipeline."""
    import threading

    fifo = tmp_path / "orders.csv"
    os.mkfifo(fifo)
    rows = [HEADER, *(_row(f"o-{i}") for i in range(300))]

    def feed() -> None:
        with open(fifo, "w") as out:
            out.write("\n".join(rows) + "\n")

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        assert expected_records([fifo], "csv") == 0
        writer.join(timeout=0.3)
        assert writer.is_alive(), "the pipe was opened and read before the reader"
        from capi_cli.events.readers import read_records

        assert len(list(read_records(fifo, "csv"))) == 300
    finally:
        if writer.is_alive():  # nothing read it: let the writer finish
            with open(fifo) as drain:
                drain.read()
        writer.join(timeout=10)
