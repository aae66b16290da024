"""Benchmark (SPEC §9): the referral join, orders joined by phone against orders with click ids.

    .venv/bin/python bench/bench_join.py --referrals 200000 --rows 1000000
    PYTHONPATH=/tmp/capi-before/src .venv/bin/python bench/bench_join.py --referrals 20000 --rows 10000

Generates, in a temporary directory (fixed seed): one WhatsApp referral per customer, stored in a
ledger by the capi found on PYTHONPATH (so an older capi can be measured on the same data), each
2 to 7 days old; and one export of orders of those customers in two copies: `clicks.csv`, every
row carrying its ctwa_clid, and `phones.csv`, the same rows without it, the customer's phone
written as people write phones (`+91 98765 43210`, `0091-98765-43210`, `(+91) 9876543210`, ...):
every row of it is attributed by the join. Then times `capi send --file X --dry-run -o /dev/null`
of each copy, in back-to-back pairs, and prints both and their ratio (target <= 1.5x).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench_build import FIRST, LAST, PLACES, _phone_prefixes  # noqa: E402

WABA = "104123456789012"
COLUMNS = ["event_name", "event_time", "email", "phone", "first_name", "last_name", "city", "state", "zip",
           "country", "value", "currency", "order_id", "waba_id"]


def _written(cc: int, nsn: str, style: int) -> str:
    """A phone as a person or a shop system writes it."""
    if style == 0:
        return f"+{cc} {nsn[:5]} {nsn[5:]}"
    if style == 1:
        return f"+{cc}{nsn}"
    if style == 2:
        return f"00{cc}-{nsn[:3]}-{nsn[3:6]}-{nsn[6:]}"
    if style == 3:
        return f"(+{cc}) {nsn}"
    return f"+{cc} ({nsn[:3]}) {nsn[3:6]} {nsn[6:]}"


def generate(directory: Path, referrals: int, rows: int, seed: int = 11) -> tuple[Path, Path, Path]:
    """(referrals.ndjson, clicks.csv, phones.csv) for `referrals` customers and `rows` orders."""
    rng = random.Random(seed)
    prefixes = _phone_prefixes(rng)
    now = int(time.time())
    customers = []
    referral_path = directory / "referrals.ndjson"
    with referral_path.open("w", encoding="utf-8") as out:
        for n in range(referrals):
            cc, prefix = prefixes[n % len(prefixes)]
            nsn = f"{prefix}{(n // len(prefixes)) % 1000:03d}"
            clid = f"ARAkLkA8rmlFeiCktEJQ-QTwRiyYHAFDLMNDBH0CD3qpjd0HR4irJ6LEkR7JwFF4XvnO2E4N{n:08d}"
            customers.append((cc, nsn, clid))
            ts = now - 2 * 86400 - rng.randrange(5 * 86400 - 3600)
            out.write(json.dumps({
                "channel": "whatsapp", "ctwa_clid": clid, "ad_id": "120215550001112223", "source_type": "ad",
                "source_url": "https://fb.me/4aBcDeFgH", "headline": None, "body": None, "media_type": "image",
                "ref": None, "user_id": f"{cc}{nsn}", "wa_id": f"{cc}{nsn}", "bsuid": None, "username": None,
                "profile_name": None, "business_id": WABA, "phone_number_id": "106540352242922",
                "message_id": f"wamid.HBgM{n:016d}", "kind": "message", "signature": None,
                "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts)), "origin": f"bench:{n + 1}",
            }) + "\n")
    clicks, phones = directory / "clicks.csv", directory / "phones.csv"
    with clicks.open("w", encoding="utf-8", newline="") as c, phones.open("w", encoding="utf-8", newline="") as p:
        with_clid, without = csv.writer(c), csv.writer(p)
        with_clid.writerow([*COLUMNS, "ctwa_clid"])
        without.writerow(COLUMNS)
        for i in range(rows):
            cc, nsn, clid = customers[rng.randrange(referrals)]
            city, state, zp, country = PLACES[i % len(PLACES)]
            row = ["Purchase", now - rng.randrange(2 * 86400 - 3600), f"customer{i}@example.com",
                   _written(cc, nsn, i % 5), FIRST[i % 10], LAST[(i // 10) % 10], city, state, zp, country,
                   f"{rng.randrange(100, 100000) / 100:.2f}", "usd", f"order-{i}", WABA]
            with_clid.writerow([*row, clid])
            without.writerow(row)
    return referral_path, clicks, phones


def store(referral_path: Path, ledger_path: Path) -> None:
    """Store the referrals with the capi on PYTHONPATH (run in a subprocess: `--store`)."""
    from capi_cli.ledger import Ledger

    with Ledger.open(ledger_path) as ledger, referral_path.open(encoding="utf-8") as source:
        chunk: list[dict[str, object]] = []
        for line in source:
            chunk.append(json.loads(line))
            if len(chunk) == 5000:
                ledger.referrals.store_referrals(chunk)
                chunk = []
        if chunk:
            ledger.referrals.store_referrals(chunk)


def environment(home: Path) -> dict[str, str]:
    return {**os.environ, "CAPI_HOME": str(home), "CAPI_DATASET_ID": "1234567890", "NO_COLOR": "1"}


def dry_run(path: Path, env: dict[str, str]) -> tuple[float, str]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "capi_cli", "send", "--file", str(path), "--dry-run",
                           "-o", os.devnull, "--no-progress"], env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"dry run of {path} exited {done.returncode}:\n{done.stderr[-2000:]}")
    return elapsed, done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--referrals", type=int, default=200_000)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--store", nargs=2, metavar=("REFERRALS", "LEDGER"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.store:
        store(Path(args.store[0]), Path(args.store[1]))
        return 0
    with tempfile.TemporaryDirectory(prefix="capi-join-") as tmp:
        directory = Path(tmp)
        referral_path, clicks, phones = generate(directory, args.referrals, args.rows)
        home = directory / "home"
        home.mkdir(mode=0o700)
        env = environment(home)
        started = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--store", str(referral_path), str(home / "ledger.sqlite3")],
                       env=env, check=True)
        print(f"stored {args.referrals:,} referrals in {time.perf_counter() - started:.1f} s", file=sys.stderr)
        ratios = []
        for _ in range(args.repeat):
            click_s, _ = dry_run(clicks, env)
            phone_s, summary = dry_run(phones, env)
            ratios.append(phone_s / click_s)
            print(f"click ids {click_s:.2f} s, joined by phone {phone_s:.2f} s ({summary})", file=sys.stderr)
        print(f"{args.rows:,} rows, {args.referrals:,} referrals: join/click ids {statistics.median(ratios):.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
