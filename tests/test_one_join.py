"""SPEC §7: `validate`, `send`, `send --dry-run` (with and without a dataset id and token) and the
`--strict` pre-check decide validity and attribution by one code path, and agree event by event.

The referrals are captured from the example webhook dump, made fresh (examples/fresh_webhooks.py),
into the home's ledger; the export carries no click id for the customer whose referral is stored,
so only a command that joins the stored referral can find that order valid and attributed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

from capi_cli.sandbox.server import GraphStandin
from support.sending import DATASET, TOKEN, send_env

ROOT = Path(__file__).resolve().parents[1]
CAPI = [sys.executable, "-m", "capi_cli"]

# The customer 919876543210 opened the chat from an ad (examples/webhooks, line 1): no click id
# in the export, the join finds it. 905321234567 carries its own click id. 919999999999 has no
# referral at all: unattributed, not sent, not an error. Line 6 is an unknown event name (an error),
# line 7 an invalid email (dropped from the event, which is still sent).
ORDERS = """\
event_name,channel,wa_id,ctwa_clid,whatsapp_business_account_id,page_id,psid,email,order_id,value,currency
Purchase,whatsapp,919876543210,,104996122399160,,,priya@example.com,A1,2499,INR
Purchase,whatsapp,905321234567,ARAkFreshClickId123,104996122399160,,,buyer@example.com,A2,100,TRY
QualifiedLead,messenger,,,,109876543210987,6543210987654321,mehmet@example.com,L1,,
Purchase,whatsapp,919999999999,,104996122399160,,,nobody@example.com,A4,10,INR
Buy,whatsapp,919876543210,,104996122399160,,,x@example.com,A5,10,INR
Purchase,whatsapp,919876543210,,104996122399160,,,not-an-email,A6,10,INR
"""
# The same customers, every row valid only thanks to the join (for the --strict comparison).
JOINED_ONLY = """\
event_name,channel,wa_id,whatsapp_business_account_id,email,order_id,value,currency
Purchase,whatsapp,919876543210,104996122399160,priya@example.com,B1,2499,INR
OrderShipped,whatsapp,+91 98765 43210,104996122399160,,B1,,
"""
_PROBLEM = re.compile(r"^(?P<source>[^:]+):(?P<line>\d+):.*\[(?P<code>\w+)\]$")


def capi(env: dict[str, str], *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CAPI, *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def capture_referrals(tmp: Path, env: dict[str, str]) -> None:
    dump = tmp / "dump.ndjson"
    subprocess.run([sys.executable, str(ROOT / "examples" / "fresh_webhooks.py"),
                    str(ROOT / "examples" / "webhooks" / "ad-referrals.ndjson"), str(dump)], check=True)
    done = capi(env, "-q", "extract-referral", str(dump), "-o", str(tmp / "referrals.ndjson"), cwd=tmp)
    assert done.returncode == 0, done.stderr


def errors_of(stderr: str) -> set[tuple[int, str]]:
    from capi_cli.events.validate import WARNING_CODES

    found = {(int(m["line"]), m["code"]) for m in map(_PROBLEM.match, stderr.splitlines()) if m}
    return {(line, code) for line, code in found if code not in WARNING_CODES}


def events_of(path: Path) -> dict[str, dict]:
    return {e["event_id"]: e for e in map(json.loads, path.read_text().splitlines())}


def test_validate_dry_runs_send_and_strict_agree_event_by_event(tmp_path: Path) -> None:
    home = tmp_path / "home"
    with GraphStandin(token=TOKEN, datasets={DATASET}) as graph:
        env = send_env(home, graph.url)
        bare = {k: v for k, v in env.items() if k not in ("CAPI_DATASET_ID", "CAPI_ACCESS_TOKEN")}
        capture_referrals(tmp_path, env)
        (tmp_path / "orders.csv").write_text(ORDERS)

        checked = capi(env, "validate", "orders.csv", "--format", "json", cwd=tmp_path)
        report = json.loads(checked.stdout)
        dry_bare = capi(bare, "send", "--file", "orders.csv", "--dry-run", "-o", "bare.ndjson", "--json", cwd=tmp_path)
        dry_full = capi(env, "send", "--file", "orders.csv", "--dry-run", "-o", "full.ndjson", "--json", cwd=tmp_path)
        strict = capi(env, "send", "--file", "orders.csv", "--strict", "--json", cwd=tmp_path)
        assert graph.posts == 0, "--strict sent with invalid records"
        sent = capi(env, "send", "--file", "orders.csv", "-o", "sent.ndjson", "--json", cwd=tmp_path)

    # The same invalid records, the same codes, from every command.
    from_validate = {(p["line"], p["code"]) for p in report["problems"] if p["severity"] == "error"}
    assert from_validate == {(6, "unknown_event_name")}
    warnings = {(p["line"], p["code"]) for p in report["problems"] if p["severity"] == "warning"}
    assert {(5, "unattributed"), (7, "dropped_field")} <= warnings
    for run in (dry_bare, dry_full, strict, sent):
        assert errors_of(run.stderr) == from_validate, run.stderr
        assert run.returncode == 1, run.stderr
    counts = {k: report[k] for k in ("records", "invalid", "attributed", "unattributed")}
    assert counts == {"records": 6, "invalid": 1, "attributed": 2, "unattributed": 1}
    for run in (dry_bare, dry_full, strict, sent):
        summary = json.loads(run.stdout)
        assert (summary["read"], summary["invalid"], summary["attributed"], summary["unattributed"]) == (6, 1, 2, 1), run.stdout
    assert json.loads(strict.stdout)["sent"] == 0

    # The same events, byte for byte in what matters, joined the same way.
    bare_events, full_events = events_of(tmp_path / "bare.ndjson"), events_of(tmp_path / "full.ndjson")
    sent_events = events_of(tmp_path / "sent.ndjson")
    assert len(bare_events) == report["valid"] == 4
    for other in (full_events, sent_events):
        assert other.keys() == bare_events.keys()
        for event_id, event in other.items():
            assert {k: v for k, v in event.items() if k != "event_time"} == {
                k: v for k, v in bare_events[event_id].items() if k != "event_time"}
    joined = [e for e in bare_events.values() if e["custom_data"].get("order_id") == "A1"]
    assert joined and joined[0]["user_data"]["ctwa_clid"].startswith("ARAkLkA8rmlFei")
    assert {event_id for (_, event_id) in graph.received} == set(bare_events)


def test_strict_pre_check_joins_stored_referrals(tmp_path: Path) -> None:
    """A file valid only through the join: --strict sends it, as validate and the dry run say."""
    home = tmp_path / "home"
    with GraphStandin(token=TOKEN, datasets={DATASET}) as graph:
        env = send_env(home, graph.url)
        capture_referrals(tmp_path, env)
        (tmp_path / "joined.csv").write_text(JOINED_ONLY)
        checked = capi(env, "validate", "joined.csv", "--json", cwd=tmp_path)
        dry = capi({k: v for k, v in env.items() if k != "CAPI_DATASET_ID"},
                   "send", "--file", "joined.csv", "--dry-run", "--json", cwd=tmp_path)
        strict = capi(env, "send", "--file", "joined.csv", "--strict", "--json", cwd=tmp_path)
        received = set(graph.received)
    assert checked.returncode == 0 and json.loads(checked.stdout)["attributed"] == 2, checked.stdout
    assert dry.returncode == 0 and json.loads(dry.stdout)["sent"] == 2, dry.stderr
    assert strict.returncode == 0, strict.stderr
    assert json.loads(strict.stdout)["sent"] == 2 and len(received) == 2
