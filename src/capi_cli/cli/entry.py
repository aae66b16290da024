"""The `capi` command's entry point: what is worth doing before Typer and the command tree load.

- SIGTERM during start-up ends the command with exit 130, like an interrupted run.
- `capi --version` is answered at once.
- `capi send --file ...` and `capi validate ...` of files large enough for worker processes start
  those processes first, so that their start-up (~0.15 s) overlaps the command's own (Typer,
  settings, the ledger) instead of following it. The command takes them over (events.parallel);
  processes started for a command line that turns out not to use them are stopped at exit.
"""

from __future__ import annotations

import os
import signal
import sys


def main() -> None:
    # SIGTERM before a command installs its own handler (send settles what is in flight first):
    # nothing is under way yet, so stop at once, with the exit code of an interrupted run.
    signal.signal(signal.SIGTERM, _terminated)
    argv = sys.argv[1:]
    if argv == ["--version"]:
        from capi_cli import __version__

        print(f"capi {__version__}")
        return
    paths = _input_files(argv)
    if paths:
        from capi_cli.events import parallel

        parallel.warm_up(paths, fork=True)
    from capi_cli.cli.app import main as app_main

    app_main()


def _terminated(signum: int, frame: object) -> None:
    raise SystemExit(130)


def _input_files(argv: list[str]) -> list[str]:
    """The events files a send or validate command line names (a cheap guess: Typer parses it
    properly later; a wrong guess costs two idle processes, nothing else)."""
    if "--help" in argv or "-h" in argv:
        return []
    if "send" in argv:
        files = []
        for index, arg in enumerate(argv):
            if arg in ("--file", "-f") and index + 1 < len(argv):
                files.append(argv[index + 1])
            elif arg.startswith("--file="):
                files.append(arg[len("--file="):])
        return files
    if "validate" in argv:
        return [arg for arg in argv[argv.index("validate") + 1:] if not arg.startswith("-") and os.path.isfile(arg)]
    return []


if __name__ == "__main__":
    main()
