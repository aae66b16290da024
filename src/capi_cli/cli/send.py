"""`capi send`: options in, one core call (`delivery.run.run_send`), the report out."""

from __future__ import annotations

import signal
import sys
import threading
from typing import TYPE_CHECKING, Any

import typer

from capi_cli.cli import input_options as opt
from capi_cli.cli.common import TableJson, open_output, settings, state, warn
from capi_cli.cli.progress import DeliveryBar, estimate_records, print_problem
from capi_cli.cli.reports import PROBLEM_LINES, render_send

if TYPE_CHECKING:
    from capi_cli.config import Settings
    from capi_cli.delivery.run import SendRequest


def send(
    ctx: typer.Context,
    files: list[str] = typer.Option(
        ..., "--file", "-f", help="Events file (.csv .tsv .yaml .json .ndjson, or - for stdin); repeatable."
    ),
    map_file: str = typer.Option(None, "--map", help="YAML mapping of your column names to capi's fields."),
    sets: list[str] = typer.Option([], "--set", help="KEY=VALUE set on every record; repeatable."),
    input_format: str = typer.Option(
        None, "--input-format", help="csv|tsv|yaml|json|ndjson when the extension does not say."
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Do everything but the POST; the ledger is not changed."
    ),
    output: str = typer.Option(
        None, "-o", "--output", help="Write the events as sent (or as they would be) to FILE as NDJSON."
    ),
    test_event_code: str = typer.Option(
        None, "--test-event-code", help="Send to Events Manager's Test Events tab."
    ),
    batch_size: int = typer.Option(None, "--batch-size", help="Events per request (1-1000, default 1000)."),
    concurrency: int = typer.Option(None, "--concurrency", help="Requests in flight at once (default 4)."),
    strict: bool = typer.Option(False, "--strict", help="Send nothing if any record is invalid."),
    resend: bool = typer.Option(
        False, "--resend", help="Also send events the ledger records as sent (double counts!)."
    ),
    resend_uncertain: bool = typer.Option(
        False, "--resend-uncertain", help="Send again the events whose earlier outcome is unknown."
    ),
    since: str = typer.Option(
        None, "--since", help="Only events at or after WHEN (2026-11-01, 2026-11-01T10:00, 2d, 12h)."
    ),
    until: str = typer.Option(None, "--until", help="Only events at or before WHEN."),
    limit: int = typer.Option(None, "--limit", min=1, help="Stop after N events."),
    fmt: TableJson = typer.Option(TableJson.table, "--format", help="json prints the summary on stdout."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress bar, even on a terminal."),
    preset: str = opt.preset_option(),
    where: list[str] = opt.where_option(),
    group_by: str = opt.group_option(),
    locale: str = opt.locale_option(),
    date_format: str = opt.date_format_option(),
    strict_fields: bool = opt.strict_fields_option(),
    require_attribution: bool = opt.require_attribution_option(),
    shard: str = typer.Option(
        None, "--shard", metavar="K/N",
        help="Send only the K-th of N shares of the events (hosts splitting one input; others count as skipped).",
    ),
) -> None:
    """Send conversion events to the dataset, each exactly once (the ledger remembers what was sent).

    Example: capi send --file orders.csv --map columns.yaml --set currency=INR
    """
    from capi_cli.delivery.run import SendRequest
    from capi_cli.events import parallel
    from capi_cli.events.pipeline import BuildOptions
    from capi_cli.events.shard import Shard

    with parallel.warmed(files):
        s = settings(ctx, batch_size=batch_size, concurrency=concurrency, locale=locale)
        build = BuildOptions(
            map_file=map_file, sets=sets, input_format=input_format, since=since, until=until, limit=limit,
            strict_fields=strict_fields, require_attribution=require_attribution,
            reshape=opt.reshape(preset, where, group_by, date_format),
        )
        request = SendRequest(
            files=files, build=build, dry_run=dry_run, test_event_code=test_event_code, strict=strict,
            resend=resend, resend_uncertain=resend_uncertain, shard=Shard.parse(shard) if shard is not None else None,
        )
        _run(ctx, s, request, output, fmt, no_progress)


def _run(ctx: typer.Context, s: Settings, request: SendRequest, output: str | None, fmt: TableJson,
         no_progress: bool) -> None:
    """The run and its rendering: progress on a terminal, problems on stderr, the report."""
    from capi_cli.delivery.run import run_send

    st = state(ctx)
    stream = request.output = open_output(output) if output else None
    if request.resend:
        warn("--resend sends again events Meta already counted: they will be counted twice")
    shown = 0

    def on_problem(problem: Any) -> None:
        nonlocal shown
        if problem.severity == "error" or not st.quiet:
            if shown < PROBLEM_LINES:
                print_problem(problem)
            shown += 1

    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    show = not (no_progress or st.quiet)
    bar = DeliveryBar(enabled=show, dry_run=request.dry_run, total=estimate_records(request.files) if show else None)
    try:
        try:
            with bar:
                report = run_send(s, request, on_problem=on_problem, progress=bar.update, stop=stop)
        finally:
            if stream is not None and stream is not sys.stdout:
                stream.close()
        if stop.is_set() and report.summary.fatal is None:
            # A SIGTERM after the last batch left still ends in 130: the caller asked for a stop
            # and must not read "everything done" (nor be killed by the default handler mid-report).
            report.summary.interrupted = True
        if shown > PROBLEM_LINES:
            print(f"... {shown - PROBLEM_LINES} more problems; `capi validate` lists them all", file=sys.stderr)
        render_send(ctx, report, fmt)
    finally:
        signal.signal(signal.SIGTERM, previous)
    raise typer.Exit(int(report.exit_code))


def register(app: typer.Typer) -> None:
    app.command("send")(send)
