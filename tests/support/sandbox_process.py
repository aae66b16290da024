"""`capi sandbox` as a user runs it: a subprocess, its URL read from stdout, stopped by PID."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

CAPI = [sys.executable, "-m", "capi_cli"]


@contextmanager
def running_sandbox(args: Sequence[str] = (), *, log: Path | None = None) -> Iterator[str]:
    """Start `capi sandbox --port 0 ARGS`, yield its CAPI_GRAPH_URL, stop it by PID even on failure."""
    err: IO[bytes] | int = open(log, "wb") if log is not None else subprocess.DEVNULL  # noqa: SIM115
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPI_")}
    process = subprocess.Popen([*CAPI, "sandbox", "--port", "0", *args], stdout=subprocess.PIPE, stderr=err,
                               text=True, env=env)
    try:
        assert process.stdout is not None
        line = process.stdout.readline().strip()
        assert line.startswith("CAPI_GRAPH_URL=http://127.0.0.1:"), f"sandbox did not start: {line!r}"
        yield line.split("=", 1)[1]
    finally:
        stop_process(process)
        if not isinstance(err, int):
            err.close()


def stop_process(process: subprocess.Popen[str]) -> None:
    """Stop a server this test started, by its PID: SIGTERM, then a kill if it lingers."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()
