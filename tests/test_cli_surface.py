"""The CLI surface as a newcomer meets it: help texts, completions, --json, stdout/stderr split."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer

from capi_cli.cli.app import _hoist_global_options, app
from capi_cli.cli.completion import SHELLS, completion_script

ROOT = Path(__file__).resolve().parent.parent


def _commands(group: typer.Typer, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for info in group.registered_commands:
        found.append((*prefix, info.name or info.callback.__name__.replace("_", "-")))
    for sub in group.registered_groups:
        name = sub.name or sub.typer_instance.info.name
        found.append((*prefix, name))
        found.extend(_commands(sub.typer_instance, (*prefix, name)))
    return found


ALL_COMMANDS = _commands(app)


def test_every_spec_command_exists() -> None:
    names = {" ".join(c) for c in ALL_COMMANDS}
    for expected in (
        "extract-referral",
        "validate",
        "send",
        "hash",
        "ledger",
        "referrals",
        "config",
        "doctor",
        "ledger stats",
        "ledger list",
        "ledger export",
        "ledger forget",
        "ledger prune",
        "ledger path",
        "referrals list",
        "referrals lookup",
        "config path",
        "config show",
        "config init",
        "config set",
        "config profiles",
    ):
        assert expected in names, expected


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=" ".join)
def test_help_has_summary_and_example(command: tuple[str, ...], runner) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.stdout, f"`capi {' '.join(command)} --help` shows no example"


def test_root_help_lists_exit_codes(runner) -> None:
    result = runner.invoke(app, ["--help"])
    for code in ("0", "1", "2", "3", "4", "5", "130"):
        assert f"\n  {code:>3}  " in result.stdout or f"{code}  " in result.stdout


@pytest.mark.parametrize("shell", sorted(SHELLS))
def test_committed_completions_are_not_stale(shell: str) -> None:
    committed = (ROOT / "completions" / SHELLS[shell]).read_text()
    assert committed == completion_script(shell), (
        f"completions/{SHELLS[shell]} is stale: run `python -m capi_cli.cli.completion completions`"
    )


def test_completion_candidates_come_from_the_app(monkeypatch, capsys) -> None:
    monkeypatch.setenv("_CAPI_COMPLETE", "complete_bash")
    monkeypatch.setenv("COMP_WORDS", "capi ledger st")
    monkeypatch.setenv("COMP_CWORD", "2")
    with pytest.raises(SystemExit):
        app(prog_name="capi")
    assert capsys.readouterr().out.split() == ["stats"]


def test_json_shorthand_and_global_options_after_command() -> None:
    assert _hoist_global_options(["send", "--file", "a.csv", "--profile", "shop", "-v", "--json"]) == [
        "--profile",
        "shop",
        "-v",
        "send",
        "--file",
        "a.csv",
        "--format",
        "json",
    ]
    assert _hoist_global_options(["--profile=x", "config", "show", "--config=c.yaml"]) == [
        "--config=c.yaml",
        "--profile=x",
        "config",
        "show",
    ]
    assert _hoist_global_options(["--json", "validate", "a.csv"]) == ["validate", "a.csv", "--format", "json"]
    # after `--`, nothing is rewritten
    assert _hoist_global_options(["hash", "em", "--", "-v"]) == ["hash", "em", "--", "-v"]


def test_unknown_option_is_usage_error_exit_2(runner) -> None:
    result = runner.invoke(app, ["send", "--file", "x.csv", "--no-such-option"])
    assert result.exit_code == 2


def test_unknown_command_is_usage_error(runner) -> None:
    assert runner.invoke(app, ["sned"]).exit_code == 2


@pytest.mark.parametrize("args", [[], ["ledger"], ["config"], ["referrals"]])
def test_a_group_given_no_command_shows_its_help(args: list[str]) -> None:
    """No command is no mistyped option: the group's help, on stderr, exit 2 (as Typer has it)."""
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Usage: capi {' '.join(args)}".rstrip() + " [OPTIONS] COMMAND")
    assert "capi: error" not in result.stderr and "Commands" in result.stderr


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["report", "--by", "nonsense"], "Invalid value for '--by': 'nonsense' is not one of 'ad', 'channel', "
                                         "'event', 'day'. (see `capi report --help`)"),
        (["send", "--file", "x.csv", "--concurrency", "abc"], "'abc' is not a valid int. (see `capi send --help`)"),
        (["send", "--file", "x.csv", "--no-such-option"], "No such option: --no-such-option"),
        (["sned"], "No such command 'sned'. Did you mean 'send'? (see `capi --help`)"),
        (["--bogus", "send"], "No such option: --bogus"),
        (["report", "--since"], "Option '--since' requires an argument."),
    ],
)
def test_a_usage_error_is_one_line_like_every_error(args: list[str], says: str) -> None:
    """A wrong option or value: one line on stderr, `capi: error: ...` as every capi error, exit 2
    (Typer's own is four lines: the usage, a hint, a blank line, the error)."""
    from typer.testing import CliRunner

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("capi: error: ") and says in lines[0], result.stderr
