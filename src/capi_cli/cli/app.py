"""The root `capi` command: global options, command registration, and the error boundary."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

import typer
from typer._click.exceptions import NoArgsIsHelpError, UsageError
from typer.core import TyperGroup

from capi_cli import __version__
from capi_cli.cli.common import AppState, set_quiet
from capi_cli.errors import EXIT_CODE_MEANINGS, CapiError, ExitCode

# Options that belong to the root command but are accepted after the subcommand too
# (`capi send --profile shop ...`); value-taking ones map to True.
_GLOBAL_OPTIONS = {
    "--profile": True,
    "--config": True,
    "-q": False,
    "--quiet": False,
    "-v": False,
    "--verbose": False,
}


class CapiGroup(TyperGroup):
    """Moves global options given after the subcommand to the front, and reads `--json` as `--format json`."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        if ctx.parent is None:
            args = _hoist_global_options(args)
        try:
            return super().parse_args(ctx, args)
        except NoArgsIsHelpError:  # `capi` alone: its help, as Typer shows it
            raise
        except UsageError as exc:  # a root option wrong (`capi --bogus`)
            raise typer.Exit(_usage_error(exc)) from None

    def invoke(self, ctx: Any) -> Any:
        # The one place where a user error becomes one line on stderr and its exit code,
        # so `capi` and Typer's CliRunner behave the same.
        try:
            return super().invoke(ctx)
        except CapiError as exc:
            report_error(exc)
            raise typer.Exit(int(exc.exit_code)) from None
        except NoArgsIsHelpError:  # a command group given no command (`capi ledger`): its help
            raise
        except UsageError as exc:  # a command's option or value wrong, or no such command
            raise typer.Exit(_usage_error(exc)) from None
        except KeyboardInterrupt:
            print("capi: interrupted", file=sys.stderr)
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None


def _usage_error(exc: UsageError) -> int:
    """A usage error as every capi error: one line on stderr (Typer's is four: the usage, a hint,
    a blank line and the error), naming the help to read; its exit code (2)."""
    message = " ".join(exc.format_message().split())
    hint = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""  # (None: not known)
    print(f"capi: error: {message}{hint}", file=sys.stderr)
    return int(exc.exit_code)


def _hoist_global_options(args: list[str]) -> list[str]:
    front: list[str] = []
    rest: list[str] = []
    tail: list[str] = []
    json_flag = False
    seen_command = False
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            tail = args[i:]
            break
        name, eq, _ = arg.partition("=")
        if arg == "--json":
            # `--format` belongs to the subcommand, so it goes after the command's own words.
            json_flag = True
        elif seen_command and name in _GLOBAL_OPTIONS:
            takes_value = _GLOBAL_OPTIONS[name]
            if takes_value and not eq and i + 1 < len(args):
                front.extend(args[i : i + 2])
                i += 1
            else:
                front.append(arg)
        else:
            if not arg.startswith("-"):
                seen_command = True
            rest.append(arg)
        i += 1
    if json_flag and seen_command:
        rest.extend(["--format", "json"])
    elif json_flag:
        rest.append("--json")  # no command: let the parser say what is wrong
    return front + rest + tail


# "\b" keeps the help formatter from re-wrapping the table.
_EXIT_HELP = "\b\n" + "\n".join(f"{int(code):>3}  {meaning}" for code, meaning in EXIT_CODE_MEANINGS.items())

app = typer.Typer(
    name="capi",
    cls=CapiGroup,
    no_args_is_help=True,
    add_completion=True,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    help=(
        "Send chat conversions from click-to-WhatsApp, Messenger and Instagram ads to Meta's "
        "Conversions API, exactly once.\n\n"
        "Typical flow: capi extract-referral webhooks/ ; capi validate orders.csv ; "
        "capi send --file orders.csv\n\n"
        f"Exit codes:\n\n{_EXIT_HELP}"
    ),
    epilog="Run 'capi COMMAND --help' for a command's options and an example.",
)


def _version(value: bool) -> None:
    if value:
        print(f"capi {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    ctx: typer.Context,
    profile: str = typer.Option(
        None, "--profile", help="Profile of the config file to use (env CAPI_PROFILE)."
    ),
    config: str = typer.Option(None, "--config", help="Config file (env CAPI_CONFIG)."),
    quiet: bool = typer.Option(False, "-q", "--quiet", help="Only results and errors."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug lines on stderr (secrets masked)."),
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    ctx.obj = AppState(profile=profile, config_file=config, quiet=quiet, verbose=verbose)
    set_quiet(quiet)


# Each module exposes register(app); command modules import the core lazily so that
# `capi --version` stays fast.
_COMMAND_MODULES = [
    "extract",
    "validate",
    "send",
    "fields",
    "hash_cmd",
    "ledger_cmd",
    "referrals",
    "report",
    "config_cmd",
    "doctor",
    "sandbox",
    "dataset",
]

for _name in _COMMAND_MODULES:
    try:
        importlib.import_module(f"capi_cli.cli.{_name}").register(app)
    except ModuleNotFoundError as exc:  # pragma: no cover - only while a module is being written
        if exc.name != f"capi_cli.cli.{_name}":
            raise


def main() -> None:
    """The command (capi_cli.cli.entry.main, the `capi` script, answers --version before this)."""
    app()


def report_error(exc: CapiError) -> None:
    if os.environ.get("CAPI_TRACEBACK") == "1":
        import traceback

        traceback.print_exception(exc)
    print(f"capi: error: {exc.message}", file=sys.stderr)
