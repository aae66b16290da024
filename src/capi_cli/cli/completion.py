"""Shell completion scripts for bash, zsh and fish, generated from the app.

The scripts call back into `capi` for candidates, so they follow the commands and options of
the installed version. `python -m capi_cli.cli.completion` rewrites completions/.
"""

from __future__ import annotations

import sys
from pathlib import Path

SHELLS = {"bash": "capi.bash", "zsh": "_capi", "fish": "capi.fish"}


def completion_script(shell: str) -> str:
    from typer._completion_shared import get_completion_script

    return get_completion_script(prog_name="capi", complete_var="_CAPI_COMPLETE", shell=shell).rstrip() + "\n"


def write_all(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for shell, filename in SHELLS.items():
        path = directory / filename
        path.write_text(completion_script(shell))
        written.append(path)
    return written


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("completions")
    for p in write_all(target):
        print(p)
