"""Benchmark `capi extract-referral` on a generated NDJSON webhook log (SPEC §3: constant memory).

Generates a log of --mb megabytes in a temp dir: signed request-log wrappers with the raw body,
bare payloads, WhatsApp statuses (the bulk of real traffic), plain messages, Messenger and
Instagram items, Twilio form bodies, ~10% of deliveries with a referral, 2% retried by Meta.
Then runs `capi extract-referral LOG --no-store --format ndjson -o /dev/null` in a subprocess
and reports deliveries per second and the child's peak RSS.

    .venv/bin/python bench/bench_extract.py --mb 500
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

SECRET = "bench-app-secret"


def _wa(rng: random.Random, n: int, referral: bool, status: bool) -> dict:
    phone = f"90532{rng.randrange(10**7):07d}"
    value: dict = {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
    }
    if status:
        value["statuses"] = [
            {
                "id": f"wamid.STATUS{n:012d}",
                "status": rng.choice(["sent", "delivered", "read"]),
                "timestamp": str(1767225600 + n),
                "recipient_id": phone,
                "conversation": {"id": f"c{n}", "origin": {"type": "marketing"}},
                "pricing": {"billable": True, "pricing_model": "CBP", "category": "marketing"},
            }
        ]
    else:
        message: dict = {
            "from": phone,
            "id": f"wamid.HBgM{n:016d}",
            "timestamp": str(1767225600 + n),
            "type": "text",
            "text": {"body": "Merhaba, fiyat nedir? " * rng.randint(1, 4)},
        }
        if referral:
            message["referral"] = {
                "source_url": "https://fb.me/4aBcDeFgH",
                "source_id": f"1202118899{rng.randrange(10**8):08d}",
                "source_type": "ad",
                "headline": "Kış indirimi %30",
                "body": "Sohbet başlatın",
                "media_type": "image",
                "image_url": "https://scontent.xx.fbcdn.net/v/t45.1600-4/img.jpg",
                "ctwa_clid": "AR" + hashlib.sha256(str(n).encode()).hexdigest() * 2,
            }
        value["contacts"] = [{"profile": {"name": "Emre Yılmaz"}, "wa_id": phone}]
        value["messages"] = [message]
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": value}]}],
    }


def _page(rng: random.Random, n: int, referral: bool, obj: str) -> dict:
    item: dict = {
        "sender": {"id": str(6100000000000000 + n)},
        "recipient": {"id": "109876543210987"},
        "timestamp": (1767225600 + n) * 1000,
        "message": {"mid": f"m_{n:020d}", "text": "Is this still available?"},
    }
    if referral:
        item["message"]["referral"] = {
            "ref": "winter",
            "ad_id": f"1202144433{rng.randrange(10**8):08d}",
            "source": "ADS",
            "type": "OPEN_THREAD",
            "ads_context_data": {
                "ad_title": "Winter sale",
                "photo_url": "https://scontent.xx.fbcdn.net/ad.jpg",
            },
        }
    return {
        "object": obj,
        "entry": [{"id": "109876543210987", "time": item["timestamp"], "messaging": [item]}],
    }


def _twilio(rng: random.Random, n: int, referral: bool) -> str:
    fields = {
        "SmsMessageSid": f"SM{n:032x}",
        "MessageSid": f"SM{n:032x}",
        "AccountSid": "AC0123456789abcdef0123456789abcdef",
        "From": f"whatsapp:+90555{rng.randrange(10**7):07d}",
        "To": "whatsapp:+14155238886",
        "Body": "Merhaba",
        "ProfileName": "Ayşe",
    }
    if referral:
        fields |= {
            "ReferralCtwaClid": f"ARTw{n:040d}",
            "ReferralSourceType": "ad",
            "ReferralSourceId": "120219990001112223",
        }
    return urlencode(fields)


def generate(path: Path, megabytes: int, seed: int = 7) -> int:
    """Write the log; returns the number of deliveries written."""
    rng = random.Random(seed)
    target = megabytes * 1024 * 1024
    written = deliveries = 0
    retry: list[str] = []
    with path.open("w", encoding="utf-8") as out:
        n = 0
        while written < target:
            n += 1
            roll = rng.random()
            referral = rng.random() < 0.10
            if roll < 0.45:
                payload: dict | str = _wa(rng, n, False, status=True)
            elif roll < 0.75:
                payload = _wa(rng, n, referral, status=False)
            elif roll < 0.85:
                payload = _page(rng, n, referral, "page")
            elif roll < 0.93:
                payload = _page(rng, n, referral, "instagram")
            else:
                payload = _twilio(rng, n, referral)
            if isinstance(payload, str):
                line = json.dumps({"headers": {"X-Twilio-Signature": "x"}, "body": payload})
            elif rng.random() < 0.6:
                raw = json.dumps(payload, separators=(",", ":"))  # ASCII-escaped, as Meta sends
                signature = "sha256=" + hmac.new(SECRET.encode(), raw.encode(), hashlib.sha256).hexdigest()
                line = json.dumps(
                    {
                        "received_at": "2026-01-01T00:00:00Z",
                        "method": "POST",
                        "headers": {"Content-Type": "application/json", "X-Hub-Signature-256": signature},
                        "raw_body": raw,
                    }
                )
            else:
                line = json.dumps(payload, ensure_ascii=False)
            if rng.random() < 0.02:
                retry.append(line)
            if retry and rng.random() < 0.02:
                line += "\n" + retry.pop(0)
                deliveries += 1
            out.write(line + "\n")
            written += len(line) + 1
            deliveries += 1
    return deliveries


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mb", type=int, default=500, help="size of the generated log in MB (default 500)")
    parser.add_argument("--signatures", action="store_true", help="check signatures (sets CAPI_APP_SECRET)")
    parser.add_argument("--store", action="store_true", help="also store referrals in a temp ledger")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir and print its path")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="capi-bench-extract-"))
    log = tmp / "webhooks.ndjson"
    started = time.perf_counter()
    deliveries = generate(log, args.mb)
    size_mb = log.stat().st_size / 1024 / 1024
    print(
        f"generated {size_mb:.0f} MB, {deliveries} deliveries in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )

    env = dict(os.environ, CAPI_HOME=str(tmp / "home"), NO_COLOR="1")
    if args.signatures:
        env["CAPI_APP_SECRET"] = SECRET
    capi = [sys.executable, "-m", "capi_cli"]
    command = [*capi, "extract-referral", str(log), "--format", "ndjson", "-o", os.devnull]
    command.append("--store" if args.store else "--no-store")
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # KiB on Linux
    if result.returncode != 0:
        print(result.stderr, file=sys.stderr)
        return result.returncode
    # The summary line (warnings may follow it: Twilio posts carry no time, for one).
    print(next((line for line in result.stderr.splitlines() if line.startswith("files ")), result.stderr.strip()))
    print(
        f"{size_mb:.0f} MB NDJSON, {deliveries} deliveries in {elapsed:.1f} s: "
        f"{deliveries / elapsed:,.0f} deliveries/s, {size_mb / elapsed:.1f} MB/s, peak RSS {peak_mb:.0f} MB"
        f"{' (signatures checked)' if args.signatures else ''}{' (stored)' if args.store else ''}"
    )
    if args.keep:
        print(f"kept {tmp}")
    else:
        for child in sorted(tmp.rglob("*"), reverse=True):
            child.unlink() if child.is_file() else child.rmdir()
        tmp.rmdir()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
