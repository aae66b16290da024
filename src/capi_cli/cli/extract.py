"""`capi extract-referral`: webhook dumps in, one referral record per conversation out (SPEC §3)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import typer

from capi_cli.cli.common import (
    Format,
    debug,
    info,
    open_output,
    render,
    settings,
    state,
    write_csv,
    write_ndjson,
)
from capi_cli.cli.reports import capture_summary
from capi_cli.errors import ExitCode, UsageError

if TYPE_CHECKING:
    from capi_cli.ledger import LedgerStore

TABLE_COLUMNS = ("channel", "user_id", "ctwa_clid", "ad_id", "business_id", "timestamp", "kind", "origin")
_UNREADABLE_SHOWN = 100  # beyond this only a count, unless -v: a corrupt multi-GB log must not flood stderr


class Channel(StrEnum):
    whatsapp = "whatsapp"
    messenger = "messenger"
    instagram = "instagram"


def register(app: typer.Typer) -> None:
    app.command(
        "extract-referral",
        help=(
            "Read webhook dumps and print (and store) the ad referral of each conversation.\n\n"
            "PATH may be a file, a directory (read recursively) or - for stdin; JSON, arrays, NDJSON, "
            "concatenated documents and request-log wrappers are detected automatically.\n\n"
            "Example: capi extract-referral logs/webhooks/ --format csv -o referrals.csv"
        ),
    )(extract_referral)


def extract_referral(
    ctx: typer.Context,
    paths: list[str] = typer.Argument(..., metavar="PATH...", help="Files, directories, or - for stdin."),
    fmt: Format = typer.Option(Format.table, "--format", help="Output format."),
    output: str = typer.Option(None, "-o", "--output", help="Write the records to FILE instead of stdout."),
    store: bool = typer.Option(
        True, "--store/--no-store", help="Record the referrals in the ledger database."
    ),
    app_secret_env: str = typer.Option(
        None,
        "--app-secret-env",
        metavar="NAME",
        help="Env variable holding the app secret (default CAPI_APP_SECRET).",
    ),
    channel: Channel = typer.Option(None, "--channel", help="Only referrals of this channel."),
    require_valid_signature: bool = typer.Option(
        False, "--require-valid-signature", help="Drop records whose X-Hub-Signature-256 is not valid."
    ),
    all_referrals: bool = typer.Option(
        False,
        "--all-referrals",
        help=(
            "Also list referrals that are no ad (m.me / ig.me links, Shops products, chat plugin): "
            "ad_id null, source_type says what they are. They are never stored nor joined."
        ),
    ),
) -> None:
    from capi_cli.webhooks import REFERRAL_KEYS, Unreadable, Unrecognised
    from capi_cli.webhooks.capture import CaptureReport, extract_and_store

    app_secret = _app_secret(ctx, app_secret_env)
    report = CaptureReport()
    ledger = _open_ledger(ctx) if store else None
    shown = 0
    verbose = state(ctx).verbose

    def referrals() -> Iterator[dict[str, Any]]:
        nonlocal shown
        for item in extract_and_store(
            paths, report, sink=ledger.referrals if ledger is not None else None, app_secret=app_secret, channel=channel.value if channel else None,
            require_valid_signature=require_valid_signature, all_referrals=all_referrals,
            stdin=getattr(sys.stdin, "buffer", None) if "-" in paths else None,
        ):
            if isinstance(item, Unreadable):
                if shown < _UNREADABLE_SHOWN or verbose:
                    print(str(item), file=sys.stderr)
                    shown += 1
            elif isinstance(item, Unrecognised):
                debug(ctx, str(item))
            else:
                yield item.to_dict()

    try:
        stream = open_output(output)
        try:
            _write(referrals(), fmt, REFERRAL_KEYS, stream)
        finally:
            if stream is not sys.stdout:
                stream.close()
    finally:
        if ledger is not None:
            ledger.close()
    stats = report.stats
    if stats.unreadable > shown:
        print(f"... {stats.unreadable - shown} more unreadable inputs (-v shows all)", file=sys.stderr)
    info(ctx, capture_summary(report))
    for line in report.warnings(channel is not None):
        info(ctx, f"warning: {line}")
    debug(ctx, f"signature check: {'on' if app_secret else 'off (no app secret)'}")
    if stats.unreadable:
        raise typer.Exit(int(ExitCode.DATA))


def _app_secret(ctx: typer.Context, env_name: str | None) -> str | None:
    if env_name:
        secret = os.environ.get(env_name)
        if not secret:
            raise UsageError(f"--app-secret-env {env_name}: the environment variable {env_name} is not set")
        return secret
    return settings(ctx).app_secret


def _open_ledger(ctx: typer.Context) -> LedgerStore:
    from capi_cli.ledger import open_ledger

    return open_ledger(settings(ctx).ledger)


def _write(records: Iterable[dict[str, Any]], fmt: Format, columns: tuple[str, ...], stream: Any) -> None:
    """JSON, NDJSON and CSV stream as records arrive; only the table waits for all of them."""
    if fmt is Format.ndjson:
        write_ndjson(records, stream)
    elif fmt is Format.csv:
        write_csv(records, columns, stream)
    elif fmt is Format.json:
        _write_json_array(records, stream)
    else:
        render(list(records), fmt, columns, TABLE_COLUMNS, stream=stream)


def _write_json_array(records: Iterable[dict[str, Any]], stream: Any) -> None:
    """One JSON array, written element by element (same layout as common.write_json)."""
    first = True
    for record in records:
        body = json.dumps(record, ensure_ascii=False, indent=2).replace("\n", "\n  ")
        stream.write(("[\n  " if first else ",\n  ") + body)
        first = False
    stream.write("[]\n" if first else "\n]\n")
