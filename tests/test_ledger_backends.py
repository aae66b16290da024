"""Both ledger backends answer every ledger and referral command with the same JSON (SPEC §8,
issue 15): the same send, extraction and maintenance on a SQLite file and on a real PostgreSQL
server, command by command; and what only one backend has (the send lock; masking the URL)."""

from __future__ import annotations

import csv
import json
import re
import time
from pathlib import Path
from typing import Any

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
