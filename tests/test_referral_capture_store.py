"""Captured referrals in the ledger: times (estimated ones marked), business-scoped dedupe, merged
copies, the migration of an older ledger, and the join through `validate` / `send --dry-run`."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path
from urllib.parse import urlencode

from typer.testing import CliRunner

from capi_cli.cli.app import app
from capi_cli.ledger import Ledger
from capi_cli.ledger.schema import MIGRATIONS, split_sql

REAL = Path(__file__).parent / "fixtures" / "real_webhooks"
WABA = "104123456789012"
CLID = "ARAkTwilioClidForTheJoin000000000000000000000000000000000000000000000000000000000000000000000000"
NOW = int(time.time())
DAY = 86400


def env_for(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPI_")}
    return env | {
        "CAPI_HOME": str(tmp_path / "home"),
        "COLUMNS": "200",
        "NO_COLOR": "1",
        "CAPI_DATASET_ID": "1234567890",
        "CAPI_ACCESS_TOKEN": "EAAB-not-used-by-a-dry-run",
        "CAPI_GRAPH_URL": "http://127.0.0.1:9",
        "CAPI_WHATSAPP_BUSINESS_ACCOUNT_ID": WABA,
    }


def invoke(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args), env=env)
    return result.exit_code, result.stdout, result.stderr


def twilio_form(message_sid: str, wa_id: str, clid: str = CLID) -> str:
    return urlencode({
        "SmsMessageSid": message_sid, "NumMedia": "0", "ProfileName": "Zeynep", "WaId": wa_id,
        "SmsStatus": "received", "Body": "Merhaba", "To": "whatsapp:+14155238886", "MessageSid": message_sid,
        "AccountSid": "AC0123456789abcdef0123456789abcdef", "From": f"whatsapp:+{wa_id}", "ApiVersion": "2010-04-01",
        "ReferralCtwaClid": clid, "ReferralSourceId": "120219990001112224", "ReferralSourceType": "ad",
        "ReferralSourceUrl": "https://fb.me/twilioAd",
    })


def stored_rows(env: dict[str, str]) -> list[dict]:
    code, out, err = invoke(env, "referrals", "list", "--format", "json")
    assert code == 0, err
    return json.loads(out)


def test_twilio_referral_attributes_an_order_through_validate_and_send_dry_run(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    dump = tmp_path / "twilio.txt"
    dump.write_text(twilio_form("SM0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e", "905559876543") + "\n")
    os.utime(dump, (NOW - 2 * DAY, NOW - 2 * DAY))  # the dump was written when the message came
    code, _, err = invoke(env, "extract-referral", str(dump), "--json")
    assert code == 0, err
    assert "1 referral(s) carry no time in the dump" in err
    (row,) = stored_rows(env)
    assert row["timestamp"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - 2 * DAY))
    with sqlite3.connect(tmp_path / "home" / "ledger.sqlite3") as conn:
        assert conn.execute("SELECT ts_estimated FROM referrals").fetchall() == [(1,)]

    orders = tmp_path / "orders.csv"
    orders.write_text(
        "event_name,event_time,channel,phone,value,currency,order_id\n"
        f"Purchase,{NOW - 3600},whatsapp,+90 555 987 65 43,499.90,TRY,TW-1\n"
        f"Purchase,{NOW - 3600},whatsapp,+90 555 000 00 00,10,TRY,TW-2\n"
    )
    code, out, err = invoke(env, "validate", str(orders), "--format", "json")
    report = json.loads(out)
    assert report["attributed"] == 1, (out, err)
    payload = tmp_path / "payload.ndjson"
    code, _, err = invoke(env, "send", "--file", str(orders), "--dry-run", "-o", str(payload))
    events = {e["custom_data"]["order_id"]: e for e in map(json.loads, payload.read_text().splitlines())}
    assert events["TW-1"]["user_data"]["ctwa_clid"] == CLID, err
    assert "ctwa_clid" not in events.get("TW-2", {"user_data": {}})["user_data"]


def test_twilio_time_from_the_date_header_is_not_estimated(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    log = tmp_path / "requests.ndjson"
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(NOW - DAY))
    log.write_text(json.dumps({"headers": {"Date": date}, "body": twilio_form("SMdate", "905551234567")}) + "\n")
    code, _, err = invoke(env, "extract-referral", str(log), "--json")
    assert code == 0 and "no time in the dump" not in err
    (row,) = stored_rows(env)
    assert row["timestamp"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - DAY))


def test_a_later_copy_with_a_real_time_replaces_the_estimated_one_and_fills_missing_fields(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    first = tmp_path / "a.txt"
    form = twilio_form("SMsame", "905551112233")
    first.write_text(form.replace("&ReferralSourceUrl=https%3A%2F%2Ffb.me%2FtwilioAd", "") + "\n")
    os.utime(first, (NOW - 5 * DAY, NOW - 5 * DAY))
    assert invoke(env, "extract-referral", str(first), "--json")[0] == 0
    (row,) = stored_rows(env)
    assert row["source_url"] is None
    second = tmp_path / "b.ndjson"
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(NOW - 3 * DAY))
    second.write_text(json.dumps({"headers": {"Date": date}, "body": form}) + "\n")
    code, _, err = invoke(env, "extract-referral", str(second), "--json")
    assert "stored 0 new, 1 already known" in err
    (row,) = stored_rows(env)
    assert row["source_url"] == "https://fb.me/twilioAd"
    assert row["timestamp"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(NOW - 3 * DAY))
    with sqlite3.connect(tmp_path / "home" / "ledger.sqlite3") as conn:
        assert conn.execute("SELECT ts_estimated FROM referrals").fetchall() == [(0,)]


def test_copies_within_one_run_are_output_once_and_merged_in_the_store(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    envelope = json.loads((REAL / "meta_wa_ctwa_ad.json").read_text())
    value = envelope["entry"][0]["changes"][0]["value"]
    bare = {k: v for k, v in value.items() if k != "contacts"}  # a relay's copy: no contact, no WABA id
    bare["messages"] = [{k: v for k, v in value["messages"][0].items()}]
    bare["messages"][0]["referral"] = {k: v for k, v in bare["messages"][0]["referral"].items() if k != "source_url"}
    dump = tmp_path / "copies.ndjson"
    dump.write_text(json.dumps(bare) + "\n" + json.dumps(envelope) + "\n")
    code, out, err = invoke(env, "extract-referral", str(dump), "--json")
    assert code == 0, err
    (record,) = json.loads(out)
    assert record["business_id"] is None  # the first copy, as it came
    assert "duplicates 1 (1 merged)" in err
    (row,) = stored_rows(env)
    assert row["business_id"] == "102290129340398" and row["source_url"] == "https://fb.me/3cr4Wqqkk"


def test_two_businesses_sharing_a_message_id_are_both_stored(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    code, _, err = invoke(env, "extract-referral", str(REAL / "multi_entry_two_businesses.json"), "--json")
    assert code == 0 and "stored 2 new" in err
    assert sorted(r["business_id"] for r in stored_rows(env)) == ["102290129340398", "201987654321098"]


def test_non_ad_referrals_are_never_stored_and_attribute_nothing(tmp_path: Path) -> None:
    env = env_for(tmp_path)
    names = ["meta_messenger_shortlink.json", "meta_messenger_shops_product.json",
             "meta_messenger_chat_plugin_user_ref.json", "meta_messenger_ad_referral.json"]
    code, out, err = invoke(env, "extract-referral", *(str(REAL / n) for n in names), "--all-referrals", "--json")
    assert code == 0 and len(json.loads(out)) == 4 and "stored 1 new" in err
    assert [r["user_id"] for r in stored_rows(env)] == ["6123456789012345"]
    orders = tmp_path / "messenger.csv"
    orders.write_text(
        "event_name,event_time,psid,value,currency,order_id\n"
        f"Purchase,{NOW - 3600},6123456789012345,10,USD,AD\n"  # the ad's user: joined to the page
        f"Purchase,{NOW - 3600},6123456789012347,10,USD,SHOPS\n"  # Shops product: no ad, no page
        f"Purchase,{NOW - 3600},6123456789012346,10,USD,SHORTLINK\n"
        f"Purchase,{NOW - 3600},PAGE-ID,10,USD,USER-REF\n"
    )
    code, out, err = invoke(env, "validate", str(orders), "--format", "json")
    assert json.loads(out)["attributed"] == 1, (out, err)


def test_an_older_ledger_is_migrated_and_its_referrals_keep_matching(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:
        for script in MIGRATIONS[:2]:
            for statement in split_sql(script):
                conn.execute(statement)
        conn.execute(
            "INSERT INTO referrals (channel, user_key, message_key, ctwa_clid, business_id, phone_number_id, "
            "message_id, ts, kind, origin, stored_at) VALUES ('whatsapp', 'k', 'wamid.OLD', NULL, 'W1', 'P1', "
            "'wamid.OLD', 100, 'message', 'old:1', 0)"
        )
        conn.execute("PRAGMA user_version = 2")
    with Ledger.open(path) as ledger:
        new, already = ledger.referrals.store_referrals([
            {"channel": "whatsapp", "ctwa_clid": "ARAkLater", "business_id": "W1", "phone_number_id": "P1",
             "message_id": "wamid.OLD", "timestamp": "1970-01-01T00:01:40Z", "kind": "message", "origin": "new:1"},
            {"channel": "whatsapp", "ctwa_clid": "ARAkOther", "business_id": "W2", "phone_number_id": "P2",
             "message_id": "wamid.OLD", "timestamp": "1970-01-01T00:01:40Z", "kind": "message", "origin": "new:2"},
        ])
        assert (new, already) == (1, 1)
        rows = ledger.referrals.list_referrals()
    assert sorted((r["business_id"], r["ctwa_clid"], r["origin"]) for r in rows) == [
        ("W1", "ARAkLater", "old:1"),  # merged into the stored row, which keeps its origin
        ("W2", "ARAkOther", "new:2"),
    ]
