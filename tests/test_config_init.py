"""`capi config init` checks each answer as it is typed, with a hint, and asks again; without a
terminal and without options it is a usage error; `config path` prints home, config and ledger."""

from __future__ import annotations

import os
import pty
import select
import sys
import time
from pathlib import Path

import yaml
from typer.testing import CliRunner

from capi_cli.cli.app import app

TOKEN = "EAAG-interactive-token-93af"


class Terminal:
    """capi on a pseudo-terminal it owns (pty.fork), answered prompt by prompt like a person."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child: capi, with the pty as its controlling terminal
            os.execve(sys.executable, [sys.executable, "-m", "capi_cli", *args], env)
        self.screen = ""

    def expect(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.screen:
            assert time.monotonic() < deadline, f"never saw {text!r}; screen:\n{self.screen}"
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if ready:
                try:
                    self.screen += os.read(self.fd, 4096).decode("utf-8", "replace")
                except OSError:
                    break

    def answer(self, prompt: str, text: str) -> None:
        self.expect(prompt)
        self.screen = self.screen[self.screen.index(prompt) + len(prompt):]
        os.write(self.fd, text.encode() + b"\r")

    def close(self) -> int:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                os.close(self.fd)
                return os.waitstatus_to_exitcode(status)
            ready, _, _ = select.select([self.fd], [], [], 0.2)
            if ready:
                try:
                    self.screen += os.read(self.fd, 4096).decode("utf-8", "replace")
                except OSError:
                    pass
        os.kill(self.pid, 9)
        os.waitpid(self.pid, 0)
        os.close(self.fd)
        raise AssertionError("capi config init did not finish")


def test_each_answer_is_checked_as_typed_and_asked_again(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPI_")}
    env.update(CAPI_HOME=str(home), TERM="dumb")
    term = Terminal(["config", "init"], env)
    try:
        term.answer("Dataset id (digits", "my-dataset")
        term.expect("expected a numeric Meta id")
        term.answer("Dataset id (digits", "1234567890")
        term.answer("WhatsApp Business Account id", "104996122399160")
        term.answer("Facebook Page id", "")
        term.answer("Instagram account id", "")
        term.answer("Default country for phones without +code (a name or ISO code", "Narnia")
        term.expect("unknown country 'Narnia'")
        term.answer("Default country", "India")
        term.answer("Default currency (an ISO 4217 code", "rupee")
        term.answer("Default currency", "inr")
        term.answer("Timezone of times without an offset (an IANA name", "IST")
        term.expect("did you mean Asia/Kolkata")
        term.answer("Timezone", "Asia/Kolkata")
        # click prints the prompt, then getpass flushes typed-ahead input and writes " ": wait for it.
        term.answer("Access token (hidden; empty to set it later): ", TOKEN)
    finally:
        code = term.close()
    assert code == 0, term.screen
    assert TOKEN not in term.screen
    profile = yaml.safe_load((home / "config.yaml").read_text())["profiles"]["default"]
    assert profile == {
        "dataset_id": "1234567890", "whatsapp_business_account_id": "104996122399160", "default_country": "IN",
        "currency": "INR", "timezone": "Asia/Kolkata", "access_token_file": "tokens/default.token",
    }
    assert (home / "tokens" / "default.token").read_text().strip() == TOKEN


def test_without_a_terminal_and_without_options_is_a_usage_error(runner: CliRunner, capi_home: Path) -> None:
    result = runner.invoke(app, ["config", "init"], input="")
    assert result.exit_code == 2
    assert result.stderr.startswith("capi: error: config init without a terminal takes its answers as options")
    assert not (capi_home / "config.yaml").exists()


def test_options_are_read_like_answers(runner: CliRunner, capi_home: Path) -> None:
    bad = runner.invoke(app, ["config", "init", "--waba-id", "104996122399160", "--timezone", "IST"])
    assert bad.exit_code == 2 and "did you mean Asia/Kolkata" in bad.stderr
    good = runner.invoke(app, ["config", "init", "--waba-id", "104996122399160", "--default-country", "Turkey",
                               "--timezone", "sao paulo"])
    assert good.exit_code == 0, good.stderr
    profile = yaml.safe_load((capi_home / "config.yaml").read_text())["profiles"]["default"]
    assert profile["default_country"] == "TR" and profile["timezone"] == "America/Sao_Paulo"


def test_config_path_prints_home_config_and_ledger(runner: CliRunner, capi_home: Path) -> None:
    result = runner.invoke(app, ["config", "path"])
    assert result.exit_code == 0
    assert result.stdout.splitlines() == [
        f"home:        {capi_home}", f"config_file: {capi_home / 'config.yaml'}",
        f"ledger:      {capi_home / 'ledger.sqlite3'}",
    ]


def test_init_offers_to_get_or_create_the_dataset(tmp_path: Path) -> None:
    from capi_cli.sandbox.server import GraphStandin

    home = tmp_path / "home"
    with GraphStandin(token=TOKEN) as graph:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAPI_")}
        env.update(CAPI_HOME=str(home), TERM="dumb", CAPI_GRAPH_URL=graph.url)
        term = Terminal(["config", "init", "--waba-id", "104996122399160", "--default-country", "IN",
                         "--currency", "INR", "--timezone", "Asia/Kolkata"], env)
        try:
            term.answer("Dataset id (digits", "")
            term.answer("Facebook Page id", "")
            term.answer("Instagram account id", "")
            term.answer("Access token (hidden; empty to set it later): ", TOKEN)
            term.answer("get or create the dataset of whatsapp account 104996122399160 on Meta now? [Y/n]", "y")
        finally:
            code = term.close()
        created = graph.linked_datasets["104996122399160"]
    assert code == 0, term.screen
    profile = yaml.safe_load((home / "config.yaml").read_text())["profiles"]["default"]
    assert profile["dataset_id"] == created
