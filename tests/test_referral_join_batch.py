"""The batched referral join against a plain one-by-one reference, on generated histories.

The reference (`OneByOne`) answers each order's question the way SPEC §4 says it, in Python, over
the generated referrals: the most recent WhatsApp referral with a click id of that customer (by
phone digits or BSUID) within [event time - window, event time]; for Messenger/Instagram the
account of the most recent referral of that PSID/IGSID. The ledger answers a chunk of orders in one
batched lookup (ledger.referrals, events.join). Both build the same events.
"""

from __future__ import annotations

import csv
import random
import sqlite3
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capi_cli.config import Settings
from capi_cli.events.pipeline import BuildOptions, BuiltEvent, iter_events
from capi_cli.ledger import MIGRATIONS, Ledger, phone_digits

NOW = 1_790_000_000
HOUR = 3600
WABA = "102290129340398"
PHONES = ["919876543210", "905321234567", "393471234567"]
WRITINGS = {  # how people write each phone in an export
    "919876543210": ["+91 98765 43210", "919876543210", "+91-98765-43210", "0091 98765 43210"],
    "905321234567": ["+90 532 123 45 67", "(+90) 532 123 4567", "905321234567"],
    "393471234567": ["+39 347 123 4567", "393471234567"],
}
BSUIDS = ["US.13491208655302741918", "IT.55510293847566372819"]
PSIDS = ["8345678901234567", "919876543210"]  # a PSID that looks like a phone: channels never mix


def _iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@st.composite
def histories(draw: st.DrawFn) -> list[dict[str, Any]]:
    count = draw(st.integers(0, 24))
    out = []
    for n in range(count):
        channel = draw(st.sampled_from(["whatsapp", "whatsapp", "whatsapp", "messenger", "instagram"]))
        ts = NOW - draw(st.integers(0, 40)) * HOUR
        record: dict[str, Any] = {
            "channel": channel, "ctwa_clid": None, "ad_id": "120215550001112223", "source_type": "ad",
            "source_url": None, "ref": None, "user_id": None, "wa_id": None, "bsuid": None,
            "business_id": None, "phone_number_id": None, "message_id": f"wamid.{n:03d}",
            "timestamp": _iso(ts), "kind": "message", "origin": f"gen:{n}",
        }
        if channel == "whatsapp":
            phone = draw(st.sampled_from([None, *PHONES]))
            bsuid = draw(st.sampled_from([None, *BSUIDS])) if phone else draw(st.sampled_from(BSUIDS))
            record.update(wa_id=phone, bsuid=bsuid, user_id=phone or bsuid, business_id=WABA,
                          ctwa_clid=draw(st.sampled_from([None, "", f"CLID-{n}"])))
        else:
            record.update(user_id=draw(st.sampled_from(PSIDS)),
                          business_id=draw(st.sampled_from([None, f"1000{n:05d}"])))
        out.append(record)
    return out


@st.composite
def orders(draw: st.DrawFn) -> list[dict[str, Any]]:
    rows = []
    for n in range(draw(st.integers(1, 30))):
        at = NOW - draw(st.integers(0, 40)) * HOUR
        row: dict[str, Any] = {"event_name": "LeadSubmitted", "event_time": at, "order_id": f"o{n}"}
        kind = draw(st.sampled_from(["phone", "wa_id", "bsuid", "both", "psid", "igsid"]))
        phone = draw(st.sampled_from(PHONES))
        if kind in ("phone", "both"):
            row["phone"] = draw(st.sampled_from(WRITINGS[phone]))
        if kind == "wa_id":
            row["wa_id"] = phone
        if kind in ("bsuid", "both"):
            row["bsuid"] = draw(st.sampled_from(BSUIDS))
        if kind in ("phone", "wa_id", "bsuid", "both"):
            row["messaging_channel"] = "whatsapp"
        else:
            row["messaging_channel"] = "messenger" if kind == "psid" else "instagram"
            row["psid" if kind == "psid" else "igsid"] = draw(st.sampled_from(PSIDS))
        rows.append(row)
    return rows


class OneByOne:
    """The plain reference: each question answered on its own, by reading every referral."""

    def __init__(self, history: list[dict[str, Any]]) -> None:
        self.history = history

    @staticmethod
    def _ts(record: dict[str, Any]) -> int:
        return int(datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp())

    def latest_whatsapp_referral(self, user: str, at: int, window_seconds: int) -> dict[str, Any] | None:
        text = user.strip()
        digits = phone_digits(text)
        mine = [r for r in self.history
                if r["channel"] == "whatsapp" and r["ctwa_clid"] and at - window_seconds <= self._ts(r) <= at
                and ((digits is not None and r["wa_id"] == digits) or r["bsuid"] == text)]
        if not mine:
            return None
        best = min(mine, key=lambda r: (-self._ts(r), r["message_id"]))
        return {"ctwa_clid": best["ctwa_clid"], "business_id": best["business_id"]}

    def account_for_user(self, channel: str, user_id: str) -> str | None:
        mine = [r for r in self.history
                if r["channel"] == channel and r["user_id"] == user_id.strip() and r["business_id"]]
        return max(mine, key=lambda r: (self._ts(r), r["business_id"]))["business_id"] if mine else None


def _write_orders(path: Path, rows: list[dict[str, Any]]) -> None:
    columns = ["event_name", "event_time", "order_id", "messaging_channel", "phone", "wa_id", "bsuid", "psid",
               "igsid"]
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, columns)
        writer.writeheader()
        writer.writerows(rows)


def _built(path: Path, home: Path, referrals: Any, window_days: int) -> list[tuple[Any, ...]]:
    config = Settings(home=home, config_file=home / "config.yaml", profile="default",
                      ledger=str(home / "ledger.sqlite3"), default_country="IN")
    options = BuildOptions(now=NOW, attribution_window_days=window_days)
    out = []
    for item in iter_events([path], config, options, referrals=referrals):
        if isinstance(item, BuiltEvent):
            out.append((item.line, item.payload_json, item.attributed))
        else:
            out.append((item.line, item.code, item.field))
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(history=histories(), rows=orders(), window_days=st.sampled_from([1, 2]), seed=st.integers(0, 2**16),
       runs=st.integers(1, 4))
def test_batched_join_builds_what_the_one_by_one_reference_builds(
    history: list[dict[str, Any]], rows: list[dict[str, Any]], window_days: int, seed: int, runs: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        shuffled = list(history)
        random.Random(seed).shuffle(shuffled)  # stored in any order, over several runs
        with Ledger.open(home / "ledger.sqlite3") as ledger:
            for n in range(runs):
                ledger.referrals.store_referrals(shuffled[n::runs])
        path = home / "orders.csv"
        _write_orders(path, rows)
        with Ledger.open(home / "ledger.sqlite3") as ledger:
            batched = _built(path, home, ledger.referrals, window_days)
        one_by_one = _built(path, home, OneByOne(history), window_days)
    assert batched == one_by_one


@settings(max_examples=80, deadline=None)
@given(history=histories(), asks=st.lists(st.tuples(
    st.lists(st.sampled_from([*PHONES, *[w for ws in WRITINGS.values() for w in ws], *BSUIDS, "US.0"]),
             min_size=1, max_size=3),
    st.integers(0, 40)), max_size=20), window=st.sampled_from([0, HOUR, 5 * HOUR, 86400]))
def test_latest_whatsapp_referrals_match_one_question_at_a_time(history, asks, window) -> None:
    reference = OneByOne(history)
    questions = [(users, NOW - hours * HOUR) for users, hours in asks]
    with tempfile.TemporaryDirectory() as tmp, Ledger.open(Path(tmp) / "ledger.sqlite3") as ledger:
        ledger.referrals.store_referrals(history)
        answers = ledger.referrals.latest_whatsapp_referrals(questions, window)
    expected = []
    for users, at in questions:
        found = next((f for f in (reference.latest_whatsapp_referral(u, at, window) for u in users) if f), None)
        expected.append(found)
    assert [a and {"ctwa_clid": a["ctwa_clid"], "business_id": a["business_id"]} for a in answers] == expected


def test_a_chunk_of_orders_is_one_lookup_not_one_per_order(tmp_path: Path) -> None:
    """2,000 orders joined by phone: a few queries per 500-order chunk, not one (or three) per order."""
    history = [{"channel": "whatsapp", "ctwa_clid": f"CLID-{n}", "wa_id": f"91987650{n:04d}",
                "user_id": f"91987650{n:04d}", "business_id": WABA, "message_id": f"wamid.{n}",
                "timestamp": _iso(NOW - HOUR), "kind": "message"} for n in range(2000)]
    rows = [{"event_name": "LeadSubmitted", "event_time": NOW - 60, "order_id": f"o{n}",
             "messaging_channel": "whatsapp", "phone": f"+91 98765 0{n:04d}"} for n in range(2000)]
    path = tmp_path / "orders.csv"
    _write_orders(path, rows)
    built, lookups = _built_counting_lookups(path, tmp_path, history)
    assert [entry[2] for entry in built] == [True] * 2000
    assert 0 < len(lookups) <= 2 * 2 * (2000 // 500), len(lookups)


def _built_counting_lookups(
    path: Path, home: Path, history: list[dict[str, Any]]
) -> tuple[list[tuple[Any, ...]], list[str]]:
    """`_built` of `path` with `history` stored, and the statements that read the referrals."""
    with Ledger.open(home / "ledger.sqlite3") as ledger:
        ledger.referrals.store_referrals(history)
        statements: list[str] = []
        ledger._conn.set_trace_callback(statements.append)
        built = _built(path, home, ledger.referrals, 7)
    return built, [s for s in statements if "FROM referrals" in s]


def test_a_ledger_from_before_the_customer_index_is_migrated_and_joins(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    index = next(n for n, script in enumerate(MIGRATIONS) if "referrals_customer" in script)
    with sqlite3.connect(path) as conn:  # the schema just before the customer index
        for script in MIGRATIONS[:index]:
            conn.executescript(script)
        conn.execute(f"PRAGMA user_version = {index}")
    with Ledger.open(path) as ledger:
        ledger.referrals.store_referrals([{"channel": "whatsapp", "ctwa_clid": "CLID-1", "wa_id": "919876543210",
                                           "user_id": "919876543210", "business_id": WABA, "message_id": "wamid.1",
                                           "timestamp": _iso(NOW - HOUR)}])
        found = ledger.referrals.latest_whatsapp_referral("+91 98765 43210", NOW, 86400)
        plan = ledger._conn.execute(
            "EXPLAIN QUERY PLAN SELECT ts FROM referrals WHERE user_key IN ('a', 'b') AND channel = 'whatsapp' "
            "AND ts BETWEEN 1 AND 2").fetchall()
    assert found is not None and found["ctwa_clid"] == "CLID-1"
    assert "referrals_customer" in str(plan)
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert {"referrals_customer", "referrals_customer_bsuid"} <= names
    assert not {"referrals_user", "referrals_wa", "referrals_bsuid"} & names


def test_a_phone_read_in_its_rows_country_is_joined_in_the_chunks_lookup(tmp_path: Path) -> None:
    """A phone written without its country code is read in the row's own country (here Brazil,
    the default being India): the chunk's lookup asks for the number as the event will carry it,
    so no order falls back to a query of its own."""
    history = [{"channel": "whatsapp", "ctwa_clid": f"CLID-{n}", "wa_id": f"55119{8000 + n}4321",
                "user_id": f"55119{8000 + n}4321", "business_id": WABA, "message_id": f"wamid.{n}",
                "timestamp": _iso(NOW - HOUR), "kind": "message"} for n in range(600)]
    path = tmp_path / "orders.csv"
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["event_name", "event_time", "order_id", "messaging_channel", "phone", "country"])
        writer.writerows(["LeadSubmitted", NOW - 60, f"o{n}", "whatsapp", f"(11) 9{8000 + n}-4321", "BR"]
                         for n in range(600))
    built, lookups = _built_counting_lookups(path, tmp_path, history)
    assert [entry[2] for entry in built] == [True] * 600
    assert '"CLID-7"' in built[7][1]
    assert 0 < len(lookups) <= 2 * 2 * 2, len(lookups)


def test_the_join_reads_the_ledger_through_a_memory_map(tmp_path: Path) -> None:
    """The join's lookups land on random pages of a large file: it reads through a memory map
    (a page the OS holds is read in place), not only SQLite's page cache."""
    with Ledger.open(tmp_path / "ledger.sqlite3") as ledger:
        assert ledger._conn.execute("PRAGMA mmap_size").fetchone()[0] == 0  # not for every command
        ledger.referrals.latest_whatsapp_referrals([(("919876543210",), NOW)], 86400)
        assert ledger._conn.execute("PRAGMA mmap_size").fetchone()[0] >= 1 << 28
