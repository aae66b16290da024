"""The referral join (SPEC §4) end to end: referrals stored by several `extract-referral` runs, in
any order, then orders that carry only the customer (a phone as people write it, a BSUID, a PSID,
an IGSID) built by `send --dry-run`: each takes the most recent referral of that customer within
the attribution window, none outside it; the same output in one process and in workers.

The webhook deliveries are made here in the shapes of tests/fixtures/webhooks/ (WhatsApp Cloud API
`messages[].referral` with `from`/`wa_id` and the BSUID `from_user_id`, as in
whatsapp/bsuid_username.json; Messenger and Instagram `messaging[].message.referral`, as in
messenger/message_referral.json and instagram/message_referral.json), with times relative to now
so that the orders are within Meta's 7 days.
"""

from __future__ import annotations

import csv
import json
import os
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

DAY = 86400
HOUR = 3600
WABA = "102290129340398"
PHONE = "919876543210"  # an Indian mobile, written below as people write it
PHONE_BOTH, BSUID_BOTH = "393471234567", "IT.55510293847566372819"
PHONE_OLD = "905321234567"
BSUID = "US.13491208655302741918"
PSID, PSID_NONE = "8345678901234567", "8345678901234999"
IGSID = "987654321098765"


def _whatsapp(mid: str, ts: int, *, phone: str | None = None, bsuid: str | None = None,
              clid: str | None = None) -> dict[str, Any]:
    contact: dict[str, Any] = {"profile": {"name": "Customer"}}
    message: dict[str, Any] = {"id": mid, "timestamp": str(ts), "type": "text", "text": {"body": "hi"}}
    if phone:
        contact["wa_id"] = phone
        message["from"] = phone
    if bsuid:
        contact["user_id"] = bsuid
        message["from_user_id"] = bsuid
    referral: dict[str, Any] = {"source_url": "https://fb.me/2bQwErTy", "source_id": "120215550001112223",
                                "source_type": "ad"}
    if clid is not None:
        referral["ctwa_clid"] = clid
    message["referral"] = referral
    value = {"messaging_product": "whatsapp",
             "metadata": {"display_phone_number": "15550783881", "phone_number_id": "106540352242922"},
             "contacts": [contact], "messages": [message]}
    return {"object": "whatsapp_business_account",
            "entry": [{"id": WABA, "changes": [{"field": "messages", "value": value}]}]}


def _page(obj: str, account: str, sender: str, mid: str, ts: int) -> dict[str, Any]:
    item = {"sender": {"id": sender}, "recipient": {"id": account}, "timestamp": ts * 1000,
            "message": {"mid": mid, "text": "price?",
                        "referral": {"ref": "sku-42", "ad_id": "120214443332221112", "source": "ADS",
                                     "type": "OPEN_THREAD", "ads_context_data": {"ad_title": "Sneakers"}}}}
    return {"object": obj, "entry": [{"id": account, "time": ts * 1000, "messaging": [item]}]}


def _deliveries(now: int) -> list[dict[str, Any]]:
    return [
        # a phone: the one at -14 d is outside every order's window; -1 d has no click id (a Status ad)
        _whatsapp("wamid.P14", now - 14 * DAY, phone=PHONE, clid="P-14"),
        _whatsapp("wamid.P5", now - 5 * DAY, phone=PHONE, clid="P-5"),
        _whatsapp("wamid.P2", now - 2 * DAY, phone=PHONE, clid="P-2"),
        _whatsapp("wamid.P1", now - 1 * DAY, phone=PHONE, clid=""),
        _whatsapp("wamid.P0", now - 1 * HOUR, phone=PHONE, clid="P-0"),
        # a phone whose only referral is older than the window of its order
        _whatsapp("wamid.Q9", now - 9 * DAY, phone=PHONE_OLD, clid="Q-9"),
        # a customer known only by BSUID, and one known by both phone and BSUID
        _whatsapp("wamid.B4", now - 4 * DAY, bsuid=BSUID, clid="B-4"),
        _whatsapp("wamid.B0", now - 6 * HOUR, bsuid=BSUID, clid="B-0"),
        _whatsapp("wamid.IT2", now - 2 * DAY, phone=PHONE_BOTH, bsuid=BSUID_BOTH, clid="IT-2"),
        # Messenger and Instagram: the page / account of the most recent referral
        _page("page", "111111111111111", PSID, "m_old", now - 5 * DAY),
        _page("page", "222222222222222", PSID, "m_new", now - 1 * DAY),
        _page("instagram", "17841400000000001", IGSID, "ig_old", now - 3 * DAY),
        _page("instagram", "17841400000000002", IGSID, "ig_new", now - 2 * HOUR),
    ]


ORDER_COLUMNS = ["event_name", "event_time", "order_id", "messaging_channel", "phone", "wa_id", "bsuid", "psid",
                 "igsid", "value", "currency"]


def _orders(now: int) -> list[dict[str, Any]]:
    def order(order_id: str, at: int, channel: str = "whatsapp", **ids: str) -> dict[str, Any]:
        return {"event_name": "Purchase", "event_time": at, "order_id": order_id, "messaging_channel": channel,
                "value": "499.00", "currency": "INR", **ids}

    return [
        order("phone-3d", now - 3 * DAY, phone="+91 98765 43210"),
        order("phone-36h", now - 36 * HOUR, phone="098765-43210"),  # national writing, default country IN
        order("phone-30m", now - 1800, wa_id="919876543210"),
        order("phone-old", now - 1 * DAY, phone="+90 532 123 45 67"),
        order("bsuid-1d", now - 1 * DAY, bsuid=BSUID),
        order("bsuid-now", now - 60, bsuid=BSUID),
        order("both-by-bsuid", now - 1 * DAY, bsuid=BSUID_BOTH),
        order("both-by-phone", now - 1 * DAY, phone="+39 347 123 4567"),
        order("before-any", now - 6 * DAY, phone="+91 98765 43210"),  # P-14 is 8 days older: outside
        order("psid", now - 3600, "messenger", psid=PSID),
        order("psid-unknown", now - 3600, "messenger", psid=PSID_NONE),
        order("igsid", now - 3600, "instagram", igsid=IGSID),
    ]


EXPECTED = {
    "phone-3d": ("ctwa_clid", "P-5"),
    "phone-36h": ("ctwa_clid", "P-2"),
    "phone-30m": ("ctwa_clid", "P-0"),
    "bsuid-1d": ("ctwa_clid", "B-4"),
    "bsuid-now": ("ctwa_clid", "B-0"),
    "both-by-bsuid": ("ctwa_clid", "IT-2"),
    "both-by-phone": ("ctwa_clid", "IT-2"),
    "psid": ("page_id", "222222222222222"),
    "igsid": ("ig_account_id", "17841400000000002"),
}


def _env(home: Path, workers: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPI_")}
    env.update(CAPI_HOME=str(home), CAPI_DATASET_ID="1234567890", CAPI_DEFAULT_COUNTRY="IN",
               CAPI_WORKERS=workers, COLUMNS="200", NO_COLOR="1")
    return env


def _capi(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "capi_cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(scope="module")
def stored(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    """A home whose ledger got the referrals from three extract-referral runs, shuffled, newest
    file first, one delivery in two runs (a retry by Meta); and the orders file."""
    tmp = tmp_path_factory.mktemp("join")
    now = int(time.time())
    deliveries = _deliveries(now)
    random.Random(17).shuffle(deliveries)
    files = [tmp / f"webhooks-{n}.ndjson" for n in range(3)]
    for n, path in enumerate(files):
        part = deliveries[n::3] + ([deliveries[0]] if n == 2 else [])
        path.write_text("".join(json.dumps(d) + "\n" for d in part))
    home = tmp / "home"
    for path in reversed(files):
        result = _capi(_env(home, "0"), "extract-referral", str(path), "--format", "ndjson", "-o", os.devnull)
        assert result.returncode == 0, result.stderr
    orders = tmp / "orders.csv"
    with orders.open("w", newline="") as out:
        writer = csv.DictWriter(out, ORDER_COLUMNS)
        writer.writeheader()
        writer.writerows(_orders(now))
    return home, orders, now


def _built(home: Path, orders: Path, workers: str, out: Path) -> dict[str, dict[str, Any]]:
    result = _capi(_env(home, workers), "send", "--file", str(orders), "--dry-run", "-o", str(out), "--no-progress")
    assert result.returncode in (0, 1), result.stderr
    assert "Traceback" not in result.stderr
    return {json.loads(line)["custom_data"]["order_id"]: json.loads(line) for line in out.read_text().splitlines()}


@pytest.mark.parametrize("workers", ["0", "2"])
def test_each_order_takes_the_latest_referral_of_its_customer_within_the_window(stored, tmp_path, workers) -> None:
    home, orders, _ = stored
    built = _built(home, orders, workers, tmp_path / "events.ndjson")
    got = {order_id: (field, event["user_data"].get(field)) for order_id, event in built.items()
           for field in [EXPECTED.get(order_id, ("ctwa_clid", None))[0]]}
    assert got == EXPECTED  # phone-old, before-any and psid-unknown found nothing: not built
    for order_id in ("phone-3d", "bsuid-1d", "both-by-phone"):
        assert built[order_id]["user_data"]["whatsapp_business_account_id"] == WABA  # from the referral


def test_one_process_and_workers_build_the_same_bytes(stored, tmp_path) -> None:
    home, orders, _ = stored
    _built(home, orders, "0", tmp_path / "one.ndjson")
    _built(home, orders, "2", tmp_path / "two.ndjson")
    assert (tmp_path / "one.ndjson").read_bytes() == (tmp_path / "two.ndjson").read_bytes()


def test_validate_counts_the_joined_orders(stored) -> None:
    home, orders, _ = stored
    result = _capi(_env(home, "0"), "validate", str(orders), "--format", "json")
    report = json.loads(result.stdout)
    assert report["attributed"] == len(EXPECTED), report


def test_a_retried_delivery_is_stored_once(stored) -> None:
    home, _, _ = stored
    with sqlite3.connect(home / "ledger.sqlite3") as conn:
        count = conn.execute("SELECT COUNT(*) FROM referrals").fetchone()[0]
    assert count == len(_deliveries(0))
