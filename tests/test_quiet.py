"""`-q` silences progress, summaries, notes and warnings on every command (SPEC §1): what is
left is errors and the result. Each command runs twice, without and with -q, as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from capi_cli.sandbox.server import GraphStandin
from support.sending import DATASET, TOKEN, send_env, write_events_csv

ROOT = Path(__file__).resolve().parents[1]
CAPI = [sys.executable, "-m", "capi_cli"]


@pytest.fixture
def world(tmp_path: Path):  # type: ignore[no-untyped-def]
    with GraphStandin(token=TOKEN, datasets={DATASET}) as graph:
        env = send_env(tmp_path / "home", graph.url)
        subprocess.run([sys.executable, str(ROOT / "examples" / "fresh_webhooks.py"),
                        str(ROOT / "examples" / "webhooks" / "ad-referrals.ndjson"), str(tmp_path / "dump.ndjson")],
                       check=True)
        write_events_csv(tmp_path / "orders.csv", 3)
        # An unknown column: a warning (stderr) from send, a reported problem (stdout) from validate.
        text = (tmp_path / "orders.csv").read_text().splitlines()
        (tmp_path / "noted.csv").write_text("\n".join([text[0] + ",note"] + [row + ",hi" for row in text[1:]]) + "\n")
        yield tmp_path, env


# Each command, and whether it prints anything on stderr without -q (so the -q run proves something).
COMMANDS: list[tuple[list[str], bool]] = [
    (["extract-referral", "dump.ndjson", "-o", "refs.ndjson"], True),
    (["validate", "orders.csv"], True),
    (["send", "--file", "noted.csv", "--dry-run", "-o", "dry.ndjson"], True),
    (["send", "--file", "noted.csv", "--no-progress"], True),
    (["send", "--file", "noted.csv", "--resend"], True),
    (["hash", "em", "Priya@Example.com"], False),
    (["ledger", "stats"], False),
    (["ledger", "list"], True),
    (["ledger", "export", "-o", "ledger.ndjson"], True),
    (["ledger", "forget", "--status", "rejected", "--yes"], True),
    (["ledger", "path"], False),
    (["referrals", "list"], True),
    (["referrals", "lookup", "919999999999"], True),
    (["config", "set", "currency", "INR"], True),
    (["config", "show"], True),
    (["config", "path"], False),
    (["config", "init", "--dataset-id", DATASET, "--waba-id", "104996122399160", "--yes"], True),
    (["doctor", "--offline"], False),
    (["dataset"], True),
    (["dataset", "--create"], True),
]


@pytest.mark.parametrize("args,noisy", COMMANDS, ids=[" ".join(c[0][:2]) for c in COMMANDS])
def test_quiet_leaves_only_errors_and_the_result(world, args: list[str], noisy: bool) -> None:  # type: ignore[no-untyped-def]
    tmp, env = world
    # Each command's world as a user would have it: referrals captured, one send done.
    for setup in (["extract-referral", "dump.ndjson", "-o", "setup.ndjson"], ["send", "--file", "orders.csv"]):
        subprocess.run([*CAPI, "-q", *setup], env=env, cwd=tmp, capture_output=True, timeout=120)
    loud = subprocess.run([*CAPI, *args], env=env, cwd=tmp, capture_output=True, text=True, timeout=120)
    quiet = subprocess.run([*CAPI, *args, "-q"], env=env, cwd=tmp, capture_output=True, text=True, timeout=120)
    assert quiet.returncode == loud.returncode, quiet.stderr
    assert quiet.stderr == "", f"-q printed on stderr:\n{quiet.stderr}"
    if noisy:
        assert loud.stderr != "", "without -q the command says nothing: the -q run proves nothing"
    assert quiet.stdout.replace(str(tmp), "") == loud.stdout.replace(str(tmp), "") or args[0] in ("send",), (
        "-q changed the result"
    )


def test_quiet_still_prints_errors(world) -> None:  # type: ignore[no-untyped-def]
    tmp, env = world
    done = subprocess.run([*CAPI, "-q", "validate", "missing.csv"], env=env, cwd=tmp, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and done.stderr.startswith("capi: error: ")
