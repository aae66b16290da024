"""bench/run.py (SPEC §9) runs end to end: every measurement, the machine, and one table.

Tiny sizes: this checks that the benchmark works, not the figures (those are in
docs/performance-figures.md; CI runs `bench/run.py --quick`)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_runs_every_measurement_and_prints_one_table(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--rows", "2000", "--events", "1500", "--webhook-mb", "1",
         "--referrals", "500", "--repeat", "1", "--report-events", "2000"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert out.startswith("machine: ") and "cores, Python 3." in out.splitlines()[0]
    for name in ("dry run, 2,000 rows", "peak RSS, 2,000 rows", "peak RSS, 200 -> 2,000 rows", "send 1,500 events",
                 "re-run, all 1,500 sent", "extract-referral", "extract-referral --store",
                 "join by phone, 2,000 rows, 500 referrals", "`capi --version` startup",
                 "`capi report`, 2,000 events, 400 referrals"):
        assert name in out, out
    table = [line for line in out.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 10
    assert all(line.rstrip().endswith(("| ok     |", "| MISSED |", "|        |")) for line in table[2:]), table
    assert "targets met" in out


def test_bench_only_runs_the_measurement_named(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--only", "startup", "--repeat", "1"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    table = [line for line in done.stdout.splitlines() if line.startswith("|")]
    assert len(table) == 3 and "startup" in table[2]


def test_bench_never_prints_a_database_password(tmp_path: Path) -> None:
    # CI runs `bench/run.py --quick --postgres URL`: the command line it echoes must mask the URL.
    url = "postgresql://capi:Bench-Secret-77@127.0.0.1:9/capi"
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--only", "startup", "--repeat", "1", "--postgres", url],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Bench-Secret-77" not in done.stdout + done.stderr
    assert "postgresql://capi:" in done.stdout  # the URL is shown, masked
