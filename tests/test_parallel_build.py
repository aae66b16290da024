"""Building in worker processes (events.parallel) changes nothing but speed: the same NDJSON
byte for byte, the same problems at the same lines, the same summary, in every format, with
--limit, --since/--until, skips of `sent` events and the referral join; and the workers never
outlive the command (SIGKILL of the parent, SIGTERM, Ctrl-C)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from capi_cli.events.pipeline import BuildOptions, BuiltEvent, Problem, iter_events
from capi_cli.ledger import Ledger, LedgerState, PendingEvent

DATASET = "1234567890"
WABA = "104996122399160"
NOW = int(time.time())
HOUR = 3600
COLUMNS = ["event_name", "event_time", "event_id", "order_id", "ctwa_clid", "wa_id", "email", "phone", "fn",
           "city", "country", "value", "currency", "colour"]
PHONES = ["+905321234567", "+14155552671", "+442071838750", "+4915123456789"]


def _rows(n: int, timeless: bool = True) -> list[dict[str, Any]]:
    """Valid and invalid rows of every kind the pipeline treats differently (rows without a time are
    sent with the time of the run: two commands do not agree on it)."""
    rows: list[dict[str, Any]] = []
    for i in range(n):
        row: dict[str, Any] = {
            "event_name": "Purchase", "event_time": str(NOW - HOUR - i), "event_id": "", "order_id": f"o-{i}",
            "ctwa_clid": f"ARAkClid{i:06d}", "wa_id": "", "email": f"buyer{i}@example.com",
            "phone": PHONES[i % len(PHONES)], "fn": ["Ana", "José", "李"][i % 3], "city": "San Francisco",
            "country": "US", "value": f"{10 + i % 97}.5", "currency": "usd", "colour": "red",
        }
        kind = i % 23
        if kind == 1:
            row["email"] = "not-an-email"  # invalid
        elif kind == 2:
            row["order_id"] = f"o-{i - 2}"  # duplicate of an earlier row
        elif kind == 3:
            row["event_time"] = str(NOW - 30 * 24 * HOUR)  # too old
        elif kind == 4 and timeless:
            row["event_time"] = ""  # no time: "now", and its id from the row
            row["order_id"] = ""
        elif kind == 5:
            row["ctwa_clid"] = ""  # the referral join (a stored referral of this wa_id), or missing
            row["wa_id"] = "905321234567" if i % 2 else "14155552671"
        elif kind == 6:
            row["event_name"] = "Bogus"
        elif kind == 7:
            row["value"] = "-3"
        elif kind == 8:
            row["event_id"] = f"explicit-{i}"
        elif kind == 9:
            row["event_time"] = str(NOW - 6 * 24 * HOUR)  # outside --since 2d
        rows.append(row)
    return rows


def _write(path: Path, rows: list[dict[str, Any]]) -> Path:
    fmt = path.suffix
    if fmt == ".csv":
        with path.open("w", newline="", encoding="utf-8") as out:
            writer = csv.writer(out)
            writer.writerow(COLUMNS)
            for number, row in enumerate(rows):
                writer.writerow([row[c] for c in COLUMNS])
                if number == 40:
                    out.write('Purchase,"two\nlines",x\n')  # a record over two lines (invalid)...
                if number == 60:
                    out.write("a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q\n")  # ...one with too many fields
        with path.open("ab") as raw:
            raw.write(b"Purchase,\xff\xfe,not utf-8\n")  # ...and one that is not UTF-8
        return path
    records = [{k: v for k, v in row.items() if v != ""} for row in rows]
    if fmt == ".ndjson":
        lines = [json.dumps(r, ensure_ascii=False) for r in records]
        lines.insert(30, "{not json")
        lines.insert(50, "[1, 2]")
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    elif fmt == ".json":
        path.write_text(json.dumps({"data": records}, ensure_ascii=False, indent=1), encoding="utf-8")
    else:
        path.write_text(yaml.safe_dump({"events": records}, allow_unicode=True), encoding="utf-8")
    return path


def _env(home: Path, workers: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPI_")}
    env.update(
        CAPI_HOME=str(home), CAPI_DATASET_ID=DATASET, CAPI_ACCESS_TOKEN="token-not-used",
        CAPI_WHATSAPP_BUSINESS_ACCOUNT_ID=WABA, CAPI_WORKERS=str(workers), COLUMNS="200", NO_COLOR="1",
    )
    return env


def _capi(home: Path, workers: int, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "capi_cli", *args], env=_env(home, workers),
                          capture_output=True, text=True, timeout=120)


def _prepare_ledger(home: Path) -> None:
    """Referrals for the join, and a few events already sent (skipped) or rejected."""
    home.mkdir(parents=True, exist_ok=True)
    with Ledger.open(home / "ledger.sqlite3") as ledger:
        stamp = datetime.fromtimestamp(NOW - 2 * 24 * HOUR, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        ledger.referrals.store_referrals([{
            "channel": "whatsapp", "ctwa_clid": "CLID-STORED", "ad_id": "ad-1", "source_type": "ad",
            "source_url": None, "ref": None, "user_id": "905321234567", "wa_id": "905321234567", "bsuid": None,
            "business_id": WABA, "phone_number_id": None, "message_id": "wamid.1", "timestamp": stamp,
            "kind": "message", "origin": "t:1",
        }])
        from capi_cli.events.build import derive_event_id

        sent = [derive_event_id("Purchase", "order", f"o-{i}") for i in (0, 10, 11, 12, 100)]
        pending = [PendingEvent("Purchase", event_id, NOW - HOUR, "x.csv", 2, None) for event_id in sent]
        ledger.begin_batch(DATASET, "b-1", pending)
        ledger.settle(DATASET, "b-1", [("Purchase", e) for e in sent], LedgerState.SENT)


@pytest.mark.parametrize("suffix", [".csv", ".ndjson", ".json", ".yaml"])
@pytest.mark.parametrize("extra", [[], ["--limit", "150", "--since", "2d"]], ids=["all", "limit-since"])
def test_send_dry_run_output_is_identical_with_and_without_workers(
    tmp_path: Path, suffix: str, extra: list[str]
) -> None:
    source = _write(tmp_path / f"events{suffix}", _rows(230, timeless=False))
    results = {}
    for workers in (0, 2):
        home = tmp_path / f"home-{workers}"
        _prepare_ledger(home)
        out = tmp_path / f"out-{workers}.ndjson"
        done = _capi(home, workers, "send", "--file", str(source), "--dry-run", "-o", str(out), "--format", "json",
                     "--no-progress", *extra)
        assert done.returncode in (0, 1), done.stderr
        results[workers] = (out.read_bytes(), json.loads(done.stdout), done.stderr, done.returncode)
    single, parallel = results[0], results[2]
    assert single[0] == parallel[0]
    assert single[1] == parallel[1]
    assert single[2] == parallel[2]
    assert single[3] == parallel[3]
    summary = single[1]
    assert summary["sent"] > 50 and summary["invalid"] > 10 and summary["attributed"] > 0
    assert summary["skipped"] >= (1 if extra else 4)
    assert "appears earlier in the input" in single[2]


def test_validate_report_is_identical_with_and_without_workers(tmp_path: Path) -> None:
    source = _write(tmp_path / "events.csv", _rows(120, timeless=False))
    reports = []
    for workers in (0, 1):
        home = tmp_path / f"home-{workers}"
        _prepare_ledger(home)
        for strict in ((), ("--strict-fields",)):
            done = _capi(home, workers, "validate", str(source), "--format", "json", *strict)
            assert done.returncode == 1, done.stderr
            reports.append(json.loads(done.stdout))
    assert reports[0] == reports[2] and reports[1] == reports[3]
    assert "dropped_field" in {p["code"] for p in reports[0]["problems"]}  # bad emails cost the field only
    assert {p["code"] for p in reports[1]["problems"]} >= {"duplicate_event_id", "malformed_record", "invalid_email",
                                                           "unknown_column", "event_too_old"}


def _items(paths: list[Path], home: Path, **options: Any) -> list[tuple[Any, ...]]:
    from capi_cli.config import load_settings
    from capi_cli.delivery.engine import ledger_skip

    settings = load_settings(env=_env(home, 0))
    with Ledger.open(settings.ledger) as ledger:
        skip = ledger_skip(ledger, DATASET)
        found = []
        for item in iter_events(paths, settings, BuildOptions(now=NOW, **options), referrals=ledger.referrals, skip=skip):
            if isinstance(item, BuiltEvent):
                found.append(("event", item.event_name, item.event_id, item.event_time, item.line, item.record,
                              item.attributed, item.payload_json, item.payload_hash, item.payload))
            else:
                assert isinstance(item, Problem)
                found.append(("problem", *item.to_dict().items()))
        found.append(("skipped", skip.skipped))
    return found


@pytest.mark.parametrize("block", [None, 700], ids=["one-block", "small-blocks"])
@pytest.mark.parametrize("options", [{}, {"limit": 37}, {"until": NOW - 2 * HOUR}], ids=["all", "limit", "until"])
def test_iter_events_is_identical_with_and_without_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, options: dict[str, Any], block: int | None
) -> None:
    """With small blocks most of the CSV file goes to the workers as PlainBlocks, parsed there, with
    quoted and broken records read in this process between them."""
    if block is not None:
        from capi_cli.events import readers

        monkeypatch.setattr(readers, "_BLOCK", block)
    paths = [_write(tmp_path / "a.csv", _rows(180)), _write(tmp_path / "b.ndjson", _rows(90))]
    home = tmp_path / "home"
    _prepare_ledger(home)
    monkeypatch.setenv("CAPI_WORKERS", "0")
    single = _items(paths, home, **options)
    from capi_cli.events import parallel as module

    pools: list[int] = []

    plain: list[int] = []

    class CountedPool(module.WorkerPool):
        def __init__(self, count: int, config: dict[str, Any]) -> None:
            pools.append(count)
            super().__init__(count, config)

        def submit_plain(self, block: Any) -> int:
            plain.append(block.start)
            return super().submit_plain(block)

    monkeypatch.setattr(module, "WorkerPool", CountedPool)
    monkeypatch.setenv("CAPI_WORKERS", "2")
    parallel = _items(paths, home, **options)
    assert pools == [2]
    assert len(plain) > 5 if block else not plain
    assert single == parallel
    assert any(item[0] == "event" for item in single)


# -- the workers die with the command ------------------------------------------------------------


def _children(pid: int) -> list[int]:
    found = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as children:
            found += [int(child) for child in children.read().split()]
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _start_big_dry_run(tmp_path: Path) -> tuple[subprocess.Popen[str], list[int]]:
    source = tmp_path / "big.csv"
    with source.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(["event_name", "event_time", "order_id", "ctwa_clid", "email", "value", "currency"])
        for i in range(400_000):
            writer.writerow(["Purchase", NOW - HOUR, f"o-{i}", f"ARAkClid{i}", f"b{i}@example.com", "1.5", "USD"])
    proc = subprocess.Popen(
        [sys.executable, "-m", "capi_cli", "send", "--file", str(source), "--dry-run", "-o", os.devnull,
         "--no-progress", "-q"],
        env=_env(tmp_path / "home", 2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        workers = [pid for pid in _children(proc.pid) if _alive(pid)]
        if len(workers) == 2:
            time.sleep(0.5)  # well into the file
            return proc, workers
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the worker processes did not start")


def _wait_gone(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        left = [pid for pid in pids if _alive(pid)]
        if not left:
            return []
        time.sleep(0.05)
    return [pid for pid in pids if _alive(pid)]


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs /proc")
def test_workers_exit_when_the_parent_is_killed(tmp_path: Path) -> None:
    proc, workers = _start_big_dry_run(tmp_path)
    # Forked by the entry point, they hold neither the command's stdin nor its stdout (a reader of
    # the command's output sees its end when the command ends), only their own two pipes.
    for pid in workers:
        assert os.readlink(f"/proc/{pid}/fd/0") == os.devnull and os.readlink(f"/proc/{pid}/fd/1") == os.devnull
        pipes = [fd for fd in os.listdir(f"/proc/{pid}/fd") if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("pipe:")]
        assert len(pipes) == 3, pipes  # its input, its output, and stderr (the command's, a pipe here)
    proc.kill()
    proc.wait()
    left = _wait_gone(workers, 10)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, "worker processes outlived a SIGKILLed parent"


@pytest.mark.skipif(not os.path.exists("/proc/self/task"), reason="needs /proc")
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_sigterm_and_ctrl_c_exit_130_quickly_and_stop_the_workers(tmp_path: Path, signum: int) -> None:
    proc, workers = _start_big_dry_run(tmp_path)
    started = time.monotonic()
    proc.send_signal(signum)
    try:
        proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert time.monotonic() - started < 5
    assert not _wait_gone(workers, 5)


# -- the request body is built from the JSON text the pipeline made ---------------------------------


@pytest.mark.parametrize("extras", [{}, {"test_event_code": "TEST1", "partner_agent": "capi-cli", "app_secret": "s"}],
                         ids=["plain", "extras"])
def test_send_events_json_posts_the_same_body_as_send_events(
    monkeypatch: pytest.MonkeyPatch, extras: dict[str, str]
) -> None:
    from capi_cli.delivery.graph import GraphClient, Outcome, OutcomeKind
    from capi_cli.events.jsontext import payload_json

    posted: list[bytes] = []

    def capture(self: GraphClient, dataset_id: str, content: bytes, count: int) -> Outcome:
        posted.append(content)
        return Outcome(OutcomeKind.SUCCESS, events_received=count)

    monkeypatch.setattr(GraphClient, "_post_events", capture)
    payloads = [{"event_name": "Purchase", "event_time": NOW, "event_id": f"e{i}", "action_source": "business_messaging",
                 "user_data": {"em": ["ab" * 32], "fn": "Zoë \"Q\" \u2028"}, "custom_data": {"value": 1.5 + i}}
                for i in range(3)]
    with GraphClient("token", graph_url="http://127.0.0.1:9", **extras) as client:
        assert client.send_events(DATASET, payloads).ok
        assert client.send_events_json(DATASET, [payload_json(p) for p in payloads]).ok
    assert posted[0] == posted[1]
    assert json.loads(posted[0])["data"] == payloads


# -- workers started early -------------------------------------------------------------------------


def _spawn_recorder(monkeypatch: pytest.MonkeyPatch) -> list[subprocess.Popen[bytes]]:
    from capi_cli.events import parallel as module

    spawned: list[subprocess.Popen[bytes]] = []
    real_spawn = module._spawn

    def spawn() -> subprocess.Popen[bytes]:
        spawned.append(real_spawn())
        return spawned[-1]

    monkeypatch.setattr(module, "_spawn", spawn)
    return spawned


def test_send_starts_its_workers_before_reading_and_the_build_uses_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`send` and `validate` start the workers first thing (their start-up overlaps the command's),
    the build takes those same processes, and none is left running afterwards."""
    from typer.testing import CliRunner

    from capi_cli.cli.app import app
    from capi_cli.events import parallel as module

    spawned = _spawn_recorder(monkeypatch)
    taken: list[int] = []
    real_init = module.WorkerPool.__init__

    def init(self: Any, count: int, config: dict[str, Any]) -> None:
        taken.append(len(module._warm))  # how many were already running when the build began
        real_init(self, count, config)

    monkeypatch.setattr(module.WorkerPool, "__init__", init)
    source = _write(tmp_path / "a.csv", _rows(60))
    env = _env(tmp_path / "home", 2)
    runner = CliRunner()
    for args in (["send", "--file", str(source), "--dry-run", "-o", os.devnull, "--no-progress"],
                 ["validate", str(source)]):
        result = runner.invoke(app, args, env=env)
        assert result.exit_code in (0, 1), result.output
    assert taken == [2, 2] and len(spawned) == 4  # two per command, all started early and used
    assert module._warm == [] and all(proc.poll() is not None for proc in spawned)


def test_workers_started_early_are_stopped_when_the_command_fails_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from capi_cli.cli.app import app
    from capi_cli.events import parallel as module

    spawned = _spawn_recorder(monkeypatch)
    source = _write(tmp_path / "a.csv", _rows(10))
    result = CliRunner().invoke(app, ["send", "--file", str(source), "--map", str(tmp_path / "missing.yaml"),
                                      "--dry-run", "--no-progress"], env=_env(tmp_path / "home", 2))
    assert result.exit_code == 2, result.output
    assert len(spawned) == 2
    assert module._warm == [] and all(proc.poll() is not None for proc in spawned)


def _forked_child(seconds: float, code: int) -> Any:
    """A _Forked handle on a child that sleeps, then exits with `code` (no worker loop in it)."""
    from capi_cli.events.parallel import _Forked

    pid = os.fork()
    if pid == 0:
        time.sleep(seconds)
        os._exit(code)
    child = _Forked.__new__(_Forked)
    child.pid, child.returncode, child.args = pid, None, "a test child"
    return child


def test_waiting_for_a_forked_worker_sees_its_exit_and_keeps_its_timeout() -> None:
    """The command waits for a forked worker's exit on a pidfd (woken at the exit), then polls: its
    exit code comes back, and a timeout bounds the whole wait, not each way of waiting."""
    quick = _forked_child(0.05, 3)
    started = time.monotonic()
    assert quick.wait(timeout=5) == 3
    assert time.monotonic() - started < 0.5
    slow = _forked_child(3, 0)
    try:
        started = time.monotonic()
        with pytest.raises(subprocess.TimeoutExpired):
            slow.wait(timeout=0.3)
        assert 0.29 <= time.monotonic() - started < 0.55
    finally:
        slow.kill()
        assert slow.wait(timeout=5) == -signal.SIGKILL
