"""The README's examples run: every ```console block of README.md is executed and compared.

The convention, for whoever writes a console block:

- Every ```console block runs, in the order of the README, as ONE session of a newcomer: one working
  directory (holding fresh copies of `examples/` and `tests/fixtures/`), one `CAPI_HOME` (empty at
  the start), and this checkout's `capi` first on PATH. Blocks fenced ```sh or ```cron are not run.
- A line starting with `$ ` is a command, run by bash in that directory. `export VAR=...` and `cd`
  carry on to the next commands, as in a terminal.
- The lines after a command, up to the next `$ ` line or the end of the block, are what it prints:
  its stdout, then its stderr (capi prints its result before its summary, so this is the order a
  terminal shows). They are compared line by line, exactly (trailing spaces aside), except that
  * `...` inside a line stands for any text on that line (elided long values: click ids, hashes,
    columns, and times, which change from run to run);
  * a line that is only `...` stands for any number of lines.
  The exit status is not compared (an example may show an error on purpose).
- A command ending in ` &` is a server started as if in another terminal: it runs in the
  background, the lines after it are the first lines of its stdout, and it is stopped by its PID
  when the README is done (or has failed).
- The sandbox's default port is replaced by a free one, so that two runs of this test on one
  machine do not collide: `capi sandbox` without `--port` gets `--port N`, and `127.0.0.1:8765`
  becomes `127.0.0.1:N` in commands and expected output.
- Examples that depend on the date get fresh data from a command shown in the block
  (`python3 examples/fresh_webhooks.py`), never from fixed dates: Meta's 7-day window moves.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from support.sandbox_process import stop_process

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
SANDBOX_ADDRESS = "127.0.0.1:8765"
ELIDED = "..."


@dataclass
class Step:
    command: str
    expected: list[str] = field(default_factory=list)
    line: int = 0  # in README.md, for the failure message

    @property
    def background(self) -> bool:
        return self.command.rstrip().endswith(" &")


def console_steps(text: str) -> list[Step]:
    steps: list[Step] = []
    inside = False
    for number, line in enumerate(text.splitlines(), 1):
        if not inside:
            inside = line.strip() == "```console"
            continue
        if line.strip() == "```":
            inside = False
        elif line.startswith("$ "):
            steps.append(Step(line[2:], line=number))
        elif steps:
            steps[-1].expected.append(line.rstrip())
    return steps


def output_pattern(expected: list[str]) -> re.Pattern[str]:
    parts = []
    for line in expected:
        if line.strip() == ELIDED:
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append("[^\n]*?".join(re.escape(piece) for piece in line.split(ELIDED)) + r"\n")
    return re.compile("".join(parts))


def matches(expected: list[str], actual: str) -> bool:
    text = "".join(line.rstrip() + "\n" for line in actual.splitlines())
    return output_pattern(expected).fullmatch(text) is not None


def free_port() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return str(probe.getsockname()[1])


class Session:
    """A shell session kept across commands: environment and directory saved after each one."""

    def __init__(self, work: Path, env: dict[str, str]) -> None:
        self.work = work
        self.env = env
        self.state = work.parent / "session.env"
        self.cwd = work.parent / "session.cwd"
        self.state.write_text("")
        self.cwd.write_text(str(work))
        self.servers: list[subprocess.Popen[str]] = []

    def _script(self, command: str, *, background: bool = False) -> str:
        restore = f'. {shlex.quote(str(self.state))}; cd "$(cat {shlex.quote(str(self.cwd))})"'
        if background:
            return f"{restore}; exec {command}"
        save = f"export -p > {shlex.quote(str(self.state))}; pwd > {shlex.quote(str(self.cwd))}"
        return f"{restore}\n{command}\nstatus=$?\n{save}\nexit $status"

    def run(self, command: str) -> str:
        done = subprocess.run(["bash", "-c", self._script(command)], env=self.env, capture_output=True,
                              text=True, timeout=180)
        return done.stdout + done.stderr

    def start(self, command: str, lines: int) -> str:
        server = subprocess.Popen(["bash", "-c", self._script(command.rstrip()[:-1], background=True)],
                                  env=self.env, stdout=subprocess.PIPE, text=True)
        self.servers.append(server)
        assert server.stdout is not None
        return "".join(server.stdout.readline() for _ in range(lines))

    def close(self) -> None:
        for server in self.servers:
            stop_process(server)


def newcomer_env(tmp: Path) -> dict[str, str]:
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPI_")}
    env.update(CAPI_HOME=str(tmp / "capi-home"), PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
               COLUMNS="200", NO_COLOR="1", HOME=str(tmp / "user"))
    return env


def test_convention_elision_and_exact_lines() -> None:
    assert matches(["a ... c"], "a bbb c\n")
    assert not matches(["a ... c"], "a bbb c\nextra\n")
    assert matches(["first", "...", "last"], "first\nx\ny\nlast\n")
    assert matches(["first", "...", "last"], "first\nlast\n")
    assert not matches(["exact"], "exactly\n")
    steps = console_steps("```sh\n$ not run\n```\n```console\n$ echo hi\nhi\n$ true\n```\n")
    assert [(s.command, s.expected) for s in steps] == [("echo hi", ["hi"]), ("true", [])]


def test_readme_console_blocks_run_as_written(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    shutil.copytree(ROOT / "examples", work / "examples")
    shutil.copytree(ROOT / "tests" / "fixtures", work / "tests" / "fixtures")
    shutil.copytree(ROOT / "completions", work / "completions")
    (tmp_path / "user").mkdir()
    port = free_port()
    steps = console_steps(README.read_text(encoding="utf-8"))
    assert len(steps) >= 10, "the README lost its console examples"
    session = Session(work, newcomer_env(tmp_path))
    try:
        for step in steps:
            command = step.command.replace(SANDBOX_ADDRESS, f"127.0.0.1:{port}")
            if "capi sandbox" in command and "--port" not in command:
                command = command.replace("capi sandbox", f"capi sandbox --port {port}", 1)
            expected = [line.replace(SANDBOX_ADDRESS, f"127.0.0.1:{port}") for line in step.expected]
            if step.background:
                actual = session.start(command, len(expected))
                time.sleep(0.2)
            else:
                actual = session.run(command)
            assert matches(expected, actual), (
                f"README.md:{step.line}: $ {step.command}\n--- expected\n" + "\n".join(step.expected)
                + f"\n--- got\n{actual}"
            )
    finally:
        session.close()
