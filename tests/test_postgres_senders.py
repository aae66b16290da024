"""Several hosts sending at once through one PostgreSQL ledger (SPEC §8, issue 15): N `capi send`
processes, each with its own CAPI_HOME (a host), on overlapping input files, against the Graph
stand-in: every event reaches Meta exactly once; a sender killed at a random moment leaves no
event twice and none lost, and only its own events become `uncertain`."""

from __future__ import annotations

import csv
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from capi_cli.sandbox.server import GraphStandin
from support.sending import DATASET, TOKEN, WABA

EVENT_TIME = int(time.time()) - 600


def write_slice(path: Path, ids: list[str], seed: int) -> None:
    """The events `ids` in an order of their own: hosts meet the overlap in different orders."""
    rows = list(ids)
    random.Random(seed).shuffle(rows)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["event_name", "event_id", "event_time", "ctwa_clid", "value", "currency"])
        for event_id in rows:
            writer.writerow(["Purchase", event_id, EVENT_TIME, f"ARAk{event_id}", "12.50", "EUR"])


def overlapping_files(tmp: Path, hosts: int, per_host: int = 200) -> tuple[list[Path], list[str]]:
    """Host k sends ids [k*half, k*half + per_host): each file shares half with the next."""
    half = per_host // 2
    ids = [f"ord-{i:05d}" for i in range(half * (hosts + 1))]
    files = []
    for k in range(hosts):
        path = tmp / f"host{k}.csv"
        write_slice(path, ids[k * half : k * half + per_host], seed=k)
        files.append(path)
    return files, ids


def host_env(home: Path, graph_url: str, ledger: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAPI_", "PG"))}
    env.update(CAPI_HOME=str(home), CAPI_LEDGER=ledger, CAPI_DATASET_ID=DATASET, CAPI_ACCESS_TOKEN=TOKEN,
               CAPI_GRAPH_URL=graph_url, CAPI_WHATSAPP_BUSINESS_ACCOUNT_ID=WABA, COLUMNS="200", NO_COLOR="1")
    return env


def spawn(home: Path, graph_url: str, ledger: str, files: list[Path], *extra: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "capi_cli", "send", "--batch-size", "20", "--concurrency", "2",
            "--no-progress", "--format", "json", *extra]
    for path in files:
        argv += ["--file", str(path)]
    return subprocess.Popen(argv, env=host_env(home, graph_url, ledger), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def states(ledger: str) -> dict[str, tuple[str, str | None]]:
    import psycopg

    with psycopg.connect(ledger) as conn:
        return {event_id: (state, run_id) for event_id, state, run_id in
                conn.execute("SELECT event_id, state, run_id FROM events")}


def finish(proc: subprocess.Popen[str], timeout: float = 180) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    assert "Traceback" not in err, err
    return proc.returncode, out, err


@pytest.mark.parametrize("hosts", [2, 4, 8])
def test_senders_on_several_hosts_send_every_event_exactly_once(tmp_path: Path, pg_url: str, hosts: int) -> None:
    files, ids = overlapping_files(tmp_path, hosts)
    with GraphStandin(token=TOKEN, datasets={DATASET}, latency=0.05) as graph:
        procs = [spawn(tmp_path / f"home{k}", graph.url, pg_url, [path]) for k, path in enumerate(files)]
        results = [finish(proc) for proc in procs]
        assert [code for code, _, _ in results] == [0] * hosts, [err for _, _, err in results]
        assert graph.duplicates() == {}
        assert {event_id for _, event_id in graph.received} == set(ids)
        summaries = [json.loads(out) for _, out, _ in results]
        # Every event was sent by exactly one host; the others skipped it (sent or claimed).
        assert sum(s["sent"] for s in summaries) == len(ids)
        assert all(s["sent"] + s["skipped"] == s["read"] for s in summaries), summaries
        assert {state for state, _ in states(pg_url).values()} == {"sent"}
        if hosts >= 4:
            assert sum(1 for s in summaries if s["sent"]) >= 2  # the work was shared, not serialised


def test_killed_sender_loses_nothing_and_only_its_events_become_uncertain(tmp_path: Path, pg_url: str) -> None:
    from capi_cli.ledger import open_ledger

    hosts = 4
    files, ids = overlapping_files(tmp_path, hosts, per_host=400)
    rng = random.Random()
    with GraphStandin(token=TOKEN, datasets={DATASET}, latency=0.15) as graph, open_ledger(pg_url) as ledger:
        procs = [spawn(tmp_path / f"home{k}", graph.url, pg_url, [path]) for k, path in enumerate(files)]
        victim = procs[rng.randrange(hosts)]
        deadline = time.monotonic() + 60
        runs: dict[int, str] = {}
        while victim.pid not in runs:  # registered (a loaded machine starts processes slowly)
            assert time.monotonic() < deadline and victim.poll() is None
            runs = {run["pid"]: run["run_id"] for run in ledger.live_runs()}
            time.sleep(0.02)
        target = graph.posts + rng.randint(1, 10)
        while graph.posts < target and time.monotonic() < deadline and victim.poll() is None:
            time.sleep(0.005)
        runs = {run["pid"]: run["run_id"] for run in ledger.live_runs()}
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        killed_at = time.monotonic()
        while runs[victim.pid] in {run["run_id"] for run in ledger.live_runs()}:
            assert time.monotonic() - killed_at < 10, "a killed run must be recognised as gone within 10 s"
            time.sleep(0.05)
        # Another host re-runs every file while the survivors are still sending.
        rerun = spawn(tmp_path / "other-host", graph.url, pg_url, files)
        survivors = [finish(proc) for proc in procs if proc is not victim]
        code, out, err = finish(rerun)
        # Exit 4 once the killed run's events are `uncertain` (SPEC: they keep cron alerting).
        assert all(c in (0, 4) for c, _, _ in survivors), [e for _, _, e in survivors]
        assert code in (0, 4), err
        # A last run after everyone ended settles nothing twice.
        final = finish(spawn(tmp_path / "last-host", graph.url, pg_url, files))
        assert final[0] in (0, 4), final[2]

        assert graph.duplicates() == {}, "no event received twice"
        received = {event_id for _, event_id in graph.received}
        ledger_states = states(pg_url)
        lost = [i for i in ids if i not in received and ledger_states.get(i, ("?",))[0] != "uncertain"]
        assert lost == [], "every event received by Meta or listed uncertain"
        uncertain_runs = {run_id for state, run_id in ledger_states.values() if state == "uncertain"}
        assert uncertain_runs <= {runs[victim.pid]}, "only the killed run's events may become uncertain"
        assert not any(state == "in_flight" for state, _ in ledger_states.values())
        for event_id, (state, _) in ledger_states.items():
            if state == "sent":
                assert event_id in received


def test_hosts_split_one_backfill_by_shard(tmp_path: Path, pg_url: str) -> None:
    """`--shard K/N`: each host builds and sends only its share of one file; together, all of it."""
    files, ids = overlapping_files(tmp_path, 1, per_host=400)
    with GraphStandin(token=TOKEN, datasets={DATASET}, latency=0.02) as graph:
        procs = [spawn(tmp_path / f"home{k}", graph.url, pg_url, files, "--shard", f"{k}/4") for k in range(1, 5)]
        results = [finish(proc) for proc in procs]
        assert [code for code, _, _ in results] == [0] * 4, [err for _, _, err in results]
        summaries = [json.loads(out) for _, out, _ in results]
        assert graph.duplicates() == {} and {event_id for _, event_id in graph.received} == set(ids)
        assert sum(s["sent"] for s in summaries) == len(ids)
        assert all(0 < s["sent"] < len(ids) // 2 for s in summaries), summaries  # each about a quarter
        assert all(s["sent"] + s["skipped"] == len(ids) for s in summaries)
        # A host that re-runs the whole file afterwards sends nothing again.
        code, out, err = finish(spawn(tmp_path / "home9", graph.url, pg_url, files))
        assert code == 0 and json.loads(out)["sent"] == 0, err


def test_bad_shard_is_a_usage_error(tmp_path: Path) -> None:
    files, _ = overlapping_files(tmp_path, 1, per_host=10)
    for bad in ("0/4", "5/4", "two", "1/0"):
        code, _, err = finish(spawn(tmp_path / "home", "http://127.0.0.1:9", str(tmp_path / "l.sqlite3"), files,
                                    "--shard", bad))
        assert code == 2 and "--shard" in err, err


def test_events_a_live_run_holds_are_never_sent_nor_forgotten_nor_recovered(tmp_path: Path, pg_url: str) -> None:
    """Another host's run holds the first 20 events in flight (its request is out): a send here,
    even with --resend-uncertain, leaves them to it; `ledger forget --all` and this run's recovery
    do not touch them. Once that run is gone, the next run turns them uncertain."""
    from capi_cli.ledger import PendingEvent, open_ledger

    files, ids = overlapping_files(tmp_path, 1, per_host=60)
    holder = open_ledger(pg_url)
    with GraphStandin(token=TOKEN, datasets={DATASET}, latency=0.01) as graph:
        with holder.sender():
            held = [PendingEvent("Purchase", event_id, EVENT_TIME) for event_id in ids[:20]]
            assert len(holder.begin_batch(DATASET, "other-host-000001", held)) == 20
            code, out, err = finish(spawn(tmp_path / "home", graph.url, pg_url, files, "--resend-uncertain"))
            assert code == 0, err
            summary = json.loads(out)
            assert (summary["sent"], summary["skipped"], summary["uncertain"]) == (40, 20, 0)
            assert not {event_id for _, event_id in graph.received} & set(ids[:20])
            forget = subprocess.run(
                [sys.executable, "-m", "capi_cli", "ledger", "forget", "--all", "--yes", "--format", "json"],
                env=host_env(tmp_path / "home", graph.url, pg_url), capture_output=True, text=True, timeout=60,
            )
            assert forget.returncode == 0 and json.loads(forget.stdout) == {"forgotten": 40}, forget.stderr
            assert {i for i, (state, _) in states(pg_url).items() if state == "in_flight"} == set(ids[:20])
        holder.close()  # the holding run ended without settling its batch (its answer never came)
        code, out, err = finish(spawn(tmp_path / "home", graph.url, pg_url, files))
        assert code == 4 and "20 events left in flight" in err, err
        assert {i for i, (state, _) in states(pg_url).items() if state == "uncertain"} == set(ids[:20])
