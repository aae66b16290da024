"""The keys of every `--format json` output SPEC.md names: promises to scripts, pinned here.

A key added to an output must be added here (and to SPEC); a key removed or renamed fails this test.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from capi_cli.cli.app import app
from capi_cli.sandbox.server import GraphStandin

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "EAAG-CONTRACT-TOKEN"
DATASET = "1234567890"
WABA = "104996122399160"

SUMMARY_KEYS = {"read", "invalid", "attributed", "unattributed", "filtered", "skipped", "sent", "rejected",
                "failed", "uncertain", "batches", "requests", "dry_run"}  # SPEC §7
VALIDATE_KEYS = {"records", "valid", "invalid", "attributed", "unattributed", "filtered", "problems"}  # SPEC §6
PROBLEM_KEYS = {"source", "line", "record", "field", "code", "severity", "message"}  # SPEC §6
REFERRAL_KEYS = {"channel", "ctwa_clid", "ad_id", "source_type", "source_url", "headline", "body", "media_type",
                 "ref", "user_id", "wa_id", "bsuid", "username", "profile_name", "business_id",
                 "phone_number_id", "message_id", "timestamp", "kind", "signature", "origin"}  # SPEC §3
LEDGER_EVENT_KEYS = {"dataset_id", "event_name", "event_id", "state", "event_time", "attempts", "error_code",
                     "error_subcode", "error_message", "source", "updated_at"}  # SPEC §8
FIELD_KEYS = {"name", "aliases", "required_for", "hashed", "rule", "example"}  # SPEC §4


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"CAPI_HOME": str(tmp_path / "home"), "CAPI_WHATSAPP_BUSINESS_ACCOUNT_ID": WABA,
            "CAPI_DATASET_ID": DATASET, "CAPI_ACCESS_TOKEN": TOKEN}


def _json(env: dict[str, str], *args: str, code: int = 0) -> object:
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == code, result.output
    return json.loads(result.stdout)


def _orders(tmp_path: Path) -> Path:
    path = tmp_path / "orders.csv"
    path.write_text("event_name,event_id,ctwa_clid,phone,value,currency\n"
                    "Purchase,c-1,ARAkContract1,+905321234567,10,TRY\n"
                    "Buy,c-2,ARAkContract2,+905321234568,10,TRY\n")
    return path


def test_validate_and_send_summaries(tmp_path: Path, env: dict[str, str]) -> None:
    orders = str(_orders(tmp_path))
    report = _json(env, "validate", orders, "--format", "json", code=1)
    assert isinstance(report, dict) and set(report) == VALIDATE_KEYS
    assert report["problems"] and all(set(p) == PROBLEM_KEYS for p in report["problems"])
    dry = _json(env, "send", "--file", orders, "--dry-run", "--format", "json", code=1)
    assert isinstance(dry, dict) and set(dry) == SUMMARY_KEYS
    with GraphStandin(token=TOKEN, datasets={DATASET}) as graph:
        sent = _json({**env, "CAPI_GRAPH_URL": graph.url}, "send", "--file", orders, "--json", code=1)
    assert isinstance(sent, dict) and set(sent) == SUMMARY_KEYS and sent["sent"] == 1

    stats = _json(env, "ledger", "stats", "--format", "json")
    assert isinstance(stats, dict) and set(stats) == {"total", "by_dataset"}
    listed = _json(env, "ledger", "list", "--format", "json")
    assert isinstance(listed, list) and listed and all(set(row) == LEDGER_EVENT_KEYS for row in listed)


def test_referrals(env: dict[str, str]) -> None:
    dump = str(ROOT / "examples" / "webhooks" / "ad-referrals.ndjson")
    records = _json(env, "extract-referral", dump, "--format", "json")
    assert isinstance(records, list) and records and all(set(r) == REFERRAL_KEYS for r in records)
    stored = _json(env, "referrals", "list", "--format", "json")
    assert isinstance(stored, list) and stored
    columns = set(stored[0])
    assert {"channel", "ctwa_clid", "ad_id", "user_id", "business_id", "message_id", "timestamp"} <= columns
    assert not columns & {"profile_name", "username", "body"}  # personal data is never stored


def test_fields_hash_and_config(env: dict[str, str]) -> None:
    fields = _json(env, "fields", "--format", "json")
    assert isinstance(fields, list) and all(set(f) == FIELD_KEYS for f in fields)
    hashed = _json(env, "hash", "em", "a@example.com", "--format", "json")
    assert isinstance(hashed, list) and set(hashed[0]) == {"field", "value", "hash"}
    paths = _json(env, "config", "path", "--format", "json")
    assert isinstance(paths, dict) and set(paths) == {"home", "config_file", "ledger"}
    shown = _json(env, "config", "show", "--format", "json")
    assert isinstance(shown, dict) and {"profile", "config_file", "home", "settings"} <= set(shown)
    doctor = _json(env, "doctor", "--offline", "--format", "json")
    assert isinstance(doctor, dict) and set(doctor) == {"ok", "checks"}
    assert all(set(check) == {"name", "ok", "detail"} for check in doctor["checks"])
