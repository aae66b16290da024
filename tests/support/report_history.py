"""A scripted history for `capi report` tests: webhook dumps of three ads (WhatsApp Cloud API and
Messenger shapes as Meta documents them, see shared/reference/meta-facts.md and
tests/fixtures/webhooks/README.md), events files that are sent by click id, by the referral join,
with a refused event, an unknown click id, an unattributed order, an ambiguous outcome and a
refused token; and the figures the report must give for it."""

from __future__ import annotations

import json
import time
from pathlib import Path

from typer.testing import CliRunner

from capi_cli.cli.app import app
from capi_cli.sandbox.server import RESET_AFTER, GraphStandin
from support.sending import DATASET, TOKEN, send_env

WABA = "104996122399160"
PAGE = "109876543210987"
AD_A, AD_B, AD_C = "120210000000001", "120210000000002", "120210000000003"
HEADLINE_A = "Summer sale: 20% off sarees"
URL_A = "https://fb.me/2Zb8summer"
HEADLINE_C = "Book a test drive"
NOW = int(time.time())
REFERRAL_BASE = NOW - 3 * 86400
EVENT_BASE = NOW - 2 * 86400


def phone(i: int) -> str:
    return f"9198450{i:05d}"


def clid(ad: str, i: int) -> str:
    return f"ARAk{ad[-1]}Clid{i:03d}xZq9L0p3"


def _whatsapp(ad: str, i: int, ts: int, headline: str | None, url: str | None) -> dict:
    referral = {"source_url": url, "source_id": ad, "source_type": "ad", "ctwa_clid": clid(ad, i),
                "media_type": "image", "body": "Tap to chat with us"}
    if headline:
        referral["headline"] = headline
    return {"object": "whatsapp_business_account", "entry": [{"id": WABA, "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp",
        "metadata": {"display_phone_number": "15550001111", "phone_number_id": "106540352242922"},
        "contacts": [{"profile": {"name": f"Customer {i}"}, "wa_id": phone(i)}],
        "messages": [{"from": phone(i), "id": f"wamid.HBgM{ad[-1]}{i:04d}", "timestamp": str(ts), "type": "text",
                      "text": {"body": "Hi, is this available?"}, "referral": referral}]}}]}]}


def _messenger(psid: str, ts: int) -> dict:
    return {"object": "page", "entry": [{"id": PAGE, "time": ts * 1000, "messaging": [{
        "sender": {"id": psid}, "recipient": {"id": PAGE}, "timestamp": ts * 1000,
        "message": {"mid": f"m_{psid}", "text": "Hello"},
        "referral": {"ref": "testdrive", "ad_id": AD_C, "source": "ADS", "type": "OPEN_THREAD",
                     "ads_context_data": {"ad_title": HEADLINE_C, "photo_url": "https://scontent.xx.fbcdn.net/p.jpg"}},
    }]}]}


PSIDS = ("6123456789012345", "6123456789012346")


def write_history(work: Path) -> dict[str, Path]:
    """The dump and the events files; returns their paths."""
    deliveries = [_whatsapp(AD_A, i, REFERRAL_BASE + i * 60, HEADLINE_A, URL_A) for i in range(1, 5)]
    deliveries += [_whatsapp(AD_B, i, REFERRAL_BASE + 600 + i * 60, None, "https://fb.me/free-delivery")
                   for i in range(5, 8)]
    deliveries += [_messenger(psid, REFERRAL_BASE + 1200 + n * 60) for n, psid in enumerate(PSIDS)]
    dump = work / "webhooks.ndjson"
    dump.write_text("".join(json.dumps(d) + "\n" for d in deliveries), encoding="utf-8")
    t = EVENT_BASE
    files = {"dump": dump}
    files["by_click"] = _csv(work / "orders-click.csv",
                             "event_name,event_id,event_time,ctwa_clid,email,phone,value,currency", [
        f"Purchase,ev-a1,{t + 1},{clid(AD_A, 1)},a1@example.com,+{phone(1)},100,INR",
        f"OrderShipped,ev-a1s,{t + 2},{clid(AD_A, 1)},a1@example.com,+{phone(1)},,",
        f"Purchase,ev-a2,{t + 3},{clid(AD_A, 2)},a2@example.com,,250,INR",
        f"Purchase,ev-b1,{t + 4},{clid(AD_B, 5)},b1@example.com,,50,INR",  # refused by Meta
        f"Purchase,ev-x,{t + 5},ARAkNotCapturedClid77,,+{phone(99)},70,INR",  # no stored referral
    ])
    files["joined"] = _csv(work / "orders-chat.csv", "event_name,event_id,event_time,wa_id,value,currency",
                           [f"Purchase,ev-a3,{t + 6},{phone(3)},300,INR"])
    files["messenger"] = _csv(
        work / "leads-messenger.csv",
        "event_name,event_id,event_time,messaging_channel,page_scoped_user_id,page_id,email,value,currency",
        [f"Purchase,ev-c1,{t + 7},messenger,{PSIDS[0]},{PAGE},c1@example.com,80,USD"])
    files["uncertain"] = _csv(work / "orders-late.csv", "event_name,event_id,event_time,ctwa_clid,value,currency",
                              [f"Purchase,ev-a4,{t + 8},{clid(AD_A, 4)},40,INR"])
    files["refused_token"] = _csv(work / "orders-token.csv",
                                  "event_name,event_id,event_time,ctwa_clid,value,currency",
                                  [f"Purchase,ev-a2b,{t + 9},{clid(AD_A, 2)},10,INR"])
    files["organic"] = _csv(work / "orders-organic.csv", "event_name,event_id,event_time,wa_id,value,currency",
                            [f"Purchase,ev-o1,{t + 10},{phone(50)},20,INR"])
    return files


def _csv(path: Path, header: str, rows: list[str]) -> Path:
    path.write_text(header + "\n" + "\n".join(rows) + "\n", encoding="utf-8")
    return path


def iso(ts: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


# What `capi report --json` gives for the history (events sent: a1, a1s, a2, a3, x, c1).
EXPECTED_ROWS = [
    {"ad_id": AD_A, "channel": "whatsapp", "headline": HEADLINE_A, "source_url": URL_A, "conversations": 4,
     "converted_conversations": 3, "conversion_rate": 0.75, "events": {"OrderShipped": 1, "Purchase": 3},
     "value": {"INR": 650.0}, "first_seen": iso(REFERRAL_BASE + 60), "last_seen": iso(EVENT_BASE + 6)},
    {"ad_id": AD_C, "channel": "messenger", "headline": HEADLINE_C, "source_url": None, "conversations": 2,
     "converted_conversations": 1, "conversion_rate": 0.5, "events": {"Purchase": 1}, "value": {"USD": 80.0},
     "first_seen": iso(REFERRAL_BASE + 1200), "last_seen": iso(EVENT_BASE + 7)},
    # Three conversations, none converted (its one event was refused): listed, the "cut it?" answer.
    {"ad_id": AD_B, "channel": "whatsapp", "headline": None, "source_url": "https://fb.me/free-delivery",
     "conversations": 3, "converted_conversations": 0, "conversion_rate": 0.0, "events": {}, "value": {},
     "first_seen": iso(REFERRAL_BASE + 900), "last_seen": iso(REFERRAL_BASE + 1020)},
    {"ad_id": None, "channel": "whatsapp", "headline": None, "source_url": None, "conversations": 0,
     "converted_conversations": 0, "conversion_rate": None, "events": {"Purchase": 1}, "value": {"INR": 70.0},
     "first_seen": iso(EVENT_BASE + 5), "last_seen": iso(EVENT_BASE + 5)},
]


def play_history(work: Path) -> dict:
    """The history through the real commands: every send's exit code and JSON summary, in order;
    `env` points at its CAPI_HOME (without the stand-in's URL: the report needs no Graph API)."""
    home = work / "home"
    files = write_history(work)
    runner = CliRunner()
    sends: list[tuple[int, dict]] = []
    with GraphStandin(token=TOKEN, datasets={DATASET}) as graph:
        env = {**send_env(home, graph.url), "CAPI_PAGE_ID": PAGE, "CAPI_WHATSAPP_BUSINESS_ACCOUNT_ID": WABA}
        stored = runner.invoke(app, ["-q", "extract-referral", str(files["dump"]), "-o", str(work / "r.ndjson")],
                               env=env)
        assert stored.exit_code == 0, stored.output

        def send(name: str, **extra: str) -> None:
            result = runner.invoke(app, ["send", "--no-progress", "--json", "--file", str(files[name])],
                                   env={**env, **extra})
            assert "Traceback" not in result.output, result.output
            sends.append((result.exit_code, json.loads(result.stdout)))

        graph.poison = {"ev-b1"}
        send("by_click")
        send("joined")
        send("messenger")
        graph.inject(RESET_AFTER, on=graph.posts + 1)
        send("uncertain")
        send("refused_token", CAPI_ACCESS_TOKEN="EAAG-REFUSED-TOKEN-0000")
        send("organic")
    return {"home": home, "env": {k: v for k, v in env.items() if k != "CAPI_GRAPH_URL"}, "sends": sends}
