"""`capi send` end to end (SPEC §7, §8): the CLI, a real SQLite ledger, the Graph stand-in on 127.0.0.1."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from capi_cli.cli.app import app
from capi_cli.ledger import Ledger
from capi_cli.sandbox.server import RESET_AFTER, RESET_BEFORE, SLOW, TRANSIENT, GraphStandin
from support.sending import (
    APP_SECRET,
    DATASET,
    TOKEN,
    assert_exactly_once,
    ledger_states,
    send_env,
    write_events_csv,
)


@pytest.fixture
def standin():
    with GraphStandin(token=TOKEN, datasets={DATASET}) as graph:
        yield graph


def run(runner, home: Path, standin, *args: str, token: str = TOKEN, env_extra: dict | None = None):
    env = send_env(home, standin.url, token)
    env.update(env_extra or {})
    # Retries must be quick in tests: small timeout, few retries.
    return runner.invoke(app, ["send", "--no-progress", *args], env=env)


def test_send_delivers_every_event_once_and_rerun_sends_nothing(runner, standin, tmp_path, capi_home) -> None:
    ids = write_events_csv(tmp_path / "orders.csv", 25)
    first = run(runner, capi_home, standin, "--file", str(tmp_path / "orders.csv"), "--batch-size", "10", "--json")
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    assert summary == {"read": 25, "invalid": 0, "attributed": 0, "unattributed": 0, "filtered": 0, "skipped": 0, "sent": 25, "rejected": 0,
                       "failed": 0, "uncertain": 0, "batches": 3, "requests": 3, "dry_run": False}
    assert standin.posts == 3
    assert all(r.n_events <= 10 for r in standin.requests)
    second = run(runner, capi_home, standin, "--file", str(tmp_path / "orders.csv"), "--json")
    assert second.exit_code == 0
    assert json.loads(second.stdout)["skipped"] == 25 and json.loads(second.stdout)["sent"] == 0
    assert standin.posts == 3
    assert_exactly_once(standin, capi_home, ids)


def test_wrong_token_exit_3_and_token_never_shown(runner, standin, tmp_path, capi_home) -> None:
    write_events_csv(tmp_path / "orders.csv", 5)
    bad = "EAAG-WRONG-TOKEN-d00d"
    result = run(runner, capi_home, standin, "-v", "--file", str(tmp_path / "orders.csv"), token=bad,
                 env_extra={"CAPI_APP_SECRET": APP_SECRET})
    assert result.exit_code == 3, result.output
    assert "token" in result.stderr.lower()
    for secret in (bad, APP_SECRET):
        assert secret not in result.output
        assert secret.encode() not in (capi_home / "ledger.sqlite3").read_bytes()
    assert "Traceback" not in result.output
    # The token travelled only in the Authorization header.
    assert all(bad not in r.path and bad not in json.dumps(r.body) for r in standin.requests)
    assert standin.requests[0].headers.get("authorization") == f"Bearer {bad}"


def test_missing_token_is_setup_error(runner, standin, tmp_path, capi_home) -> None:
    write_events_csv(tmp_path / "orders.csv", 1)
    env = send_env(capi_home, standin.url)
    del env["CAPI_ACCESS_TOKEN"]
    result = runner.invoke(app, ["send", "--file", str(tmp_path / "orders.csv")], env=env)
    assert result.exit_code == 3 and "access token" in result.stderr


def test_second_send_on_the_same_ledger_exits_5(runner, standin, tmp_path, capi_home) -> None:
    write_events_csv(tmp_path / "orders.csv", 3)
    holder = Ledger.open(capi_home / "ledger.sqlite3")
    holder.acquire_send_lock()
    try:
        result = run(runner, capi_home, standin, "--file", str(tmp_path / "orders.csv"))
    finally:
        holder.close()
    assert result.exit_code == 5 and "another capi send" in result.stderr
    assert standin.posts == 0
    assert run(runner, capi_home, standin, "--file", str(tmp_path / "orders.csv")).exit_code == 0


def test_refused_event_isolated_batch_mates_delivered(runner, standin, tmp_path, capi_home) -> None:
    ids = write_events_csv(tmp_path / "orders.csv", 16)
    standin.poison = {ids[5]}
    result = run(runner, capi_home, standin, "--file", str(tmp_path / "orders.csv"), "--json")
    assert result.exit_code == 1, result.output
    summary = json.loads(result.stdout)
    assert summary["sent"] == 15 and summary["rejected"] == 1
    states = ledger_states(capi_home)
    assert states[ids[5]] == "rejected" and sum(s == "sent" for s in states.values()) == 15
    listed = runner.invoke(app, ["ledger", "list", "--status", "rejected", "--json"], env=send_env(capi_home, standin.url))
    [row] = json.loads(listed.stdout)
    assert (row["event_id"], row["error_code"], row["error_subcode"]) == (ids[5], 100, 2804019)
    assert_exactly_once(standin, capi_home, [i for i in ids if i != ids[5]])


@pytest.mark.parametrize("fault", [RESET_AFTER, SLOW])
def test_ambiguous_batch_held_uncertain_until_resend_uncertain(runner, standin, tmp_path, capi_home, fault) -> None:
    ids = write_events_csv(tmp_path / "orders.csv", 20)
    standin.inject(fault, on=1)
    args = ("--file", str(tmp_path / "orders.csv"), "--batch-size", "10", "--concurrency", "1", "--json")
    env = {"CAPI_CONFIG": str(tmp_path / "c.yaml")}
    (tmp_path / "c.yaml").write_text("profiles:\n  default:\n    timeout: 0.5\n    max_retries: 1\n")
    first = run(runner, capi_home, standin, *args, env_extra=env)
    assert first.exit_code == 4, first.output
    assert json.loads(first.stdout)["uncertain"] == 10
    again = run(runner, capi_home, standin, *args, env_extra=env)
    assert again.exit_code == 4 and json.loads(again.stdout)["sent"] == 0
    assert standin.received[("Purchase", ids[0])] == 1
    resend = run(runner, capi_home, standin, *args, "--resend-uncertain", env_extra=env)
    assert resend.exit_code == 0, resend.output
    assert standin.received[("Purchase", ids[0])] == 2  # deliberately resent: Meta had counted it
    assert set(ledger_states(capi_home).values()) == {"sent"}


@pytest.mark.parametrize("fault", [TRANSIENT, RESET_BEFORE, "throttle", "bare-503"])
def test_retryable_or_unknown_faults_never_double_count(runner, standin, tmp_path, capi_home, fault) -> None:
    ids = write_events_csv(tmp_path / "orders.csv", 30)
    standin.inject(fault, on=2)
    (tmp_path / "c.yaml").write_text("profiles:\n  default:\n    timeout: 1\n    max_retries: 3\n")
    result = run(runner, capi_home, standin, "--file", str(tmp_path / "orders.csv"), "--batch-size", "10",
                 env_extra={"CAPI_CONFIG": str(tmp_path / "c.yaml")})
    assert result.exit_code in (0, 4), result.output
    assert_exactly_once(standin, capi_home, ids)


def test_dry_run_writes_payload_and_leaves_ledger_alone(runner, standin, tmp_path, capi_home) -> None:
    write_events_csv(tmp_path / "orders.csv", 4)
    out = tmp_path / "payload.ndjson"
    result = run(runner, capi_home, standin, "--file", str(tmp_path / "orders.csv"), "--dry-run", "-o", str(out))
    assert result.exit_code == 0
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(events) == 4 and events[0]["action_source"] == "business_messaging"
    assert TOKEN not in out.read_text()
    assert standin.posts == 0 and not (capi_home / "ledger.sqlite3").exists()


def test_send_output_file_holds_what_was_sent(runner, standin, tmp_path, capi_home) -> None:
    write_events_csv(tmp_path / "orders.csv", 12)
    out = tmp_path / "sent.ndjson"
    result = run(runner, capi_home, standin, "--file", str(tmp_path / "orders.csv"), "-o", str(out))
    assert result.exit_code == 0
    written = [json.loads(line) for line in out.read_text().splitlines()]
    accepted = [e for r in standin.requests for e in (r.body or {}).get("data", [])]
    assert sorted(json.dumps(e, sort_keys=True) for e in written) == sorted(
        json.dumps(e, sort_keys=True) for e in accepted
    )


def test_strict_sends_nothing_when_a_row_is_invalid(runner, standin, tmp_path, capi_home) -> None:
    write_events_csv(tmp_path / "orders.csv", 5)
    with (tmp_path / "orders.csv").open("a") as fh:
        fh.write("Purchase,bad-1,ARAkClidBad,not-a-phone,x@example.com,10,TRY\n")
    strict = run(runner, capi_home, standin, "--file", str(tmp_path / "orders.csv"), "--strict", "--strict-fields")
    assert strict.exit_code == 1 and standin.posts == 0
    lenient = run(runner, capi_home, standin, "--file", str(tmp_path / "orders.csv"), "--json", "--strict-fields")
    assert lenient.exit_code == 1 and json.loads(lenient.stdout)["sent"] == 5
    assert "orders.csv:7" in lenient.stderr and "invalid_phone" in lenient.stderr


def test_earlier_uncertain_keeps_exit_4_until_forgotten(runner, standin, tmp_path, capi_home) -> None:
    write_events_csv(tmp_path / "orders.csv", 10)
    standin.inject(RESET_AFTER, on=1)
    args = ("--file", str(tmp_path / "orders.csv"))
    assert run(runner, capi_home, standin, *args).exit_code == 4
    write_events_csv(tmp_path / "more.csv", 3, prefix="more")
    assert run(runner, capi_home, standin, "--file", str(tmp_path / "more.csv")).exit_code == 4
    env = send_env(capi_home, standin.url)
    forgot = runner.invoke(app, ["ledger", "forget", "--status", "uncertain", "--yes"], env=env)
    assert forgot.exit_code == 0, forgot.output
    assert run(runner, capi_home, standin, "--file", str(tmp_path / "more.csv")).exit_code == 0


def _spawn_send(home: Path, url: str, csv_path: Path) -> subprocess.Popen:
    env = send_env(home, url)
    return subprocess.Popen(
        [sys.executable, "-m", "capi_cli", "send", "--file", str(csv_path), "--batch-size", "10",
         "--concurrency", "2", "--no-progress"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )


CRASH_POINTS = [0.0, 0.3, 0.5, 0.7, 0.9, 1.1, 1.3, 1.6, 2.0, 2.5]


@pytest.mark.parametrize("delay", CRASH_POINTS)
def test_sigkill_at_any_point_then_rerun_loses_nothing_doubles_nothing(tmp_path, delay) -> None:
    home = tmp_path / "home"
    ids = write_events_csv(tmp_path / "orders.csv", 200)
    with GraphStandin(token=TOKEN, datasets={DATASET}, latency=0.05) as graph:
        proc = _spawn_send(home, graph.url, tmp_path / "orders.csv")
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        rerun = _spawn_send(home, graph.url, tmp_path / "orders.csv")
        _, err = rerun.communicate(timeout=120)
        assert rerun.returncode in (0, 4), err.decode()
        assert_exactly_once(graph, home, ids)
        if rerun.returncode == 4:
            assert "uncertain" in err.decode()


def test_sigterm_settles_in_flight_and_exits_130(tmp_path) -> None:
    home = tmp_path / "home"
    ids = write_events_csv(tmp_path / "orders.csv", 400)
    with GraphStandin(token=TOKEN, datasets={DATASET}, latency=0.1) as graph:
        proc = _spawn_send(home, graph.url, tmp_path / "orders.csv")
        deadline = time.time() + 20
        while graph.posts < 2 and time.time() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err.decode()
        states = ledger_states(home)
        assert "in_flight" not in states.values()
        assert set(states.values()) <= {"sent"}
        rerun = _spawn_send(home, graph.url, tmp_path / "orders.csv")
        rerun.communicate(timeout=120)
        assert rerun.returncode == 0
        assert_exactly_once(graph, home, ids)
        assert len(graph.received) == 400


def test_doctor_checks_the_dataset_online(runner, standin, capi_home) -> None:
    ok = runner.invoke(app, ["doctor", "--json"], env=send_env(capi_home, standin.url))
    assert ok.exit_code == 0, ok.output
    checks = {c["name"]: c for c in json.loads(ok.stdout)["checks"]}
    assert checks["dataset"]["ok"]
    env = send_env(capi_home, standin.url)
    env["CAPI_DATASET_ID"] = "999999"
    missing = runner.invoke(app, ["doctor"], env=env)
    assert missing.exit_code == 3 and "FAIL" in missing.stdout
    bad = runner.invoke(app, ["doctor", "--json"], env=send_env(capi_home, standin.url, token="EAAG-NOPE-123"))
    assert bad.exit_code == 3 and "EAAG-NOPE-123" not in bad.output


def test_refused_row_without_event_time_is_not_retried_on_rerun(runner, standin, tmp_path, capi_home, monkeypatch) -> None:
    # The row has no event_time, so it is sent with the run's time; that alone must not make
    # it look edited, or every cron run would retry an unchanged refused row.
    csv_path = tmp_path / "orders.csv"
    csv_path.write_text(
        "event_name,event_id,ctwa_clid,value,currency\nPurchase,bad-1,ARAkPoison,10,TRY\nPurchase,ok-1,ARAkFine,10,TRY\n"
    )
    standin.poison = {"bad-1"}
    assert run(runner, capi_home, standin, "--file", str(csv_path)).exit_code == 1
    posts = standin.posts
    from capi_cli import clock

    later = clock.now() + 5
    monkeypatch.setattr(clock, "now", lambda: later)  # the next run's "now" differs
    again = run(runner, capi_home, standin, "--file", str(csv_path), "--json")
    assert json.loads(again.stdout)["skipped"] == 2, again.output
    assert standin.posts == posts
    # An edited row is tried again.
    csv_path.write_text(csv_path.read_text().replace("ARAkPoison,10", "ARAkPoison,11"))
    standin.poison = set()
    fixed = run(runner, capi_home, standin, "--file", str(csv_path), "--json")
    assert json.loads(fixed.stdout)["sent"] == 1
