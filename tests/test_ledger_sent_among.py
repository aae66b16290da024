"""Ledger.sent_among (what a re-run skips) answers exactly what the ledger records, whether the keys
sit side by side in the events table (its read by rowid) or not (its lookups one by one)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from capi_cli.ledger import Ledger, LedgerState, PendingEvent

STATES = [LedgerState.SENT] * 6 + [LedgerState.REJECTED, LedgerState.FAILED, LedgerState.UNCERTAIN]


def _reference(ledger: Ledger, dataset: str, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
    return {key for key, (state, _) in ledger.entries(dataset, keys).items() if state == LedgerState.SENT}


@pytest.mark.parametrize("seed", range(6))
def test_sent_among_equals_the_recorded_states(tmp_path: Path, seed: int) -> None:
    ledger = Ledger.open(tmp_path / "ledger.sqlite3")
    _record_and_compare(ledger, random.Random(seed))
    ledger.close()


def test_postgres_sent_among_equals_the_recorded_states_and_reads_ahead(pg_url: str) -> None:
    """On PostgreSQL a re-run's chunks are mostly answered from a read-ahead window of the keys
    recorded `sent` (ledger/pg_readahead.py): never "sent" for an event in another state."""
    from capi_cli.ledger import open_ledger

    with open_ledger(pg_url) as ledger:
        with ledger.sender():
            _record_and_compare(ledger, random.Random(7))
            events = [PendingEvent("Purchase", f"ra-{i}", 0) for i in range(3000)]
            keys = [(e.event_name, e.event_id) for e in events]
            ledger.begin_batch("d3", "ra", events)
            ledger.settle("d3", "ra", keys[:2900], LedgerState.SENT)
            ledger.settle("d3", "ra", keys[2900:], LedgerState.FAILED)
        asked: list[int] = []
        lookup = ledger._lookup
        ledger._lookup = lambda *args: (asked.append(1), lookup(*args))[1]  # type: ignore[method-assign]
        for start in range(0, 3000, 500):
            chunk = keys[start : start + 500]
            assert ledger.sent_among("d3", chunk) == set(keys[:2900]) & set(chunk)
        assert len(asked) <= 2  # the first chunk and the one with failed rows; the rest from the window
        # The window holds ids by event name: the same ids under another name were never sent.
        assert ledger.sent_among("d3", [("LeadSubmitted", event_id) for _, event_id in keys[:500]]) == set()


def _record_and_compare(ledger: Any, rng: random.Random) -> None:
    names = ["Purchase", "LeadSubmitted"]
    recorded: dict[str, list[tuple[str, str]]] = {"d1": [], "d2": []}
    # Batches of both datasets interleaved, names mixed, in varying states: rows of one file are
    # side by side in some stretches and scattered in others.
    for batch in range(30):
        dataset = "d1" if rng.random() < 0.7 else "d2"
        events = [PendingEvent(rng.choice(names) if rng.random() < 0.2 else names[0], f"e{batch}-{i}", 0)
                  for i in range(rng.randint(1, 120))]
        ledger.begin_batch(dataset, f"b{batch}", events)
        by_state: dict[LedgerState, list[tuple[str, str]]] = {}
        for event in events:
            by_state.setdefault(rng.choice(STATES), []).append((event.event_name, event.event_id))
        for state, keys in by_state.items():
            ledger.settle(dataset, f"b{batch}", keys, state)
        recorded[dataset] += [(e.event_name, e.event_id) for e in events]
    unknown = [("Purchase", f"never-{i}") for i in range(50)]
    for dataset, keys in recorded.items():
        orders = {
            "file order": keys,
            "shuffled": rng.sample(keys, len(keys)),
            "with unknown keys": [*keys[:40], *unknown, *keys[40:]],
            "other dataset's keys": recorded["d2" if dataset == "d1" else "d1"],
        }
        for label, ordered in orders.items():
            for size in (1, 31, 32, 200, 500):
                for start in range(0, len(ordered), size):
                    chunk = ordered[start : start + size]
                    assert ledger.sent_among(dataset, chunk) == _reference(ledger, dataset, chunk), (label, size)


def test_a_chunk_in_file_order_is_answered_by_one_read_by_rowid(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "ledger.sqlite3")
    events = [PendingEvent("Purchase", f"o-{i}", 0) for i in range(1000)]
    ledger.begin_batch("d", "b", events)
    ledger.settle("d", "b", [(e.event_name, e.event_id) for e in events], LedgerState.SENT)
    statements: list[str] = []
    ledger._read_connection().set_trace_callback(statements.append)
    keys = [(e.event_name, e.event_id) for e in events[100:600]]
    assert ledger.sent_among("d", keys) == set(keys)
    assert len(statements) == 2 and "NOT INDEXED" in statements[1]  # the probe, then the read
    ledger.close()


def test_ids_reach_postgresql_as_they_are(pg_url: str) -> None:
    """Lookups and settles pass their ids as one text[] literal (pg_sql.text_array): whatever an
    id holds (quotes, backslashes, commas, braces, NULL, spaces, newlines), the server reads the
    same strings back, so a lookup or a settle never misses or hits another event."""
    import psycopg
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from capi_cli.ledger.pg_sql import text_array

    hostile = ['a"b', "c\\d", "e,f", "{x}", "NULL", "null", " sp ", "ü-ñ", "x\ny", "'q'", '\\"', "", "}", "{"]
    ids = st.text(alphabet=st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=12)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        def read_back(values: list[str]) -> list[str]:
            return list(conn.execute("SELECT %s::text[]", (text_array(values),)).fetchone()[0])

        assert read_back([]) == [] and read_back(hostile) == hostile

        @given(st.lists(ids, max_size=8))
        @settings(max_examples=150, deadline=None)
        def same(values: list[str]) -> None:
            assert read_back(values) == values

        same()
