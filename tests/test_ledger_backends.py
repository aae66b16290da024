"""Both ledger backends answer every ledger and referral command with the same JSON (SPEC §8,
issue 15): the same send, extraction and maintenance on a SQLite file and on a real PostgreSQL
server, command by command; and what only one backend has (the send lock; masking the URL)."""

from __future__ import annotations

import csv
import json
import os
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from typer.testing import CliRunner

from capi_cli.cli.app import app
from capi_cli.sandbox.server import RESET_AFTER, GraphStandin
from pg_server import PASSWORD
from support.sending import DATASET, TOKEN, WABA

FIXTURES = Path(__file__).parent / "fixtures" / "webhooks"
EVENT_TIME = int(time.time()) - 3600  # one value for both backends, within Meta's 7 days
PHONE = "+90 532 123 45 67"  # the WhatsApp user of tests/fixtures/webhooks/whatsapp


def write_orders(path: Path, n: int, prefix: str = "ord") -> list[str]:
    ids = [f"{prefix}-{i:04d}" for i in range(n)]
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["event_name", "event_id", "event_time", "ctwa_clid", "phone", "value", "currency"])
        for i, event_id in enumerate(ids):
            writer.writerow(["Purchase", event_id, EVENT_TIME, f"ARAkClid{i:04d}", f"+9053212{i:05d}",
                             f"{10 + i}.00", "TRY"])
    return ids


def _env(graph_url: str, ledger: str) -> dict[str, str]:
    return {"CAPI_DATASET_ID": DATASET, "CAPI_ACCESS_TOKEN": TOKEN, "CAPI_GRAPH_URL": graph_url,
            "CAPI_WHATSAPP_BUSINESS_ACCOUNT_ID": WABA, "CAPI_LEDGER": ledger}


def _normal(text: str) -> Any:
    """Command output with what differs by nature between two runs (clock times) blanked."""
    text = re.sub(r'"updated_at": ?"[^"]*"', '"updated_at": "T"', text)
    try:
        return json.loads(text)
    except ValueError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def scenario(ledger: str, tmp: Path) -> dict[str, Any]:
    """A send with an ambiguous batch, a re-run, stored referrals, then every command's JSON."""
    runner = CliRunner()
    orders = tmp / "orders.csv"
    write_orders(orders, 30)
    out: dict[str, Any] = {}
    with GraphStandin(token=TOKEN, datasets={DATASET}) as graph:
        graph.inject(RESET_AFTER, on=2)  # the second batch: counted by Meta, no answer -> uncertain
        env = _env(graph.url, ledger)

        def run(*args: str, code: int = 0) -> Any:
            result = runner.invoke(app, list(args), env=env)
            assert result.exit_code == code, (args, result.stdout, result.stderr)
            assert "Traceback" not in result.stderr and PASSWORD not in result.stdout + result.stderr
            return _normal(result.stdout) if result.stdout.strip() else None

        send = ["send", "--file", str(orders), "--batch-size", "10", "--concurrency", "1",
                "--no-progress", "--format", "json"]
        out["send"] = run(*send, code=4)
        out["re-send"] = run(*send, code=4)
        out["extract"] = run("-q", "extract-referral", str(FIXTURES / "whatsapp"), "--format", "ndjson")
        out["stats"] = run("ledger", "stats", "--format", "json")
        out["list"] = run("ledger", "list", "--format", "json")
        out["list uncertain"] = run("ledger", "list", "--status", "uncertain", "--format", "json")
        out["list limit"] = run("ledger", "list", "--event-name", "Purchase", "--limit", "3", "--format", "json")
        out["export"] = run("ledger", "export")
        out["export csv"] = _csv_rows(runner, env)
        out["referrals list"] = run("referrals", "list", "--format", "json")
        out["referrals whatsapp"] = run("referrals", "list", "--channel", "whatsapp", "--format", "json")
        out["referrals lookup"] = run("referrals", "lookup", PHONE, "--format", "json")
        out["forget"] = run("ledger", "forget", "--status", "uncertain", "--yes", "--format", "json")
        out["prune"] = run("ledger", "prune", "--older-than", "30d", "--format", "json")
        out["stats after"] = run("ledger", "stats", "--format", "json")
        out["resend forgotten"] = run(*send)
        out["stats end"] = run("ledger", "stats", "--format", "json")
        assert graph.duplicates().keys() <= {("Purchase", f"ord-{i:04d}") for i in range(10, 20)}
    return out


def _csv_rows(runner: CliRunner, env: dict[str, str]) -> list[list[str]]:
    result = runner.invoke(app, ["ledger", "export", "--format", "csv"], env=env)
    assert result.exit_code == 0, result.stderr
    rows = list(csv.reader(result.stdout.splitlines()))
    at = rows[0].index("updated_at")
    return [row[:at] + row[at + 1:] for row in rows]


def test_every_command_gives_the_same_json_on_both_backends(tmp_path: Path, pg_url: str) -> None:
    on_sqlite = scenario(str(tmp_path / "ledger.sqlite3"), tmp_path)
    on_postgres = scenario(pg_url, tmp_path)  # the same input file: `source` is the same
    for command, answer in on_sqlite.items():
        assert on_postgres[command] == answer, command
    # The scenario is not empty: both backends did the work.
    assert on_sqlite["stats"]["total"] == {"sent": 20, "uncertain": 10}
    assert on_sqlite["re-send"]["skipped"] == 20 and on_sqlite["re-send"]["uncertain"] == 10
    assert on_sqlite["forget"] == {"forgotten": 10}
    assert on_sqlite["referrals lookup"] and on_sqlite["stats end"]["total"] == {"sent": 30}


@pytest.fixture(params=["sqlite", "postgres"])
def ledger_location(request: pytest.FixtureRequest, capi_home: Path) -> str:
    if request.param == "postgres":
        return str(request.getfixturevalue("pg_url"))
    return str(capi_home / "ledger.sqlite3")


def test_a_rerun_sends_nothing_again(ledger_location: str, tmp_path: Path) -> None:
    runner = CliRunner()
    write_orders(tmp_path / "orders.csv", 25)
    with GraphStandin(token=TOKEN, datasets={DATASET}) as graph:
        env = _env(graph.url, ledger_location)
        argv = ["send", "--file", str(tmp_path / "orders.csv"), "--no-progress", "--format", "json"]
        first = runner.invoke(app, argv, env=env)
        second = runner.invoke(app, argv, env=env)
        assert first.exit_code == 0 and second.exit_code == 0, (first.stderr, second.stderr)
        assert json.loads(first.stdout)["sent"] == 25
        assert json.loads(second.stdout)["sent"] == 0 and json.loads(second.stdout)["skipped"] == 25
        assert graph.posts == 1 and not graph.duplicates()


def test_postgres_password_is_masked_everywhere(pg_url: str, tmp_path: Path) -> None:
    runner = CliRunner()
    env = {"CAPI_LEDGER": pg_url}
    for argv in (["config", "show", "--format", "json"], ["config", "show"], ["config", "path", "--format", "json"],
                 ["ledger", "path"], ["doctor", "--offline"], ["ledger", "stats"]):
        result = runner.invoke(app, argv, env=env)
        assert PASSWORD not in result.stdout + result.stderr, argv
    shown = runner.invoke(app, ["ledger", "path"], env=env).stdout.strip()
    assert shown == pg_url.replace(PASSWORD, "***")
    doctor = runner.invoke(app, ["doctor", "--offline"], env=env)
    assert "PostgreSQL" in doctor.stdout + doctor.stderr
    # A wrong password: one clear line, exit 3, the password given not echoed.
    wrong = pg_url.replace(PASSWORD, "Wrong-PW-91d2")
    result = runner.invoke(app, ["ledger", "stats"], env={"CAPI_LEDGER": wrong})
    assert result.exit_code == 3
    assert result.stderr.startswith("capi: error: ledger: cannot connect to the PostgreSQL ledger") and "Wrong-PW-91d2" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_postgres_credentials_from_pgpassfile(pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    host_port = re.search(r"@([^/]+)/", pg_url)
    assert host_port is not None
    host, port = host_port.group(1).split(":")
    database = pg_url.rsplit("/", 1)[1]
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"{host}:{port}:{database}:capi:{PASSWORD}\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    url = pg_url.replace(f":{PASSWORD}@", "@")
    result = CliRunner().invoke(app, ["ledger", "stats", "--format", "json"], env={"CAPI_LEDGER": url})
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == {"total": {}, "by_dataset": {}}
    monkeypatch.delenv("PGPASSFILE")
    monkeypatch.setenv("PGPASSWORD", PASSWORD)  # libpq's environment
    result = CliRunner().invoke(app, ["ledger", "stats", "--format", "json"], env={"CAPI_LEDGER": url})
    assert result.exit_code == 0, result.stderr


def test_migrations_are_applied_once_and_recorded(pg_url: str) -> None:
    import psycopg

    from capi_cli.ledger import MIGRATIONS, open_ledger

    for _ in range(2):
        open_ledger(pg_url).close()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT version FROM capi_schema").fetchall() == [(len(MIGRATIONS),)]


# -- what the features merged beside the PostgreSQL backend do, the same on both ---------------

REAL = Path(__file__).parent / "fixtures" / "real_webhooks"
TR_CLID = "ARAkLkA8rmlFeiCktEJQ-QTwRiyYHAFDLMNDBH0CD3qpjd0HR4irJ6LEkR7JwFF4XvnO2E4Nx0-eM-GABDLOPaOdRMv-_zfUQ2a"
DE_CLID = "Afc3nYt4TSlZ5bR0Kq9wqRJwFpBvKqE0rT8zU7oGsmB2xO4d8yV1QpXk3nH6aJ5cF9gL0iM2uW7eZ4sD1fA8hC6jN3bV5xY0_-tPq"
PSID = "6123456789012345"  # the Messenger user of real_webhooks/meta_messenger_ad_referral.json


def _recent_whatsapp(path: Path, at: int) -> Path:
    """Meta's WhatsApp Cloud API webhook (two businesses, two ad clicks), its clicks `at`."""
    body = json.loads((FIXTURES / "whatsapp" / "cloud_two_entries.json").read_text())
    for entry in body["entry"]:
        for change in entry["changes"]:
            for message in change["value"].get("messages", []):
                message["timestamp"] = str(at)
    path.write_text(json.dumps(body))
    return path


def _invoke(runner: CliRunner, env: dict[str, str], *args: str, code: int = 0) -> Any:
    result = runner.invoke(app, list(args), env=env)
    assert result.exit_code == code, (args, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and PASSWORD not in result.stdout + result.stderr
    return result


def report_history(ledger: str, tmp: Path) -> dict[str, Any]:
    """Referrals of three ads captured, then a send whose orders are tied to them by click id,
    by the phone join and by PSID, with one order of an unknown click and an uncertain batch;
    a re-run; then `capi report --format json` by each grouping."""
    runner = CliRunner()
    now = int(time.time())
    webhook = _recent_whatsapp(tmp / f"webhook-{now}.json", EVENT_TIME - 3 * 3600)
    orders = tmp / "report-orders.csv"
    with orders.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["event_name", "event_id", "event_time", "channel", "ctwa_clid", "phone", "email",
                         "page_scoped_user_id", "value", "currency"])
        writer.writerow(["Purchase", "r-1", EVENT_TIME, "whatsapp", DE_CLID, "", "a@example.com", "", "99.50", "EUR"])
        writer.writerow(["Purchase", "r-2", EVENT_TIME, "whatsapp", "", PHONE, "", "", "49.90", "TRY"])
        writer.writerow(["Purchase", "r-3", EVENT_TIME + 60, "whatsapp", "ARAkUnknownClick0001", "", "", "", "5", "TRY"])
        writer.writerow(["Purchase", "r-4", EVENT_TIME, "messenger", "", "", "b@example.com", PSID, "20", "USD"])
        writer.writerow(["LeadSubmitted", "r-5", EVENT_TIME, "whatsapp", TR_CLID, "", "", "", "", ""])
        writer.writerow(["Purchase", "r-6", EVENT_TIME + 120, "whatsapp", DE_CLID, "", "", "", "10", "EUR"])
    until = time.strftime("%Y-%m-%d", time.gmtime(now + 2 * 86400))
    with GraphStandin(token=TOKEN, datasets={DATASET}) as graph:
        graph.inject(RESET_AFTER, on=3)  # the third batch: r-5, r-6 uncertain
        env = _env(graph.url, ledger)
        _invoke(runner, env, "-q", "extract-referral", str(webhook), str(REAL / "meta_messenger_ad_referral.json"),
                "--format", "ndjson")
        send = ["send", "--file", str(orders), "--batch-size", "2", "--concurrency", "1", "--no-progress",
                "--format", "json"]
        _invoke(runner, env, *send, code=4)
        _invoke(runner, env, *send, code=4)
        out = {}
        for by in ("ad", "channel", "event", "day"):
            result = _invoke(runner, env, "report", "--since", "2017-01-01", "--until", until, "--by", by,
                             "--format", "json")
            document = json.loads(result.stdout)
            for run in document["runs"]:  # each backend's own runs: their ids and clock times differ
                run["run_id"] = run["started_at"] = run["ended_at"] = "T"
            out[by] = document
    return out


def test_report_gives_the_same_json_on_both_backends(tmp_path: Path, pg_url: str) -> None:
    on_sqlite = report_history(str(tmp_path / "ledger.sqlite3"), tmp_path)
    on_postgres = report_history(pg_url, tmp_path)
    for by, document in on_sqlite.items():
        assert on_postgres[by] == document, by
    # The history is not empty: ads converted by click id, by the join and by PSID; one ad unknown.
    rows = {row["ad_id"]: row for row in on_sqlite["ad"]["rows"]}
    assert rows["120209876543210987"]["events"] == {"Purchase": 1} and rows["120209876543210987"]["value"] == {"EUR": 99.5}
    assert rows["120211889912340567"]["converted_conversations"] == 1  # the phone join
    assert rows["120210987654321098"]["value"] == {"USD": 20.0}  # the Messenger PSID
    assert rows[None]["value"] == {"TRY": 5.0}
    assert rows["120211889912340567"]["headline"] == "Kış indirimi %30"
    coverage = on_sqlite["ad"]["coverage"]
    assert (coverage["events_sent"], coverage["with_ad"], coverage["uncertain"]) == (4, 3, 2)
    assert [run["exit_code"] for run in on_sqlite["ad"]["runs"]] == [4, 4]


def _copies(ledger: str, tmp: Path) -> dict[str, Any]:
    """One referral stored twice by two runs (the second copy adding the ad's URL and a delivery
    time for the dump's date), and two copies within one run (the second adding the WABA id)."""
    runner = CliRunner()
    env = _env("http://127.0.0.1:9", ledger)
    form = {"SmsMessageSid": "SMcopy01", "NumMedia": "0", "WaId": "905559876543", "SmsStatus": "received",
            "Body": "Merhaba", "To": "whatsapp:+14155238886", "MessageSid": "SMcopy01",
            "AccountSid": "AC0123456789abcdef0123456789abcdef", "From": "whatsapp:+905559876543",
            "ApiVersion": "2010-04-01", "ReferralCtwaClid": "ARAkCopyClid0001", "ReferralSourceId": "120219990001112224",
            "ReferralSourceType": "ad", "ReferralSourceUrl": "https://fb.me/twilioAd"}
    first = tmp / "first.txt"  # Twilio's form as a relay logged it: no time, no URL
    first.write_text(urlencode({k: v for k, v in form.items() if k != "ReferralSourceUrl"}) + "\n")
    os.utime(first, (EVENT_TIME - 5 * 86400, EVENT_TIME - 5 * 86400))
    second = tmp / "second.ndjson"  # the same message with its Date header
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(EVENT_TIME - 3 * 86400))
    second.write_text(json.dumps({"headers": {"Date": date}, "body": urlencode(form)}) + "\n")
    envelope = json.loads((REAL / "meta_wa_ctwa_ad.json").read_text())
    value = envelope["entry"][0]["changes"][0]["value"]
    bare = {k: v for k, v in value.items() if k != "contacts"}  # a relay's copy: no contact, no WABA id
    bare["messages"] = [dict(value["messages"][0])]
    bare["messages"][0]["referral"] = {k: v for k, v in bare["messages"][0]["referral"].items() if k != "source_url"}
    within = tmp / "within.ndjson"
    within.write_text(json.dumps(bare) + "\n" + json.dumps(envelope) + "\n")
    out: dict[str, Any] = {}
    for name in ("first", "second", "within"):
        result = _invoke(runner, env, "extract-referral", str(tmp / f"{name}.{'txt' if name == 'first' else 'ndjson'}"),
                         "--json")
        out[name] = [line for line in result.stderr.splitlines() if "stored" in line or "duplicates" in line]
    out["rows"] = _invoke(runner, env, "referrals", "list", "--format", "json").stdout
    return out


def _estimated(ledger: str) -> list[tuple[Any, ...]]:
    query = "SELECT channel, message_key, ts_estimated FROM referrals ORDER BY message_key"
    if ledger.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(ledger) as conn:
            return [tuple(row) for row in conn.execute(query).fetchall()]
    import sqlite3

    with sqlite3.connect(ledger) as conn:
        return conn.execute(query).fetchall()


def test_a_referral_stored_twice_is_merged_the_same_way_on_both_backends(tmp_path: Path, pg_url: str) -> None:
    sqlite_ledger = str(tmp_path / "ledger.sqlite3")
    on_sqlite = _copies(sqlite_ledger, tmp_path)
    on_postgres = _copies(pg_url, tmp_path)  # the same files: `origin` is the same
    assert on_postgres == on_sqlite
    assert _estimated(pg_url) == _estimated(sqlite_ledger)
    assert any("stored 0 new, 1 already known" in line for line in on_sqlite["second"]), on_sqlite
    assert any("duplicates 1 (1 merged)" in line for line in on_sqlite["within"]), on_sqlite
    rows = {row["message_id"]: row for row in json.loads(on_sqlite["rows"])}
    assert len(rows) == 2
    twilio = rows["SMcopy01"]
    assert twilio["source_url"] == "https://fb.me/twilioAd"  # the second copy's field, filled in
    assert twilio["timestamp"] == time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(EVENT_TIME - 3 * 86400))
    (meta,) = (row for key, row in rows.items() if key != "SMcopy01")
    assert meta["business_id"] == "102290129340398" and meta["source_url"] == "https://fb.me/3cr4Wqqkk"
    assert sorted(row[2] for row in _estimated(pg_url)) == [0, 0]  # the delivery's time replaced the dump's


def test_the_join_attributes_by_phone(ledger_location: str, tmp_path: Path) -> None:
    runner = CliRunner()
    webhook = _recent_whatsapp(tmp_path / "webhook.json", EVENT_TIME - 3 * 3600)
    env = {**_env("http://127.0.0.1:9", ledger_location), "CAPI_CHANNEL": "whatsapp"}
    _invoke(runner, env, "-q", "extract-referral", str(webhook), "--format", "ndjson")
    orders = tmp_path / "orders.csv"
    with orders.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["event_name", "order_id", "event_time", "phone", "value", "currency"])
        writer.writerow(["Purchase", "J-1", EVENT_TIME, PHONE, "49.90", "TRY"])  # the Turkish click
        writer.writerow(["Purchase", "J-2", EVENT_TIME, "+49 151 98765432", "19.90", "EUR"])  # the German one
        writer.writerow(["Purchase", "J-3", EVENT_TIME, "+90 555 000 00 00", "10", "TRY"])  # no referral
        writer.writerow(["Purchase", "J-4", EVENT_TIME - 4 * 3600, PHONE, "5", "TRY"])  # before the click
    report = json.loads(_invoke(runner, env, "validate", str(orders), "--format", "json").stdout)
    assert (report["valid"], report["attributed"]) == (2, 2), report
    payload = tmp_path / "payload.ndjson"
    _invoke(runner, env, "send", "--file", str(orders), "--dry-run", "-o", str(payload))
    events = {e["custom_data"]["order_id"]: e for e in map(json.loads, payload.read_text().splitlines())}
    assert events["J-1"]["user_data"]["ctwa_clid"] == TR_CLID
    assert events["J-2"]["user_data"]["ctwa_clid"] == DE_CLID
    assert set(events) == {"J-1", "J-2"}


def test_ids_given_as_numbers_are_stored_as_text_on_both_backends(ledger_location: str) -> None:
    """A caller of the ledger API may give ids as JSON numbers: SQLite's TEXT columns keep their
    text, and PostgreSQL must too (not refuse a number for a text column), on insert and merge."""
    from capi_cli.ledger import open_ledger

    first = {"channel": "whatsapp", "ctwa_clid": "ARAkNumbers1", "ad_id": 120219990001112224, "source_type": "ad",
             "wa_id": "905321234567", "business_id": 102290129340398, "phone_number_id": 106540352242922,
             "message_id": "wamid.NUM1", "timestamp": EVENT_TIME}
    with open_ledger(ledger_location) as ledger:
        assert ledger.referrals.store_referrals([first]) == (1, 0)
        assert ledger.referrals.store_referrals([{**first, "ad_id": None, "source_url": "https://fb.me/n", "ref": 7}]) == (0, 1)
        (row,) = ledger.referrals.list_referrals()
    assert (row["ad_id"], row["business_id"], row["phone_number_id"]) == \
        ("120219990001112224", "102290129340398", "106540352242922")
    assert (row["source_url"], row["ref"]) == ("https://fb.me/n", "7")


def test_an_event_is_tied_to_the_same_referral_on_both_backends(ledger_location: str) -> None:
    """The report fact `referral_key` (ledger.facts): a click's first referral, one with no time
    before any with a time (SQLite's order of NULL, which PostgreSQL reverses unless told); a
    Messenger user's latest referral at the event, equal times broken by the message key."""
    from capi_cli.ledger import PendingEvent, open_ledger
    from capi_cli.ledger.schema import EventFacts

    clid = "ARAkTwoCopiesClid"
    referrals = [
        {"channel": "whatsapp", "ctwa_clid": clid, "ad_id": "1201", "wa_id": "905321234567",
         "phone_number_id": "1065", "message_id": "wamid.TIMED", "timestamp": EVENT_TIME - 60},
        {"channel": "whatsapp", "ctwa_clid": clid, "ad_id": "1202", "wa_id": "905321234567",
         "phone_number_id": "1065", "message_id": "wamid.UNTIMED"},
        *({"channel": "messenger", "ad_id": f"130{n}", "user_id": PSID, "business_id": "1098",
           "message_id": f"m_{n}", "timestamp": EVENT_TIME - 60} for n in (2, 1)),
    ]
    events = [PendingEvent("Purchase", "w-1", EVENT_TIME, facts=EventFacts("whatsapp", 1.0, "TRY", False, "ph", clid)),
              PendingEvent("Purchase", "m-1", EVENT_TIME, facts=EventFacts("messenger", 2.0, "USD", False, "em", PSID))]
    with open_ledger(ledger_location) as ledger:
        assert ledger.referrals.store_referrals(referrals) == (4, 0)
        with ledger.sender():
            assert ledger.begin_batch(DATASET, "b1", events) == {("Purchase", "w-1"), ("Purchase", "m-1")}
            ledger.settle(DATASET, "b1", [("Purchase", "w-1"), ("Purchase", "m-1")], "sent")
        tied = ledger.report_query("SELECT event_id, referral_key, ad_id, attribution FROM events ORDER BY event_id")
        listed = [r["message_id"] for r in ledger.referrals.list_referrals(channel="whatsapp")]
    assert listed == ["wamid.TIMED", "wamid.UNTIMED"]  # newest first, no time last
    assert [tuple(row) for row in tied] == [("m-1", "1098|m_2", "1302", "click_id"),
                                            ("w-1", "1065|wamid.UNTIMED", "1202", "click_id")]


def test_an_older_postgres_ledger_is_migrated_with_its_rows(pg_url: str) -> None:
    """The migrations added beside the PostgreSQL backend (message keys rewritten with `||`, columns
    added, indexes dropped and made partial, the runs table) applied by PostgreSQL to a ledger that
    has rows, as SQLite applies them (test_referral_capture_store has the SQLite twin)."""
    import psycopg

    from capi_cli.ledger import MIGRATIONS, open_ledger
    from capi_cli.ledger.schema import postgres_sql, split_sql

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE capi_schema (version INTEGER NOT NULL)")
        for migration in MIGRATIONS[:2]:
            for statement in split_sql(postgres_sql(migration)):
                conn.execute(statement)
        conn.execute(
            "INSERT INTO referrals (channel, user_key, message_key, ctwa_clid, business_id, phone_number_id, "
            "message_id, ts, kind, origin, stored_at) VALUES ('whatsapp', 'k', 'wamid.OLD', NULL, 'W1', 'P1', "
            "'wamid.OLD', 100, 'message', 'old:1', 0)"
        )
        conn.execute("INSERT INTO events (dataset_id, event_name, event_id, state, created_at, updated_at) "
                     "VALUES ('1', 'Purchase', 'old-1', 'sent', 0, 0)")
        conn.execute("INSERT INTO capi_schema (version) VALUES (2)")
    with open_ledger(pg_url) as ledger:
        new, already = ledger.referrals.store_referrals([
            {"channel": "whatsapp", "ctwa_clid": "ARAkLater", "business_id": "W1", "phone_number_id": "P1",
             "message_id": "wamid.OLD", "timestamp": "1970-01-01T00:01:40Z", "kind": "message", "origin": "new:1"},
            {"channel": "whatsapp", "ctwa_clid": "ARAkOther", "business_id": "W2", "phone_number_id": "P2",
             "message_id": "wamid.OLD", "timestamp": "1970-01-01T00:01:40Z", "kind": "message", "origin": "new:2"},
        ])
        assert (new, already) == (1, 1)
        rows = ledger.referrals.list_referrals()
        assert ledger.state_of("1", "Purchase", "old-1") == "sent"
    assert sorted((r["business_id"], r["ctwa_clid"], r["origin"]) for r in rows) == [
        ("W1", "ARAkLater", "old:1"),  # merged into the stored row (its key rewritten), which keeps its origin
        ("W2", "ARAkOther", "new:2"),
    ]
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT version FROM capi_schema").fetchall() == [(len(MIGRATIONS),)]
        assert conn.execute("SELECT message_key, ts_estimated FROM referrals ORDER BY message_key").fetchall() == [
            ("P1|wamid.OLD", 0), ("P2|wamid.OLD", 0)]
        indexes = {row[0] for row in conn.execute("SELECT indexname FROM pg_indexes WHERE tablename = 'referrals'")}
        assert {"referrals_customer", "referrals_customer_bsuid", "referrals_clid", "referrals_by_ad"} <= indexes
        assert not indexes & {"referrals_user", "referrals_wa", "referrals_bsuid"}
        assert conn.execute("SELECT channel, attribution FROM events").fetchall() == [(None, None)]
