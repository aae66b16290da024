"""`capi doctor`: is this machine ready to send?"""

from __future__ import annotations

import typer

from capi_cli.cli.common import TableJson, state, write_json, write_table
from capi_cli.errors import ExitCode


def doctor(
    ctx: typer.Context,
    offline: bool = typer.Option(False, "--offline", help="Skip the dataset check on the Graph API."),
    fmt: TableJson = typer.Option(TableJson.table, "--format"),
) -> None:
    """Check config, token, ledger and (unless --offline) the dataset on the Graph API.

    Example: capi --profile shop doctor
    """
    from capi_cli.diagnose import run_checks

    st = state(ctx)
    checks = run_checks(profile=st.profile, config_file=st.config_file, online=not offline)
    if fmt is TableJson.json:
        write_json({"ok": all(c.ok for c in checks), "checks": [c.as_dict() for c in checks]})
    else:
        write_table(
            [{"check": c.name, "status": "ok" if c.ok else "FAIL", "detail": c.detail} for c in checks],
            ["check", "status", "detail"],
        )
    failed = [c for c in checks if not c.ok]
    if failed:
        raise typer.Exit(int(max(c.exit_code for c in failed)))


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)


__all__ = ["register", "ExitCode"]
