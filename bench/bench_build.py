"""Benchmark (SPEC §9): building events from a large CSV, capi against Meta's Python SDK, in one run.

    .venv/bin/python bench/bench_build.py              # 1,000,000 rows
    .venv/bin/python bench/bench_build.py --rows 200000

Generates a CSV of WhatsApp purchases in a temporary directory (fixed seed), then runs, each in its
own subprocess so that peak memory is measured per side:
  capi: `capi send --file X --dry-run -o /dev/null` (or, while cli/send.py does not exist, a driver
        that iterates capi_cli.events.pipeline.iter_events and writes each payload as JSON);
  sdk:  csv.DictReader + facebook_business serverside UserData/CustomData/Event + normalize() +
        json.dumps of each event to /dev/null.
Prints events/s of each, the ratio (target >= 3), and peak RSS (target < 150 MB, flat with file
size: capi is also run on a tenth of the rows).
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COLUMNS = [
    "event_name", "event_time", "email", "phone", "first_name", "last_name", "city", "state", "zip",
    "country", "value", "currency", "order_id", "ctwa_clid", "waba_id",
]
FIRST = ["john", "maria", "ahmet", "li", "fatima", "pedro", "anna", "kenji", "olga", "amara"]
LAST = ["smith", "garcia", "yilmaz", "wang", "khan", "silva", "novak", "sato", "ivanova", "okafor"]
PLACES = [("san francisco", "ca", "94103", "us"), ("new york", "ny", "10001", "us"),
          ("austin", "tx", "73301", "us"), ("miami", "fl", "33101", "us"), ("seattle", "wa", "98101", "us")]
REGIONS = ["US", "GB", "DE", "BR", "IN", "TR", "MX", "ID", "FR", "NG"]


def _phone_prefixes(rng: random.Random) -> list[tuple[int, str]]:
    """(country code, national number without its last 3 digits) known to give valid numbers."""
    import phonenumbers

    prefixes: list[tuple[int, str]] = []
    for region in REGIONS:
        example = phonenumbers.example_number_for_type(region, phonenumbers.PhoneNumberType.MOBILE)
        assert example is not None and example.country_code is not None
        cc: int = example.country_code
        nsn = str(example.national_number)
        tries = 0
        while len([p for p in prefixes if p[0] == cc]) < 40 and tries < 2000:
            tries += 1
            candidate = nsn[:-5] + f"{rng.randrange(100):02d}"
            ok = all(
                phonenumbers.is_valid_number(
                    phonenumbers.PhoneNumber(country_code=cc,
                                             national_number=int(candidate + f"{rng.randrange(1000):03d}"))
                )
                for _ in range(3)
            )
            if ok and (cc, candidate) not in prefixes:
                prefixes.append((cc, candidate))
    return prefixes


def generate(path: Path, rows: int, seed: int = 7) -> None:
    rng = random.Random(seed)
    prefixes = _phone_prefixes(rng)
    now = int(time.time())
    with open(path, "w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(COLUMNS)
        for i in range(rows):
            cc, prefix = prefixes[i % len(prefixes)]
            city, state, zp, country = PLACES[i % len(PLACES)]
            writer.writerow([
                "Purchase",
                now - rng.randrange(5 * 86400),
                f"customer{i}@example.com",
                f"+{cc} {prefix}{(i // len(prefixes)) % 1000:03d}",
                FIRST[i % 10],
                LAST[(i // 10) % 10],
                city,
                state,
                zp,
                country,
                f"{rng.randrange(100, 100000) / 100:.2f}",
                "usd",
                f"order-{i}",
                f"ARAkLkA8rmlFeiCktEJQ-QTwRiyYHAFDLMNDBH0CD3qpjd0HR4irJ6LEkR7JwFF4XvnO2E4N{i:08d}",
                "104123456789012",
            ])


# -- the two sides, each run as `bench_build.py --side NAME FILE` in a subprocess ---------------------


def side_capi_driver(path: str) -> int:
    from capi_cli.config import load_settings
    from capi_cli.events.pipeline import BuiltEvent, iter_events

    settings = load_settings()
    count = 0
    with open(os.devnull, "w", encoding="utf-8") as out:
        for item in iter_events([path], settings):
            if isinstance(item, BuiltEvent):
                out.write(item.payload_json)
                out.write("\n")
                count += 1
    return count


def side_sdk(path: str) -> int:
    from facebook_business.adobjects.serverside.action_source import ActionSource
    from facebook_business.adobjects.serverside.custom_data import CustomData
    from facebook_business.adobjects.serverside.event import Event
    from facebook_business.adobjects.serverside.messaging_channel import MessagingChannel
    from facebook_business.adobjects.serverside.user_data import UserData

    count = 0
    with open(path, encoding="utf-8", newline="") as src, open(os.devnull, "w", encoding="utf-8") as out:
        for row in csv.DictReader(src):
            try:
                user_data = UserData(
                    emails=[row["email"]], phones=[row["phone"]], first_names=[row["first_name"]],
                    last_names=[row["last_name"]], cities=[row["city"]], states=[row["state"]],
                    zip_codes=[row["zip"]], country_codes=[row["country"]], ctwa_clid=row["ctwa_clid"],
                )
                custom_data = CustomData(value=float(row["value"]), currency=row["currency"], order_id=row["order_id"])
                event = Event(
                    event_name=row["event_name"], event_time=int(row["event_time"]), event_id=row["order_id"],
                    action_source=ActionSource.BUSINESS_MESSAGING, messaging_channel=MessagingChannel.WHATSAPP,
                    user_data=user_data, custom_data=custom_data,
                )
                payload = event.normalize()
            except (TypeError, ValueError):
                continue
            # The SDK's UserData has no WABA id field; add it as an integration would.
            payload["user_data"]["whatsapp_business_account_id"] = row["waba_id"]
            out.write(json.dumps(payload))
            out.write("\n")
            count += 1
    return count


def _capi_command(path: Path, driver: bool = False) -> list[str]:
    if not driver and importlib.util.find_spec("capi_cli.cli.send") is not None:
        return [sys.executable, "-m", "capi_cli", "send", "--file", str(path), "--dry-run", "-o", os.devnull,
                "--no-progress", "-q"]
    return [sys.executable, __file__, "--side", "capi", str(path)]


def measure(command: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """(seconds, peak RSS in MB of the child, its stderr)."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # wait4 gives this child's own rusage (ru_maxrss in KiB on Linux).
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    stdout = proc.stdout.read() if proc.stdout else ""
    stderr = proc.stderr.read() if proc.stderr else ""
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}):\n{stderr}{stdout}")
    return elapsed, usage.ru_maxrss / 1024, stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--side", choices=["capi", "sdk"], help=argparse.SUPPRESS)
    parser.add_argument("file", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        count = side_capi_driver(args.file) if args.side == "capi" else side_sdk(args.file)
        print(count)
        return

    with tempfile.TemporaryDirectory(prefix="capi-bench-") as tmp:
        env = {**os.environ, "CAPI_HOME": tmp, "PYTHONPATH": str(ROOT / "src"), "CAPI_DATASET_ID": "1",
               "CAPI_ACCESS_TOKEN": "bench-token-not-used"}
        small = Path(tmp) / "events-small.csv"
        big = Path(tmp) / "events.csv"
        started = time.perf_counter()
        generate(big, args.rows)
        generate(small, max(args.rows // 10, 1))
        print(f"generated {args.rows:,} rows ({big.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - started:.1f}s")
        command = _capi_command(big)
        print("capi:", " ".join(command).replace(tmp, "$TMP"))
        capi_s, capi_mb, _ = measure(command, env)
        _, capi_small_mb, _ = measure(_capi_command(small), env)
        sdk_s, sdk_mb, _ = measure([sys.executable, __file__, "--side", "sdk", str(big)], env)
        driver = _capi_command(big, driver=True)
        pipeline = measure(driver, env) if driver != command else None
    capi_rate, sdk_rate = args.rows / capi_s, args.rows / sdk_s
    if pipeline is not None:
        print(f"pipeline alone (iter_events + payload_json, no send machinery): {args.rows / pipeline[0]:,.0f} "
              f"events/s, {args.rows / pipeline[0] / sdk_rate:.2f}x the SDK, peak RSS {pipeline[1]:.1f} MB")
    print(f"capi: {capi_rate:>10,.0f} events/s  {capi_s:7.1f}s  peak RSS {capi_mb:6.1f} MB "
          f"({args.rows // 10:,} rows: {capi_small_mb:.1f} MB)")
    print(f"sdk:  {sdk_rate:>10,.0f} events/s  {sdk_s:7.1f}s  peak RSS {sdk_mb:6.1f} MB")
    ratio = capi_rate / sdk_rate
    print(f"ratio capi/sdk: {ratio:.2f}x (target >= 3x); capi peak {capi_mb:.0f} MB (target < 150 MB)")


if __name__ == "__main__":
    main()
