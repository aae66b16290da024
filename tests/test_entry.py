"""The `capi` entry point (capi_cli.cli.entry): --version without loading Typer, and the worker
processes of a large send or validate started before Typer loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from capi_cli import __version__
from capi_cli.cli.entry import _input_files


def test_version_is_answered_without_loading_typer() -> None:
    code = ("import sys; sys.argv = ['capi', '--version']; from capi_cli.cli.entry import main; main(); "
            "print('typer' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [f"capi {__version__}", "False"]


def test_the_files_of_a_send_or_validate_command_line(tmp_path: Path) -> None:
    events = tmp_path / "orders.csv"
    events.write_text("event_name\n")
    assert _input_files(["send", "--file", "a.csv", "-f", "b.csv", "--file=c.csv", "--dry-run"]) == \
        ["a.csv", "b.csv", "c.csv"]
    assert _input_files(["--profile", "x", "validate", str(events), "--format", "json", "missing.csv"]) == [str(events)]
    assert _input_files(["send", "--help"]) == []
    assert _input_files(["ledger", "stats"]) == []


def test_a_large_send_forks_its_workers_before_typer_loads(tmp_path: Path) -> None:
    source = tmp_path / "big.csv"
    with source.open("w") as out:
        out.write("event_name,event_time,order_id,ctwa_clid,whatsapp_business_account_id,value,currency\n")
        for i in range(2000):
            out.write(f"Purchase,1767484800,o-{i},ARAkClid{i},104996122399160,9.5,USD\n")
    code = (
        "import sys\n"
        "from capi_cli.events import parallel\n"
        "real = parallel.warm_up\n"
        "def warm_up(paths, **options):\n"
        "    real(paths, **options)\n"
        "    kinds = sorted({type(w).__name__ for w in parallel._warm})\n"
        "    print('warm', len(parallel._warm), kinds, 'typer loaded:', 'typer' in sys.modules, file=sys.stderr)\n"
        "parallel.warm_up = warm_up\n"
        f"sys.argv = ['capi', 'send', '--file', {str(source)!r}, '--dry-run', '-o', '/dev/null', '--no-progress']\n"
        "from capi_cli.cli.entry import main\n"
        "main()\n"
    )
    env = {"CAPI_WORKERS": "2", "CAPI_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    # forked from this process (the builder already imported), before Typer loads
    assert "warm 2 ['_Forked'] typer loaded: False" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_during_start_up_exits_130(tmp_path: Path) -> None:
    """Before a command installs its own handler, SIGTERM ends it at once with 130 (an interrupted
    run), not by the signal."""
    code = (
        "import os, signal, sys, time\n"
        "import capi_cli.cli.app as app\n"
        "def slow_start():\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(5)\n"
        "    print('not interrupted')\n"
        "app.main = slow_start\n"
        "sys.argv = ['capi', 'ledger', 'stats']\n"
        "from capi_cli.cli.entry import main\n"
        "main()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                            env={"CAPI_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 130, result
    assert "not interrupted" not in result.stdout and "Traceback" not in result.stderr


def test_a_run_that_sends_nothing_loads_neither_httpx_nor_phonenumbers() -> None:
    """httpx (and its TLS setup) waits for the first request, phonenumbers for the first phone: a
    re-run of sent events, or a parent whose workers build, pays for neither."""
    code = (
        "import sys\n"
        "import capi_cli.delivery.run, capi_cli.events.pipeline, capi_cli.cli.send\n"
        "from capi_cli.delivery.graph import GraphClient\n"
        "client = GraphClient('token-x')\n"
        "client.close()\n"
        "print(sorted(m for m in ('httpx', 'phonenumbers') if m in sys.modules))\n"
        "from capi_cli.events.normalize import normalize\n"
        "normalize('ph', '+14155552671')\n"
        "print('phonenumbers' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["[]", "True"]


def test_a_postgresql_ledger_without_its_driver_is_one_line_even_with_workers(tmp_path: Path) -> None:
    """CAPI_LEDGER names a PostgreSQL server but psycopg is not installed: the command, which
    imports the driver before it forks its workers, still ends with the one-line setup error
    (exit 3), not the import's traceback; the password is not shown."""
    import os

    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "psycopg.py").write_text("raise ImportError('no psycopg in this environment')\n")
    source = tmp_path / "orders.csv"
    source.write_text("event_name,event_time,order_id,ctwa_clid,whatsapp_business_account_id,value,currency\n"
                      + "".join(f"Purchase,1767484800,o-{i},ARAkClid{i},104996122399160,9.5,USD\n" for i in range(50)))
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join((str(stub), src)), "CAPI_HOME": str(tmp_path / "home"),
           "CAPI_WORKERS": "2", "CAPI_DATASET_ID": "1", "CAPI_ACCESS_TOKEN": "t",
           "CAPI_LEDGER": "postgresql://capi:Secret-pw@127.0.0.1:9/capi"}
    done = subprocess.run([sys.executable, "-m", "capi_cli", "send", "--file", str(source), "--no-progress"],
                          capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 3, done.stderr
    assert done.stderr.strip().splitlines() == [
        "capi: error: ledger: a PostgreSQL ledger needs the psycopg driver: pip install 'capi-cli[postgres]'"]
