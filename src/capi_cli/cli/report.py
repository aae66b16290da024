"""`capi report`: per ad, conversations started and converted, events and value; coverage; runs."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import typer

from capi_cli.cli.common import info, settings, write_csv, write_json
from capi_cli.errors import UsageError

if TYPE_CHECKING:
    from rich.console import Console

    from capi_cli.report import Report

DEFAULT_DAYS = 28
BARS_SHOWN = 10  # rows drawn with a bar: the top ads
ROWS_SHOWN = 40  # rows of the terminal table; --format json|csv give them all
BAR_WIDTH = 12
WEAK_SHARE = 0.5  # match keys carried by fewer sent events than this get a hint


class By(StrEnum):
    ad = "ad"
    channel = "channel"
    event = "event"
    day = "day"


class ReportFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


class _NoLedger:
    """A ledger not created yet reports nothing (reading it must not create it)."""

    def report_query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return []

    def __enter__(self) -> _NoLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


def _source(location: str) -> Any:
    from pathlib import Path

    from capi_cli.ledger import open_ledger

    if "://" not in location and not Path(location).expanduser().exists():
        return _NoLedger()
    return open_ledger(location)


def report(
    ctx: typer.Context,
    since: str = typer.Option(None, "--since", help=f"From WHEN (ISO date/time, or 7d, 12h); default {DEFAULT_DAYS}d."),
    until: str = typer.Option(None, "--until", help="Up to WHEN (ISO date/time, or 1d); default now."),
    by: By = typer.Option(By.ad, "--by", help="One row per ad, channel, event name or day."),
    dataset: str = typer.Option(None, "--dataset", help="Only this dataset (default: the configured one, else all)."),
    fmt: ReportFormat = typer.Option(ReportFormat.table, "--format", help="table, json or csv (the rows)."),
    html: str = typer.Option(None, "--html", help="Also write a self-contained page with charts to FILE."),
) -> None:
    """Which ads start conversations that convert: per ad, conversations, conversions and value;
    how complete the data sent to Meta is; and the last runs of `capi send`.

    Example: capi report --since 7d --html report.html
    """
    from capi_cli.events.times import parse_when, timezone_named
    from capi_cli.report import Period, build_report

    s = settings(ctx, dataset_id=dataset)
    tz = timezone_named(s.timezone)
    now = time.time()
    start = parse_when(since, now, tz, "--since") if since else int(now - DEFAULT_DAYS * 86400)
    end = parse_when(until, now, tz, "--until") if until else int(now)
    if start > end:
        raise UsageError(f"--since {since or f'{DEFAULT_DAYS}d'} is after --until {until or 'now'}")
    if html is not None:
        from capi_cli.report.html import check_available

        check_available()
    period = Period(start, end, s.dataset_id)
    with _source(str(s.ledger)) as source:
        result = build_report(source, period, by.value, tz, series=html is not None and by is By.ad)
        if html is not None:
            from capi_cli.report.html import write_page

            # The page is about ads whatever --by says: its charts are per ad.
            page = result if by is By.ad else build_report(source, period, "ad", tz, series=True)
            write_page(page, html)
            info(ctx, f"report page written to {html}")
    if fmt is ReportFormat.json:
        write_json(result.to_dict())
    elif fmt is ReportFormat.csv:
        _write_csv(result)
    else:
        _print_tables(result)


# -- CSV: one row per group, one column per event name and per currency --------------------------


def _write_csv(result: Report) -> None:
    from capi_cli.report import GROUP_KEYS

    names = sorted({name for row in result.rows for name in row["events"]})
    currencies = sorted({c for row in result.rows for c in row["value"]})
    columns = [*GROUP_KEYS[result.by], "conversations", "converted_conversations", "conversion_rate",
               *(f"events.{n}" for n in names), *(f"value.{c}" for c in currencies), "first_seen", "last_seen"]
    flat = []
    for row in result.rows:
        record = {k: v for k, v in row.items() if k not in ("events", "value")}
        record.update({f"events.{n}": row["events"].get(n, 0) for n in names})
        record.update({f"value.{c}": row["value"].get(c) for c in currencies})
        flat.append(record)
    write_csv(flat, columns)


# -- the terminal ------------------------------------------------------------------------------


def _console() -> Console:
    from rich.console import Console

    tty = sys.stdout.isatty()
    return Console(file=sys.stdout, highlight=False, width=None if tty else int(os.environ.get("COLUMNS", "200")),
                   no_color=not tty or "NO_COLOR" in os.environ)


def _amounts(value: Mapping[str, float]) -> str:
    return ", ".join(f"{amount:,.2f} {currency}" for currency, amount in value.items())


def _counts(events: Mapping[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in sorted(events.items(), key=lambda kv: -kv[1]))


def _percent(share: float | None) -> str:
    return "" if share is None else f"{share * 100:.1f}%"


def _print_tables(result: Report) -> None:
    from rich.bar import Bar
    from rich.table import Table

    console = _console()
    period = result.to_dict()["period"]
    console.print(f"[bold]capi report[/] {period['since']} .. {period['until']}, by {result.by}")
    table = Table(show_lines=False, header_style="bold", title_justify="left")
    labels = {"ad": ("ad", "channel", "headline"), "channel": ("channel",), "event": ("event",), "day": ("day",)}
    for label in labels[result.by]:
        table.add_column(label, max_width=32 if label == "headline" else None, no_wrap=label != "headline")
    # Ids, counts and bars never wrap; on a narrow terminal the headline, events and value do.
    for label in ("conversations", "converted", "rate", "", "events", "value", "last seen"):
        numeric = label in ("conversations", "converted", "rate")
        table.add_column(label, justify="right" if numeric else "left", no_wrap=numeric or label == "",
                         min_width={"events": 12, "value": 10, "last seen": 10}.get(label))
    top = max((row["converted_conversations"] for row in result.rows[:BARS_SHOWN]), default=0)
    top_events = max((sum(row["events"].values()) for row in result.rows[:BARS_SHOWN]), default=0)
    # The top rows, and the ad-unknown row wherever it sorts: how much is unattributed matters.
    shown = [row for number, row in enumerate(result.rows) if number < ROWS_SHOWN or row.get("ad_id", 0) is None]
    for number, row in enumerate(shown):
        if result.by == "ad":
            keys = [row["ad_id"] or "(ad unknown)", row["channel"] or "", row["headline"] or ""]
        else:
            keys = [str(row[{"channel": "channel", "event": "event_name", "day": "day"}[result.by]] or "(unknown)")]
        # Bars for the top rows: converted conversations, else (no conversation data) events.
        measure, scale = (row["converted_conversations"], top) if top else (sum(row["events"].values()), top_events)
        bar: Any = Bar(scale, 0, measure, width=BAR_WIDTH, color="green") if number < BARS_SHOWN and scale else ""
        table.add_row(*keys, str(row["conversations"]), str(row["converted_conversations"]),
                      _percent(row["conversion_rate"]), bar, _counts(row["events"]), _amounts(row["value"]),
                      (row["last_seen"] or "")[:10])
    if not result.rows:
        console.print("no conversations and no events in this period")
    else:
        console.print(table)
        if len(shown) < len(result.rows):
            console.print(f"... {len(result.rows) - len(shown):,} more rows: --format csv or json lists them all")
    _print_coverage(console, result)
    _print_runs(console, result)


def _print_coverage(console: Console, result: Report) -> None:
    from rich.bar import Bar
    from rich.table import Table

    from capi_cli.report import MATCH_KEY_HINTS

    coverage = result.coverage
    sent = coverage["events_sent"]
    with_ad = f"{coverage['with_ad']} ({_percent(coverage['with_ad'] / sent)})" if sent else "0"
    console.print(
        f"\n[bold]coverage[/]  sent {sent}  with ad {with_ad}  unattributed {coverage['unattributed']}  "
        f"[{'red' if coverage['rejected'] else 'default'}]rejected {coverage['rejected']}[/]  "
        f"[{'yellow' if coverage['uncertain'] else 'default'}]uncertain {coverage['uncertain']}[/]"
    )
    if not sent:
        return
    table = Table(show_header=True, header_style="bold", box=None, padding=(0, 1))
    for label in ("match key", "share", "", "to improve"):
        table.add_column(label, justify="right" if label == "share" else "left")
    for key, share in coverage["match_keys"].items():
        hint = f"add {MATCH_KEY_HINTS[key]}" if share < WEAK_SHARE and key in MATCH_KEY_HINTS else ""
        table.add_row(key, _percent(share), Bar(1.0, 0, share, width=BAR_WIDTH, color="cyan"), hint)
    console.print(table)


def _print_runs(console: Console, result: Report) -> None:
    from rich.table import Table

    if not result.runs:
        console.print("\n[bold]runs[/]  none recorded yet")
        return
    table = Table(title="runs", title_justify="left", header_style="bold", title_style="bold")
    columns = ("started", "inputs", "read", "invalid", "unattributed", "sent", "rejected", "failed",
               "uncertain", "exit")
    for label in columns:
        table.add_column(label, justify="left" if label in ("started", "inputs") else "right",
                         no_wrap=label != "inputs")
    for run in result.runs:
        code = run["exit_code"]
        table.add_row(
            run["started_at"].replace("T", " ")[:16], " ".join(os.path.basename(name) for name in run["inputs"]),
            *(str(run[k]) for k in ("read", "invalid", "unattributed", "sent", "rejected", "failed", "uncertain")),
            f"[{'red' if code else 'green'}]{code}[/]",
        )
    console.print()
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("report")(report)
