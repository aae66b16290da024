"""Moving up and across hosts on PostgreSQL (issue 15): `capi ledger copy --to URL` copies a SQLite
ledger, its referrals and its runs, idempotently, keeping its dedup and the report; a referral
captured on one host attributes an order validated on another."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

from typer.testing import CliRunner

from capi_cli.cli.app import app
from capi_cli.sandbox.server import RESET_AFTER, GraphStandin
from support.sending import DATASET, TOKEN, WABA
from test_ledger_backends import write_orders

WEBHOOKS = Path(__file__).parent / "fixtures" / "webhooks"


def _env(graph_url: str, ledger: str, home: Path) -> dict[str, str]:
    return {"CAPI_HOME": str(home), "CAPI_DATASET_ID": DATASET, "CAPI_ACCESS_TOKEN": TOKEN,
            "CAPI_GRAPH_URL": graph_url, "CAPI_WHATSAPP_BUSINESS_ACCOUNT_ID": WABA, "CAPI_LEDGER": ledger}


def _json(runner: CliRunner, env: dict[str, str], *args: str, code: int = 0) -> object:
    result = runner.invoke(app, list(args), env=env)
    assert result.exit_code == code, (args, result.stdout, result.stderr)
    return json.loads(result.stdout)


def test_copy_twice_changes_nothing_and_keeps_the_dedup(tmp_path: Path, pg_url: str) -> None:
    runner = CliRunner()
    sqlite_ledger = str(tmp_path / "home" / "ledger.sqlite3")
    write_orders(tmp_path / "orders.csv", 30)
    send = ["send", "--file", str(tmp_path / "orders.csv"), "--batch-size", "10", "--concurrency", "1",
            "--no-progress", "--format", "json"]
    with GraphStandin(token=TOKEN, datasets={DATASET}) as graph:
        graph.inject(RESET_AFTER, on=2)
        on_file = _env(graph.url, sqlite_ledger, tmp_path / "home")
        on_server = _env(graph.url, pg_url, tmp_path / "home")
        _json(runner, on_file, *send, code=4)
        runner.invoke(app, ["-q", "extract-referral", str(WEBHOOKS / "whatsapp"), "--format", "ndjson"], env=on_file)
        referrals = _json(runner, on_file, "referrals", "list", "--format", "json")
        assert isinstance(referrals, list) and referrals

        first = _json(runner, on_file, "ledger", "copy", "--to", pg_url, "--format", "json")
        assert first == {"to": pg_url.replace("pg-Secret-5e1f", "***"),
                         "copied": {"events": 30, "referrals": len(referrals), "runs": 1},
                         "already": {"events": 0, "referrals": 0, "runs": 0}}
        second = _json(runner, on_file, "ledger", "copy", "--to", pg_url, "--format", "json")
        assert second["copied"] == {"events": 0, "referrals": 0, "runs": 0}
        assert second["already"] == {"events": 30, "referrals": len(referrals), "runs": 1}
        # The report reads the copied facts and runs as the file's: the same document.
        report = ["report", "--since", "2017-01-01", "--until", time.strftime("%Y-%m-%d", time.gmtime(time.time() + 2 * 86400))]
        assert _json(runner, on_file, *report, "--format", "json")["coverage"]["events_sent"] == 20  # type: ignore[index]
        assert _json(runner, on_server, *report, "--format", "json") == \
            _json(runner, on_file, *report, "--format", "json")
        for command in (["ledger", "stats"], ["ledger", "list"], ["referrals", "list"]):
            assert _json(runner, on_server, *command, "--format", "json") == \
                _json(runner, on_file, *command, "--format", "json"), command
        # The columns no command shows as they are: the events' report facts, the referrals'
        # estimated-time flag and headline, the runs.
        for query in (f"SELECT event_id, {FACTS} FROM events ORDER BY event_id",
                      "SELECT message_key, ts_estimated, headline FROM referrals ORDER BY message_key",
                      "SELECT run_id, started_at, inputs, sent, uncertain, exit_code FROM runs"):
            on_file_rows = _rows(sqlite_ledger, query)
            assert on_file_rows and _rows(pg_url, query) == on_file_rows, query
        assert {row[-2] for row in _rows(sqlite_ledger, f"SELECT event_id, {FACTS} FROM events")} == {"none"}
        assert any(row[2] for row in _rows(sqlite_ledger, "SELECT message_key, ts_estimated, headline FROM referrals"))

        posts = graph.posts
        summary = _json(runner, on_server, *send, code=4)  # the uncertain batch keeps exit 4
        assert (summary["sent"], summary["skipped"], summary["uncertain"]) == (0, 20, 10)
        assert graph.posts == posts


FACTS = "channel, value, currency, referral_key, ad_id, attribution, match_keys"


def _rows(ledger: str, query: str) -> list[tuple[object, ...]]:
    if ledger.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(ledger) as conn:
            return [tuple(row) for row in conn.execute(query).fetchall()]
    import sqlite3

    with sqlite3.connect(ledger) as conn:
        return conn.execute(query).fetchall()


def test_copy_refuses_what_it_cannot_copy(tmp_path: Path, pg_url: str) -> None:
    runner = CliRunner()
    env = {"CAPI_HOME": str(tmp_path / "home")}
    result = runner.invoke(app, ["ledger", "copy", "--to", str(tmp_path / "other.sqlite3")], env=env)
    assert result.exit_code == 2 and "postgresql://" in result.stderr
    result = runner.invoke(app, ["ledger", "copy", "--to", pg_url], env=env)
    assert result.exit_code == 2 and "no ledger" in result.stderr
    result = runner.invoke(app, ["ledger", "copy", "--to", pg_url], env={**env, "CAPI_LEDGER": pg_url})
    assert result.exit_code == 2 and "already" in result.stderr and "pg-Secret" not in result.stderr


def _recent_webhook(path: Path, at: int) -> None:
    """Meta's WhatsApp Cloud API webhook (the fixture), its ad click `at` a given time."""
    body = json.loads((WEBHOOKS / "whatsapp" / "cloud_two_entries.json").read_text())
    body["entry"][0]["changes"][0]["value"]["messages"][0]["timestamp"] = str(at)
    path.write_text(json.dumps(body))


def test_referral_captured_on_one_host_attributes_an_order_validated_on_another(
    tmp_path: Path, pg_url: str
) -> None:
    runner = CliRunner()
    now = int(time.time())
    _recent_webhook(tmp_path / "webhook.json", now - 3 * 3600)
    web_host = {"CAPI_HOME": str(tmp_path / "web-host"), "CAPI_LEDGER": pg_url}
    result = runner.invoke(app, ["-q", "extract-referral", str(tmp_path / "webhook.json"), "--format", "ndjson"],
                           env=web_host)
    assert result.exit_code == 0, result.stderr
    with (tmp_path / "orders.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["event_name", "order_id", "event_time", "phone", "value", "currency"])
        writer.writerow(["Purchase", "A-1001", now - 3600, "+90 532 123 45 67", "49.90", "TRY"])
    batch_host = {"CAPI_HOME": str(tmp_path / "batch-host"), "CAPI_LEDGER": pg_url, "CAPI_CHANNEL": "whatsapp"}
    report = _json(runner, batch_host, "validate", str(tmp_path / "orders.csv"), "--format", "json")
    assert isinstance(report, dict) and (report["valid"], report["attributed"]) == (1, 1), report
    # The same order on a host with its own ledger file finds no referral: the server carried it.
    alone = {**batch_host, "CAPI_LEDGER": str(tmp_path / "batch-host" / "ledger.sqlite3")}
    report = _json(runner, alone, "validate", str(tmp_path / "orders.csv"), "--format", "json", code=1)
    assert isinstance(report, dict) and report["attributed"] == 0
