"""What a first run meets: a directory, a spreadsheet, a 0-byte export, a header-only CSV, and the
progress line of a long run on a terminal."""

from __future__ import annotations

import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

from typer.testing import CliRunner

from capi_cli.cli.app import app
from support.sending import write_events_csv


def run(runner: CliRunner, *args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args))


def test_a_directory_is_named_a_directory(runner: CliRunner, tmp_path: Path) -> None:
    result = run(runner, "validate", str(tmp_path))
    assert result.exit_code == 2
    assert result.stderr.strip() == f"capi: error: {tmp_path}: is a directory; give the event files themselves"


def test_a_spreadsheet_gets_export_it_as_csv(runner: CliRunner, tmp_path: Path) -> None:
    for name in ("orders.xlsx", "orders.ods", "Orders.XLS"):
        book = tmp_path / name
        book.write_bytes(b"PK\x03\x04 not a csv")
        for args in (["validate", str(book)], ["send", "--file", str(book), "--dry-run"]):
            result = run(runner, *args)
            assert result.exit_code == 2, result.stderr
            assert "export it as CSV" in result.stderr and "Traceback" not in result.stderr


def test_a_zero_byte_export_is_a_data_problem(runner: CliRunner, tmp_path: Path) -> None:
    empty = tmp_path / "orders-2026-11-29.csv"
    empty.write_bytes(b"")
    checked = run(runner, "validate", str(empty), "--format", "json")
    assert checked.exit_code == 1
    report = json.loads(checked.stdout)
    assert [(p["code"], p["severity"]) for p in report["problems"]] == [("empty_input", "error")]
    assert "empty file" in report["problems"][0]["message"]
    dry = run(runner, "send", "--file", str(empty), "--dry-run")
    assert dry.exit_code == 1 and "empty file" in dry.stderr
    human = run(runner, "validate", str(empty))
    assert "no problems found" not in human.stdout and "empty_input" in human.stdout


def test_a_header_only_csv_is_zero_records_with_a_note(runner: CliRunner, tmp_path: Path) -> None:
    header = tmp_path / "orders.csv"
    header.write_text("event_name,wa_id,order_id,value,currency\n")
    checked = run(runner, "validate", str(header), "--format", "json")
    assert checked.exit_code == 0 and json.loads(checked.stdout)["records"] == 0
    assert "note: no records to check" in checked.stderr
    dry = run(runner, "send", "--file", str(header), "--dry-run")
    assert dry.exit_code == 0 and "note: no records to send" in dry.stderr
    quiet = run(runner, "-q", "send", "--file", str(header), "--dry-run")
    assert quiet.exit_code == 0 and quiet.stderr == ""


def terminal_output(args: list[str], env: dict[str, str], seconds: float = 120) -> str:
    """Run capi with stderr (and stdout) on a pseudo-terminal, as a person at a terminal sees it."""
    leader, follower = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "capi_cli", *args], stdin=subprocess.DEVNULL,
                               stdout=follower, stderr=follower, env=env)
    os.close(follower)
    chunks: list[bytes] = []
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.2)
            if ready:
                try:
                    data = os.read(leader, 65536)
                except OSError:
                    break
                if not data:
                    break
                chunks.append(data)
            elif process.poll() is not None:
                break
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        os.close(leader)
    return b"".join(chunks).decode("utf-8", "replace")


def test_dry_run_progress_says_would_send_with_a_total_and_eta(tmp_path: Path) -> None:
    orders = tmp_path / "orders.csv"
    write_events_csv(orders, 60_000)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPI_") and k != "NO_COLOR"}
    env.update(CAPI_HOME=str(tmp_path / "home"), COLUMNS="250", TERM="xterm", CAPI_WORKERS="0",
               CAPI_WHATSAPP_BUSINESS_ACCOUNT_ID="104996122399160")
    screen = terminal_output(["send", "--file", str(orders), "--dry-run", "-o", os.devnull], env)
    assert "would send" in screen, screen[-2000:]
    assert " of ~" in screen and "ETA " in screen, screen[-2000:]
    assert "  sent " not in screen.split("dry run:")[0]
