"""The PostgreSQL column of bench/run.py (SPEC §9): the send and re-run targets on a PostgreSQL
ledger, 4 hosts (processes, each its own CAPI_HOME) splitting one backfill with `send --shard K/4`,
and `capi report` over the report benchmark's ledger moved to PostgreSQL by `capi ledger copy`.

Each measurement gets a database of its own on the server given (`--postgres URL`: a scratch
server, the account able to CREATE DATABASE), dropped afterwards.
"""

from __future__ import annotations

import itertools
import math
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from run import Bench

HOSTS = 4
_numbers = itertools.count()


def _with_db(url: str, name: str) -> str:
    head, _, query = url.partition("?")
    scheme, _, rest = head.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}/{name}" + (f"?{query}" if query else "")


@contextmanager
def fresh_database(url: str) -> Iterator[str]:
    import psycopg

    name = f"capi_bench_{os.getpid()}_{next(_numbers)}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield _with_db(url, name)
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def measure(bench: Bench, url: str, backfill: int, want_send: bool, want_rerun: bool, want_split: bool) -> None:
    from run import LATENCY, Row, capi, median_of, paired, run

    path = bench.file(bench.events)
    dry = bench.dry_run(bench.events)
    with bench.standin() as graph_url:
        env = {**bench.env, "CAPI_HOME": str(bench.tmp / "pg-home"), "CAPI_GRAPH_URL": graph_url}
        command = capi("send", "--file", str(path), "--no-progress", "-q")
        if want_send or want_rerun:
            sends = []
            for _ in range(bench.repeat if want_send else 1):
                with fresh_database(url) as ledger:
                    sends.append(run(command, {**env, "CAPI_LEDGER": ledger}))
            if want_send:
                sent = median_of(sends)
                ideal = math.ceil(bench.events / 1000) / 4 * LATENCY + dry.seconds
                ratio = sent.seconds / ideal
                bench.add(Row(f"PostgreSQL: send {bench.events:,} events, 300 ms latency (s)", f"{sent.seconds:.2f}",
                              f"ideal {ideal:.2f}", ratio, "<= 1.3x", ratio <= 1.3))
            if want_rerun:
                with fresh_database(url) as ledger:
                    on_pg = {**env, "CAPI_LEDGER": ledger}
                    run(command, on_pg)
                    # A re-run comes the next night, when autovacuum has long cleared the send's
                    # settled rows; here it would start at a random moment of the measured pairs.
                    import psycopg

                    with psycopg.connect(ledger, autocommit=True) as conn:
                        conn.execute("VACUUM ANALYZE events")
                    dry_again, again, ratio = paired(lambda: bench.dry_once(bench.events),
                                                     lambda: run(command, on_pg), bench.repeat)
                bench.add(Row(f"PostgreSQL: re-run, all {bench.events:,} sent (s)", f"{again.seconds:.2f}",
                              f"dry run {dry_again.seconds:.2f}", ratio, "< 0.5x", ratio < 0.5))
        if want_split:
            big = bench.file(backfill)
            backfill_command = capi("send", "--file", str(big), "--no-progress", "-q")
            cpu = _CpuTimes(url, bench.standin_pid)
            with fresh_database(url) as ledger:
                one = run(backfill_command, {**env, "CAPI_LEDGER": ledger}).seconds
            one_cpu = cpu.since_last()
            with fresh_database(url) as ledger:
                several = _hosts_at_once(bench, backfill_command, {**env, "CAPI_LEDGER": ledger})
            several_cpu = cpu.since_last()
            ratio = several / one
            bench.add(Row(f"PostgreSQL: {HOSTS} hosts split a {backfill:,}-event backfill (s)", f"{several:.2f}",
                          f"1 host {one:.2f}", ratio, "<= 0.5x", ratio <= 0.5))
            # Where the machine's CPU went: the hosts here share its cores with the server and the
            # stand-in, so the split cannot beat (CPU of all three) / cores.
            bench.add(Row(f"  CPU s of the split: capi / PostgreSQL / stand-in ({os.cpu_count()} cores)",
                          several_cpu, f"1 host {one_cpu}", None, "", None))
        report(bench, url, env)


def report(bench: Bench, url: str, env: dict[str, str]) -> None:
    """`capi report` on PostgreSQL over the report benchmark's ledger (bench/bench_report.py: ten
    times the events sent, a fifth of that in referrals), copied there as a user moves up; its
    JSON must be the file's, and it has the SQLite target (< 2 s)."""
    from bench_report import generate
    from run import REPORT_TARGET_SECONDS, BenchError, Row, capi, median_run, run

    events = bench.events * 10
    home = bench.tmp / "pg-report-home"
    home.mkdir(exist_ok=True)
    generate(home / "ledger.sqlite3", events, events // 5)
    on_file = {**env, "CAPI_HOME": str(home), "CAPI_LEDGER": str(home / "ledger.sqlite3"),
               "CAPI_DATASET_ID": "1234567890"}
    # One fixed period for both reports: `--since 28d` is read at each run's own start, and an
    # event that crossed its edge in the seconds between the two runs made them differ.
    until = int(time.time())
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(until - 28 * 86400))
    command = capi("report", "--format", "json", "--since", since,
                   "--until", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(until)))
    with fresh_database(url) as ledger:
        run(capi("ledger", "copy", "--to", ledger, "-q"), on_file)
        import psycopg

        with psycopg.connect(ledger, autocommit=True) as conn:
            conn.execute("VACUUM ANALYZE")  # as autovacuum leaves a table loaded long before a report
        on_pg = {**on_file, "CAPI_LEDGER": ledger}
        on_postgres, on_sqlite = _report_json(run(command, on_pg).output), _report_json(run(command, on_file).output)
        if on_postgres != on_sqlite:
            raise BenchError("capi report on PostgreSQL differs from the report on the SQLite file: "
                             + "; ".join(_differences(on_postgres, on_sqlite)[:8]))
        result = median_run(command, on_pg, bench.repeat)
    bench.add(Row(f"PostgreSQL: `capi report`, {events:,} events, {events // 5:,} referrals (s)",
                  f"{result.seconds:.2f}", f"{REPORT_TARGET_SECONDS:.0f} s", result.seconds / REPORT_TARGET_SECONDS,
                  f"< {REPORT_TARGET_SECONDS:.0f} s", result.seconds < REPORT_TARGET_SECONDS))


def _differences(a: object, b: object, path: str = "") -> list[str]:
    """Where two JSON documents differ (path: PostgreSQL's value != the file's)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for key in sorted(set(a) | set(b)) for d in _differences(a.get(key), b.get(key), f"{path}.{key}")]
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b, strict=True)) for d in _differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"[:200]]


def _report_json(output: str) -> object:
    import json

    return json.loads(output)


class _CpuTimes:
    """CPU seconds used since the last call: capi's processes (the children this process waited
    for, their workers with them), the PostgreSQL server (when it runs on this machine and this
    role may read its data directory: its postmaster's own and its ended backends'), and the
    Graph stand-in."""

    def __init__(self, url: str, standin_pid: int | None) -> None:
        self._server_pid = _postmaster_pid(url)
        self._standin_pid = standin_pid
        self._last = self._now()

    def _now(self) -> tuple[float, float | None, float | None]:
        import resource

        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return (children.ru_utime + children.ru_stime, _process_cpu(self._server_pid, with_children=True),
                _process_cpu(self._standin_pid, with_children=False))

    def since_last(self) -> str:
        now, last = self._now(), self._last
        self._last = now
        return " / ".join("?" if b is None or a is None else f"{b - a:.1f}" for a, b in zip(last, now, strict=True))


def _postmaster_pid(url: str) -> int | None:
    import psycopg

    try:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute("SHOW data_directory").fetchone()
        if row is None:
            return None
        directory = str(row[0])
        with open(os.path.join(directory, "postmaster.pid"), encoding="ascii") as pid_file:
            return int(pid_file.readline())
    except (psycopg.Error, OSError, ValueError):
        return None  # a server elsewhere, or a role that may not read its settings


def _process_cpu(pid: int | None, *, with_children: bool) -> float | None:
    if pid is None:
        return None
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    ticks = int(fields[11]) + int(fields[12]) + (int(fields[13]) + int(fields[14]) if with_children else 0)
    return ticks / os.sysconf("SC_CLK_TCK")


def _hosts_at_once(bench: Bench, command: list[str], env: dict[str, str]) -> float:
    """Wall time of HOSTS sends of the same file started together, each its own CAPI_HOME and its
    `--shard K/HOSTS` (README, "Several hosts"); the claims keep it exactly-once either way."""
    from run import BenchError

    started = time.perf_counter()
    procs = [subprocess.Popen([*command, "--shard", f"{k + 1}/{HOSTS}"],
                              env={**env, "CAPI_HOME": str(bench.tmp / f"host{k}")},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for k in range(HOSTS)]
    errors = [proc.communicate()[1] for proc in procs]
    elapsed = time.perf_counter() - started
    failed = [(proc.returncode, err[-500:]) for proc, err in zip(procs, errors, strict=True) if proc.returncode]
    if failed:
        raise BenchError(f"a host's send failed: {failed}")
    return elapsed
