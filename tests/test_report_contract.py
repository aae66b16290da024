"""The JSON of `capi report` is a promise to scripts (SPEC §10): its keys, pinned here.

A change to any of these sets is a change of the contract: SPEC §10 and this test change together."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from capi_cli.cli.app import app
from capi_cli.ledger import Ledger, PendingEvent
from capi_cli.ledger.schema import EventFacts

TOP = {"period", "by", "rows", "coverage", "runs"}
PERIOD = {"since", "until"}
METRICS = {"conversations", "converted_conversations", "conversion_rate", "events", "value", "first_seen",
           "last_seen"}
ROW_KEYS = {
    "ad": {"ad_id", "channel", "headline", "source_url", *METRICS},
    "channel": {"channel", *METRICS},
    "event": {"event_name", *METRICS},
    "day": {"day", *METRICS},
}
COVERAGE = {"events_sent", "with_ad", "unattributed", "rejected", "uncertain", "match_keys"}
MATCH_KEYS = {"em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country", "external_id"}
RUN = {"run_id", "started_at", "ended_at", "dataset_id", "inputs", "read", "invalid", "unattributed", "filtered",
       "skipped", "sent", "rejected", "failed", "uncertain", "exit_code"}


@pytest.fixture
def ledger_with_one_of_each(capi_home: Path) -> None:
    now = int(time.time())
    with Ledger.open(capi_home / "ledger.sqlite3") as ledger:
        ledger.referrals.store_referrals([{"channel": "whatsapp", "ctwa_clid": "ARAkC1", "ad_id": "120", "source_type": "ad",
                                           "headline": "Ad", "source_url": "https://fb.me/x", "wa_id": "905321234567",
                                           "message_id": "wamid.1", "timestamp": now - 60}])
        facts = EventFacts("whatsapp", 10.0, "TRY", False, "em,ph", "ARAkC1")
        ledger.begin_batch("1", "b1", [PendingEvent("Purchase", "e1", now - 30, "f.csv", 2, "h", facts=facts)])
        ledger.settle("1", "b1", [("Purchase", "e1")], "sent")
        ledger.record_run(started_at=now - 40, dataset_id="1", inputs=["f.csv"], counts={"sent": 1}, exit_code=0)


@pytest.mark.parametrize("by", ["ad", "channel", "event", "day"])
def test_report_json_keys(ledger_with_one_of_each: None, by: str) -> None:
    result = CliRunner().invoke(app, ["report", "--by", by, "--format", "json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert set(document) == TOP
    assert set(document["period"]) == PERIOD
    assert document["by"] == by
    assert document["rows"] and all(set(row) == ROW_KEYS[by] for row in document["rows"])
    assert set(document["coverage"]) == COVERAGE
    assert set(document["coverage"]["match_keys"]) == MATCH_KEYS
    assert document["runs"] and all(set(run) == RUN for run in document["runs"])


def test_report_json_types(ledger_with_one_of_each: None) -> None:
    document = json.loads(CliRunner().invoke(app, ["report", "--json"]).stdout)
    row = document["rows"][0]
    assert row == {"ad_id": "120", "channel": "whatsapp", "headline": "Ad", "source_url": "https://fb.me/x",
                   "conversations": 1, "converted_conversations": 1, "conversion_rate": 1.0,
                   "events": {"Purchase": 1}, "value": {"TRY": 10.0}, "first_seen": row["first_seen"],
                   "last_seen": row["last_seen"]}
    assert row["first_seen"].endswith("Z") and document["period"]["since"].endswith("Z")
    assert document["coverage"]["match_keys"]["em"] == 1.0 and document["coverage"]["match_keys"]["zp"] == 0.0
    assert isinstance(document["runs"][0]["inputs"], list)
