"""`capi ledger stats|list|export|forget|prune|path|copy`: look into and maintain the delivery ledger."""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from capi_cli.cli.common import Format, TableJson, info, open_output, render, settings, write_json
from capi_cli.errors import UsageError

if TYPE_CHECKING:
    from capi_cli.ledger import LedgerRef, LedgerStore

# The ledger's states (ledger.LedgerState), spelled out so that `capi --version` need not import
# sqlite3. test_ledger_cli checks that the two agree.
STATES = ("in_flight", "sent", "rejected", "failed", "uncertain")
TABLE_COLUMNS = ("dataset_id", "event_name", "event_id", "state", "event_time", "attempts", "error_code",
                 "error_subcode", "error_message", "source")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw])", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# Meta refuses events older than 7 days (meta-facts.md), so only younger records guard against resending.
MIN_SAFE_PRUNE_SECONDS = 7 * 86400

ledger_app = typer.Typer(
    name="ledger",
    no_args_is_help=True,
    help=(
        "Look into the delivery ledger: what was sent, rejected, failed or is uncertain.\n\n"
        "Example: capi ledger list --status uncertain"
    ),
)


def register(app: typer.Typer) -> None:
    app.add_typer(ledger_app, name="ledger")


# -- shared options -------------------------------------------------------------------------------

_STATUS = typer.Option(None, "--status", help=f"Only this state: {', '.join(STATES)}.")
_EVENT_NAME = typer.Option(None, "--event-name", help="Only this event name (e.g. Purchase).")
_DATASET = typer.Option(None, "--dataset", help="Only this dataset id.")
_SINCE = typer.Option(None, "--since", help="Event time at or after WHEN (ISO date/time, or 2d, 12h, 30m).")
_UNTIL = typer.Option(None, "--until", help="Event time at or before WHEN (ISO date/time, or 2d, 12h, 30m).")


def parse_duration(text: str, option: str = "--older-than") -> float:
    """Seconds in `30d`, `12h`, `90m`, `45s`, `2w` (decimals allowed: `1.5d`)."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise UsageError(f"{option} {text!r}: use a duration like 30d, 12h, 90m or 2w")
    return float(match[1]) * _UNIT_SECONDS[match[2].lower()]


def _filters(
    ctx: typer.Context, status: str | None, event_name: str | None, dataset: str | None,
    since: str | None, until: str | None,
) -> dict[str, Any]:
    import time

    from capi_cli.events.times import parse_when, timezone_named

    if status is not None and status not in STATES:
        raise UsageError(f"--status must be one of {', '.join(STATES)}, not {status!r}")
    filters: dict[str, Any] = {"state": status, "event_name": event_name, "dataset_id": dataset}
    if since is not None or until is not None:
        tz = timezone_named(settings(ctx).timezone)
        now = time.time()
        filters["since"] = parse_when(since, now, tz, "--since") if since is not None else None
        filters["until"] = parse_when(until, now, tz, "--until") if until is not None else None
    return filters


def _ledger_ref(ctx: typer.Context) -> LedgerRef:
    from capi_cli.ledger import LedgerRef

    location = settings(ctx).ledger
    ref = LedgerRef.parse(location)
    return ref if ref.kind == "postgres" else LedgerRef("sqlite", str(Path(location).expanduser()))


def _open(ctx: typer.Context, *, create: bool = False) -> LedgerStore | None:
    """The ledger, or None when it does not exist yet and reading it would only create it."""
    from capi_cli.ledger import open_ledger

    ref = _ledger_ref(ctx)
    if not create and not ref.exists():
        return None
    return open_ledger(ref)


def _iso(ts: Any) -> Any:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if isinstance(ts, int | float) else ts


def _events(ctx: typer.Context, filters: dict[str, Any], limit: int | None) -> list[dict[str, Any]]:
    ledger = _open(ctx)
    if ledger is None:
        return []
    with ledger:
        return list(ledger.list_events(**filters, limit=limit))


# -- commands ------------------------------------------------------------------------------------


@ledger_app.command("stats")
def stats_cmd(
    ctx: typer.Context,
    fmt: TableJson = typer.Option(TableJson.table, "--format", help="Output format."),
) -> None:
    """Count events by state, overall and per dataset.

    Example: capi ledger stats --format json
    """
    ledger = _open(ctx)
    stats: dict[str, Any] = {"total": {}, "by_dataset": {}}
    if ledger is not None:
        with ledger:
            stats = ledger.stats()
    if fmt is TableJson.json:
        write_json(stats)
        return
    rows = [{"dataset_id": d, **counts, "total": sum(counts.values())} for d, counts in stats["by_dataset"].items()]
    if len(rows) != 1:
        rows.append({"dataset_id": "all", **stats["total"], "total": sum(stats["total"].values())})
    render(rows, "table", ["dataset_id", *STATES, "total"])


@ledger_app.command("list")
def list_cmd(
    ctx: typer.Context,
    status: str = _STATUS,
    event_name: str = _EVENT_NAME,
    dataset: str = _DATASET,
    since: str = _SINCE,
    until: str = _UNTIL,
    limit: int = typer.Option(None, "--limit", min=1, help="At most N events."),
    fmt: Format = typer.Option(Format.table, "--format", help="Output format."),
) -> None:
    """List ledger events, oldest update first.

    Example: capi ledger list --status rejected --since 7d --format csv
    """
    from capi_cli.ledger import EVENT_COLUMNS

    records = _events(ctx, _filters(ctx, status, event_name, dataset, since, until), limit)
    if fmt is Format.table:
        render([{**r, "event_time": _iso(r["event_time"])} for r in records], fmt, EVENT_COLUMNS, TABLE_COLUMNS)
    else:
        render(records, fmt, EVENT_COLUMNS)
    info(ctx, f"{len(records)} event(s)")


@ledger_app.command("export")
def export_cmd(
    ctx: typer.Context,
    status: str = _STATUS,
    event_name: str = _EVENT_NAME,
    dataset: str = _DATASET,
    since: str = _SINCE,
    until: str = _UNTIL,
    limit: int = typer.Option(None, "--limit", min=1, help="At most N events."),
    fmt: Format = typer.Option(Format.ndjson, "--format", help="Output format (default ndjson)."),
    output: str = typer.Option(None, "-o", "--output", help="Write to FILE (0600) instead of stdout."),
) -> None:
    """Export ledger events (no customer data is stored, only ids, states and errors).

    Example: capi ledger export --dataset 1234567890 -o ledger.ndjson
    """
    from capi_cli.ledger import EVENT_COLUMNS

    records = _events(ctx, _filters(ctx, status, event_name, dataset, since, until), limit)
    stream = open_output(output)
    try:
        render(records, fmt, EVENT_COLUMNS, stream=stream)
    finally:
        if stream is not sys.stdout:
            stream.close()
    info(ctx, f"exported {len(records)} event(s)" + (f" to {output}" if output and output != "-" else ""))


@ledger_app.command("forget")
def forget_cmd(
    ctx: typer.Context,
    status: str = _STATUS,
    event_name: str = _EVENT_NAME,
    dataset: str = _DATASET,
    event_id: str = typer.Option(None, "--event-id", help="Only this event id."),
    since: str = _SINCE,
    until: str = _UNTIL,
    all_: bool = typer.Option(False, "--all", help="Forget every event (no filter)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    fmt: TableJson = typer.Option(TableJson.table, "--format", help="Output format."),
) -> None:
    """Release events so that the next send delivers them again (e.g. uncertain ones you checked).

    Example: capi ledger forget --status uncertain --dataset 1234567890 --yes
    """
    filters = _filters(ctx, status, event_name, dataset, since, until)
    filters["event_id"] = event_id
    given = {k: v for k, v in filters.items() if v is not None}
    if not given and not all_:
        raise UsageError("ledger forget: give a filter (--status, --event-name, --dataset, --event-id, "
                         "--since, --until) or --all")
    if given and all_:
        raise UsageError("ledger forget: --all cannot be combined with filters")
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError("ledger forget: add --yes to confirm when not running on a terminal")
        what = ", ".join(f"{k}={v}" for k, v in given.items()) or "ALL events"
        if not typer.confirm(f"Forget ledger events ({what})? They may be sent again", default=False):
            raise typer.Exit(1)
    ledger = _open(ctx)
    forgotten = 0
    if ledger is not None:
        with ledger:
            # A running send settles the rows it began: forgetting them under it would lose them.
            with ledger.maintenance():
                forgotten = ledger.forget(**filters)
    if fmt is TableJson.json:
        write_json({"forgotten": forgotten})
    else:
        info(ctx, f"forgot {forgotten} event(s)")


@ledger_app.command("prune")
def prune_cmd(
    ctx: typer.Context,
    older_than: str = typer.Option(..., "--older-than", help="Age of the last update, like 30d, 12h, 90m."),
    status: str = _STATUS,
    force: bool = typer.Option(False, "--force", help="Allow an age under 7 days."),
    fmt: TableJson = typer.Option(TableJson.table, "--format", help="Output format."),
) -> None:
    """Delete events (and stored referrals) last updated longer ago than a given age.

    Meta refuses events older than 7 days, so records older than that are no longer needed to
    prevent double sending; younger ones are, hence --force below 7d. In-flight events are kept.

    Example: capi ledger prune --older-than 90d
    """
    seconds = parse_duration(older_than)
    if seconds < MIN_SAFE_PRUNE_SECONDS and not force:
        raise UsageError(
            f"--older-than {older_than}: records younger than 7 days still prevent double sending "
            "(Meta accepts events up to 7 days old); use 7d or more, or --force"
        )
    if status is not None and status not in STATES:
        raise UsageError(f"--status must be one of {', '.join(STATES)}, not {status!r}")
    ledger = _open(ctx)
    pruned = 0
    if ledger is not None:
        with ledger:
            pruned = ledger.prune(seconds, state=status)
    if fmt is TableJson.json:
        write_json({"pruned": pruned})
    else:
        info(ctx, f"pruned {pruned} event(s) older than {older_than}")


@ledger_app.command("path")
def path_cmd(ctx: typer.Context) -> None:
    """Print the ledger's location (set it with CAPI_LEDGER or CAPI_HOME).

    Example: sqlite3 "$(capi ledger path)" 'select state, count(*) from events group by 1'
    (a PostgreSQL URL is printed with its password masked)
    """
    print(_ledger_ref(ctx).shown)


@ledger_app.command("copy")
def copy_cmd(
    ctx: typer.Context,
    to: str = typer.Option(..., "--to", metavar="URL", help="The PostgreSQL ledger: postgresql://..."),
    fmt: TableJson = typer.Option(TableJson.table, "--format", help="Output format."),
) -> None:
    """Copy this SQLite ledger (events and referrals) into a PostgreSQL ledger, idempotently.

    Rows the PostgreSQL ledger has already are left as they are: running it twice changes nothing.

    Example: capi ledger copy --to postgresql://capi@db.internal/capi
    """
    from capi_cli.ledger.copy import copy_to_postgres

    result = copy_to_postgres(_ledger_ref(ctx), to)
    if fmt is TableJson.json:
        write_json(result.to_dict())
    else:
        info(ctx, f"copied to {result.to}: " + "; ".join(
            f"{table} {result.copied[table]} new, {result.already[table]} already there" for table in result.copied
        ))
