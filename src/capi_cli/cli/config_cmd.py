"""`capi config`: where the config lives, what is in force, and writing profiles."""

from __future__ import annotations

import sys
from typing import Any

import typer

from capi_cli.cli.common import TableJson, info, settings, state, write_json, write_table
from capi_cli.errors import UsageError

config_app = typer.Typer(
    name="config",
    no_args_is_help=True,
    help="Show and edit the configuration (profiles in config.yaml; the token in a 0600 file or env var).\n\n"
    "Example: capi config init --profile shop",
)


@config_app.command("path")
def path_cmd(ctx: typer.Context, fmt: TableJson = typer.Option(TableJson.table, "--format")) -> None:
    """Print the config file, home directory and ledger paths.

    Example: capi config path
    """
    s = settings(ctx)
    from capi_cli.ledger.location import shown

    paths = {"config_file": str(s.config_file), "home": str(s.home), "ledger": shown(s.ledger)}
    if fmt is TableJson.json:
        write_json(paths)
    else:
        for name in ("home", "config_file", "ledger"):
            print(f"{name + ':':13}{paths[name]}")


@config_app.command("show")
def show(ctx: typer.Context, fmt: TableJson = typer.Option(TableJson.table, "--format")) -> None:
    """Show the settings in force and where each comes from (token and app secret masked).

    Example: capi --profile shop config show --json
    """
    s = settings(ctx)
    shown = s.display()
    if fmt is TableJson.json:
        write_json(
            {
                "profile": s.profile,
                "config_file": str(s.config_file),
                "home": str(s.home),
                "settings": shown,
                "sources": {k: s.sources.get(k, "default") for k in shown if k != "profile"},
            }
        )
        return
    rows = [
        {"setting": k, "value": v, "source": s.sources.get(k, "")} for k, v in shown.items() if k != "profile"
    ]
    info(ctx, f"profile {s.profile}  ({s.config_file})")
    write_table(rows, ["setting", "value", "source"])


@config_app.command("profiles")
def profiles(ctx: typer.Context, fmt: TableJson = typer.Option(TableJson.table, "--format")) -> None:
    """List the profiles of the config file; the default one is marked.

    Example: capi config profiles
    """
    import os

    from capi_cli.config import config_path, read_config_file

    st = state(ctx)
    path, explicit = config_path(st.config_file, os.environ)
    data = read_config_file(path) if (explicit or path.exists()) else {}
    default = data.get("default_profile") or "default"
    names = sorted(map(str, (data.get("profiles") or {})))
    rows = [{"profile": n, "default": n == default} for n in names]
    if fmt is TableJson.json:
        write_json({"config_file": str(path), "default_profile": default, "profiles": names})
    else:
        write_table([{**r, "default": "*" if r["default"] else ""} for r in rows], ["profile", "default"])


@config_app.command("set")
def set_cmd(
    ctx: typer.Context,
    key: str = typer.Argument(..., help="A profile key, e.g. dataset_id, default_country, currency."),
    value: str = typer.Argument(..., help="Its value; an empty string removes the key."),
) -> None:
    """Set one key of the current profile (created if needed), checked before it is written.

    Example: capi --profile shop config set default_country IN
    """
    from capi_cli.config_edit import set_profile_value

    st = state(ctx)
    path, name = set_profile_value(st.config_file, st.profile, key, value)
    info(ctx, f"{path}: profiles.{name}.{key} updated")


@config_app.command("init")
def init(
    ctx: typer.Context,
    dataset_id: str = typer.Option(None, "--dataset-id", help="Dataset (pixel) id events are sent to."),
    waba_id: str = typer.Option(None, "--waba-id", help="WhatsApp Business Account id."),
    page_id: str = typer.Option(None, "--page-id", help="Facebook Page id (Messenger)."),
    ig_account_id: str = typer.Option(None, "--ig-account-id", help="Instagram account id."),
    default_country: str = typer.Option(
        None, "--default-country", help="Country for phones without a code, e.g. IN."
    ),
    currency: str = typer.Option(None, "--currency", help="Default currency, e.g. INR."),
    timezone: str = typer.Option(None, "--timezone", help="Timezone of naive timestamps, e.g. Asia/Kolkata."),
    token_stdin: bool = typer.Option(False, "--token-stdin", help="Read the access token from stdin."),
    token_env: str = typer.Option(
        None, "--token-env", help="Reference an env var holding the token instead."
    ),
    make_default: bool = typer.Option(
        False, "--default", help="Make this the default profile (the first one always is)."
    ),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not prompt; use the options given."),
) -> None:
    """Create or update a profile. Interactive on a terminal; the token is asked at a hidden prompt
    and stored in a 0600 file that the profile references, never in config.yaml.

    Example: capi --profile shop config init --dataset-id 1234567890 --waba-id 1098765432 --token-stdin -y < token.txt
    """
    from capi_cli.config_answers import REQUIRED_ONE_OF
    from capi_cli.config_edit import init_profile

    st = state(ctx)
    given = {
        "dataset_id": dataset_id,
        "whatsapp_business_account_id": waba_id,
        "page_id": page_id,
        "ig_account_id": ig_account_id,
        "default_country": default_country,
        "currency": currency,
        "timezone": timezone,
    }
    values = {key: _checked_option(key, value) for key, value in given.items()}
    interactive = not yes and sys.stdin.isatty()
    token: str | None = None
    if interactive:
        for question in _questions():
            if values[question.key] is None:
                values[question.key] = _ask(question)
        if token_env is None:
            token = (
                typer.prompt(
                    "Access token (hidden; empty to set it later)", default="", hide_input=True, show_default=False
                )
                or None
            )
    else:
        if not any(values[key] for key in REQUIRED_ONE_OF):
            raise UsageError(
                "config init without a terminal takes its answers as options: give at least one of "
                "--dataset-id, --waba-id, --page-id, --ig-account-id (and --token-stdin or --token-env)"
            )
        if token_stdin:
            token = sys.stdin.readline().strip() or None
    path, name, token_file = init_profile(
        st.config_file, st.profile, values, token=token, token_env=token_env, make_default=make_default
    )
    info(ctx, f"{path}: profile `{name}` written")
    if token_file:
        info(ctx, f"token stored in {token_file} (mode 0600)")
    if interactive and not values["dataset_id"] and (token or token_env):
        _offer_dataset(ctx)


def _offer_dataset(ctx: typer.Context) -> None:
    """The step a new user lacks: the dataset of their WABA / Page / Instagram account (`capi dataset`)."""
    from capi_cli.config_edit import set_profile_value
    from capi_cli.datasets import asset_of, get_or_create
    from capi_cli.errors import CapiError

    current = settings(ctx)
    try:
        channel, asset_id = asset_of(current, None)
    except CapiError:
        return
    if not typer.confirm(f"No dataset id yet: get or create the dataset of {channel} account {asset_id} on Meta now?",
                         default=True):
        info(ctx, "later: `capi dataset --create --save`")
        return
    found = get_or_create(current, channel)
    st = state(ctx)
    path, name = set_profile_value(st.config_file, st.profile, "dataset_id", found.dataset_id or "")
    info(ctx, f"{path}: profiles.{name}.dataset_id = {found.dataset_id}")


def _questions() -> Any:
    from capi_cli.config_answers import QUESTIONS

    return QUESTIONS


def _checked_option(key: str, value: str | None) -> str | None:
    from capi_cli.config_answers import BadAnswer, check_answer

    if value is None:
        return None
    try:
        return check_answer(key, value)
    except BadAnswer as exc:
        raise UsageError(f"--{_OPTION_OF.get(key, key).replace('_', '-')}: {exc}") from None


_OPTION_OF = {"whatsapp_business_account_id": "waba_id"}


def _ask(question: Any) -> str | None:
    """Ask until the answer is accepted; each answer is checked as it is typed (empty skips)."""
    from capi_cli.config_answers import BadAnswer, check_answer

    while True:
        answer = typer.prompt(f"{question.prompt} ({question.hint})", default="", show_default=False)
        try:
            return check_answer(question.key, answer)
        except BadAnswer as exc:
            print(f"  {exc}; expected {question.hint}", file=sys.stderr)


def register(app: typer.Typer) -> None:
    app.add_typer(config_app)
