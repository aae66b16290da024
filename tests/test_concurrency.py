"""Several `capi send` on one ledger (issue 6, SPEC §8): exactly one sends, the others exit 5 at
once; the lock of a killed sender does not block the next run. Real processes, a fresh ledger
(so its creation races too), the Graph stand-in on 127.0.0.1."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from capi_cli.sandbox.server import GraphStandin
from support.sending import DATASET, TOKEN, check_exactly_once, ledger_states, send_env, write_events_csv


def spawn(home: Path, url: str, csv_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "capi_cli", "send", "--file", str(csv_path), "--batch-size", "10",
         "--concurrency", "1", "--no-progress"],
        env=send_env(home, url), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


@pytest.mark.parametrize("senders", [2, 4])
def test_only_one_of_several_senders_sends(tmp_path: Path, senders: int) -> None:
    home = tmp_path / "home"
    ids = write_events_csv(tmp_path / "orders.csv", 100)
    with GraphStandin(token=TOKEN, datasets={DATASET}, latency=0.2) as graph:
        started = time.monotonic()
        procs = [spawn(home, graph.url, tmp_path / "orders.csv") for _ in range(senders)]
        ended: dict[int, float] = {}
        errors: dict[int, str] = {}
        while len(ended) < senders:
            for i, proc in enumerate(procs):
                if i not in ended and proc.poll() is not None:
                    ended[i] = time.monotonic() - started
                    errors[i] = proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() - started < 120
            time.sleep(0.01)
        codes = sorted(proc.returncode for proc in procs)
        assert codes == [0] + [5] * (senders - 1), (codes, errors)
        winner = next(i for i, proc in enumerate(procs) if proc.returncode == 0)
        for i in range(senders):
            if i != winner:
                assert "another capi send" in errors[i] and "Traceback" not in errors[i], errors[i]
                assert ended[i] < ended[winner] - 1.0, f"exit 5 must come at once: {ended}"
        assert graph.posts == 10 and len(graph.received) == 100
        check_exactly_once(graph, home, ids)
        assert set(ledger_states(home).values()) == {"sent"}


def test_lock_left_by_a_killed_sender_does_not_block_the_next_run(tmp_path: Path) -> None:
    home = tmp_path / "home"
    ids = write_events_csv(tmp_path / "orders.csv", 100)
    lock = home / "ledger.sqlite3.lock"
    with GraphStandin(token=TOKEN, datasets={DATASET}, latency=0.1) as graph:
        holder = spawn(home, graph.url, tmp_path / "orders.csv")
        deadline = time.monotonic() + 30
        while graph.posts < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert lock.read_text().strip() == str(holder.pid)
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=10)
        time.sleep(0.15)
        assert lock.exists()  # the file stays; the kernel dropped the flock with the process
        # Another command in between checkpoints the dead run's -wal into the main file and
        # removes it: the next send must not take the ledger for a copy made without its -wal.
        stats = subprocess.run([sys.executable, "-m", "capi_cli", "ledger", "stats"], env=send_env(home, graph.url),
                               capture_output=True, text=True, timeout=30)
        assert stats.returncode == 0, stats.stderr
        assert not Path(f"{home / 'ledger.sqlite3'}-wal").exists()
        nxt = spawn(home, graph.url, tmp_path / "orders.csv")
        _, err = nxt.communicate(timeout=60)
        assert nxt.returncode in (0, 4), err
        assert "another capi send" not in err
        check_exactly_once(graph, home, ids)
        states = ledger_states(home)
        assert all(states[i] in ("sent", "uncertain") for i in ids)
        assert (nxt.returncode == 4) == ("uncertain" in states.values())
