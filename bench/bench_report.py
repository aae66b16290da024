"""A large ledger for `capi report`'s benchmark: N events and M referrals over the last 28 days.

The ledger is made by capi itself (Ledger.open: the real schema and migrations) and filled with
rows shaped like a real one: 2,000 ads over WhatsApp and Messenger, most events tied to a
conversation (by click id or by the join), some with no stored referral, a few rejected or
uncertain, several combinations of match keys, values in two currencies; runs of a nightly cron.

    python bench/bench_report.py LEDGER [--events 1000000] [--referrals 200000]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

ADS = 2000
DAYS = 28
NAMES = ("Purchase", "Purchase", "Purchase", "LeadSubmitted", "OrderShipped", "QualifiedLead")
MATCH_KEYS = ("ph", "em,ph", "em,ph,fn,ln", "em", "ph,country", "")


def generate(path: Path, events: int, referrals: int, seed: int = 16) -> None:
    from capi_cli.ledger import Ledger

    rng = random.Random(seed)
    now = int(time.time())
    start = now - DAYS * 86400
    with Ledger.open(path) as ledger:
        conn = ledger._conn  # bulk load: one transaction, the store's own connection
        conn.execute("BEGIN")
        conversations = []
        rows = []
        for n in range(referrals):
            ad = rng.randrange(ADS)
            channel = "messenger" if ad % 5 == 0 else "whatsapp"
            key = f"wamid.HBgM{n:08d}" if channel == "whatsapp" else f"m_{n:010d}"
            ts = start + rng.randrange(DAYS * 86400)
            conversations.append((channel, key, f"12021{ad:010d}", ts))
            rows.append((channel, f"user{n}", key, f"ARAk{n:012d}" if channel == "whatsapp" else None,
                         f"12021{ad:010d}", "ad", f"https://fb.me/ad{ad}", f"u{n}", ts, "message", ts,
                         f"Ad number {ad}"))
        conn.executemany(
            "INSERT INTO referrals (channel, user_key, message_key, ctwa_clid, ad_id, source_type, source_url, "
            "user_id, ts, kind, stored_at, headline) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        rows = []
        for n in range(events):
            roll = rng.random()
            state = "rejected" if roll < 0.02 else "uncertain" if roll < 0.03 else "sent"
            name = rng.choice(NAMES)
            if rng.random() < 0.8:
                channel, key, ad_id, ts = rng.choice(conversations)
                attribution = "joined" if rng.random() < 0.4 else "click_id"
                event_time = min(now, ts + rng.randrange(3 * 86400))
            else:
                channel, key, ad_id, attribution = "whatsapp", None, None, "none"
                event_time = start + rng.randrange(DAYS * 86400)
            currency = "INR" if rng.random() < 0.7 else "BRL"
            value = round(rng.uniform(5, 900), 2) if name == "Purchase" else None
            rows.append(("1234567890", name, f"ev{n:09d}", state, event_time, f"run-{n // 1000:06d}", 1,
                         "orders.csv", n + 2, now, now, channel, value, currency if value else None, key, ad_id,
                         attribution, rng.choice(MATCH_KEYS)))
            if len(rows) == 50_000:
                _events(conn, rows)
                rows = []
        _events(conn, rows)
        for night in range(DAYS):
            conn.execute(
                "INSERT INTO runs (run_id, started_at, ended_at, dataset_id, inputs, read, unattributed, sent, "
                "exit_code) VALUES (?, ?, ?, '1234567890', '[\"orders.csv\"]', ?, ?, ?, 0)",
                (f"night{night}", start + night * 86400, start + night * 86400 + 60, events // DAYS, 40,
                 events // DAYS))
        conn.execute("COMMIT")


def _events(conn: object, rows: list[tuple[object, ...]]) -> None:
    conn.executemany(  # type: ignore[attr-defined]
        "INSERT INTO events (dataset_id, event_name, event_id, state, event_time, batch_id, attempts, source, "
        "line, created_at, updated_at, channel, value, currency, referral_key, ad_id, attribution, match_keys) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("ledger", type=Path)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--referrals", type=int, default=200_000)
    args = parser.parse_args()
    began = time.perf_counter()
    generate(args.ledger, args.events, args.referrals)
    print(f"{args.events:,} events, {args.referrals:,} referrals in {time.perf_counter() - began:.1f} s")
