"""The reports a person reads, rendered in one place: a send's (`render_send`), a validation's
(`render_validation`) and a capture's summary line (`capture_summary`). JSON goes to stdout;
the human report of `validate` to stdout, everything else of a report to stderr (SPEC §1)."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import typer

from capi_cli.cli import input_options as opt
from capi_cli.cli.common import TableJson, info, warn, write_json
from capi_cli.cli.progress import summary_line
from capi_cli.errors import DataError

if TYPE_CHECKING:
    from capi_cli.delivery.run import SendReport
    from capi_cli.events.validate import ValidationReport
    from capi_cli.webhooks.capture import CaptureReport

PROBLEM_LINES = 20  # problems printed on stderr; `capi validate` gives the full report
_SHOWN_PER_CODE = 20  # the human validation report shows this many problems per code; json has all


def render_send(ctx: typer.Context, report: SendReport, fmt: TableJson) -> None:
    """A send's report: warnings, refused / uncertain / failed events, the summary (json on stdout)."""
    summary = report.summary
    for message in report.warnings:
        warn(message)
    if report.strict_blocked:
        print(f"capi: --strict: {report.errors} invalid records, nothing was sent", file=sys.stderr)
    for kind, events in (
        ("rejected", summary.rejected_events),
        ("uncertain", summary.uncertain_events),
        ("failed", summary.failed_events),
    ):
        for event in events[:PROBLEM_LINES]:
            where = f"{event.source}:{event.line}: " if event.source and event.line else ""
            print(f"{where}{kind}: {event.event_name} {event.event_id}: {event.message}", file=sys.stderr)
        more = getattr(summary, kind) - min(len(events), PROBLEM_LINES)
        if events and more > 0:
            print(f"... {more:,} more {kind} events (`capi ledger list --status {kind}`)", file=sys.stderr)
    if summary.uncertain_events:
        info(ctx, "uncertain events may have been counted by Meta; send them again only deliberately: "
                  "capi send ... --resend-uncertain")
    if summary.fatal is not None:
        print(f"capi: error: {summary.fatal.message}", file=sys.stderr)
    if summary.interrupted:
        print("capi: interrupted: in-flight batches were settled; re-run to continue", file=sys.stderr)
    if report.pending_uncertain and not summary.uncertain:
        warn(
            f"{report.pending_uncertain} uncertain events from earlier runs: `capi ledger list --status uncertain`"
        )
    if summary.read == 0 and summary.fatal is None:
        info(ctx, "note: no records to send (a header only?)")
    if fmt is TableJson.json:
        write_json(summary.to_dict())
    info(ctx, summary_line(summary))


def render_validation(ctx: typer.Context, report: ValidationReport, fmt: TableJson) -> None:
    """A validation's report (json, or grouped by code), its notes and summary; exit 1 if invalid."""
    if fmt == TableJson.json:
        write_json(report.to_dict())
    else:
        _print_validation(report)
    tally = report.tally
    if tally.records == 0 and not tally.filtered:
        info(ctx, "note: no records to check (a header only?)")
    from capi_cli.events.validate import all_unattributed_warning

    for note in opt.input_messages(all_unattributed_warning(tally.valid, tally.unattributed), tally.filtered):
        info(ctx, note)
    unattributed = f", {tally.unattributed} unattributed (not sent)" if tally.unattributed else ""
    info(ctx, f"{tally.records} record(s): {tally.valid} valid, {tally.invalid} invalid, {tally.attributed} attributed "
              f"from stored referrals{unattributed}")
    if not report.ok:
        raise DataError(f"{tally.invalid} invalid record(s); fix them or leave them out (send skips them, --strict refuses)")


def _print_validation(report: ValidationReport) -> None:
    from capi_cli.events.validate import grouped

    out = sys.stdout
    if not report.problems:
        out.write("no problems found\n")
        return
    for code, advice, problems in grouped(report.problems):
        severity = problems[0].severity
        out.write(f"{code} ({severity}, {len(problems)}): {advice}\n")
        for problem in problems[:_SHOWN_PER_CODE]:
            where = f"{problem.source}:{problem.line}" if problem.line else problem.source
            out.write(f"  {where}  {problem.field or '-'}  {problem.message}\n")
        if len(problems) > _SHOWN_PER_CODE:
            out.write(f"  ... and {len(problems) - _SHOWN_PER_CODE} more (--format json lists them all)\n")
        out.write("\n")


def capture_summary(report: CaptureReport) -> str:
    """`extract-referral`'s one summary line."""
    stats = report.stats
    stored = f" (stored {report.stored_new} new, {report.stored_already} already known)" if report.storing else ""
    non_ad = f", non_ad {stats.non_ad}" if stats.non_ad else ""
    extra = f", duplicates {stats.duplicates}" if stats.duplicates else ""
    if stats.merged:
        extra += f" ({stats.merged} merged)"
    if stats.filtered:
        extra += f", filtered out {stats.filtered}"
    if stats.unrecognised:
        extra += f", unrecognised {stats.unrecognised}"
    return (
        f"files {stats.files}, deliveries {stats.deliveries}, messages {stats.messages}, "
        f"referrals {stats.referrals}{stored}{non_ad}, skipped {stats.skipped}{extra}, "
        f"unreadable {stats.unreadable}"
    )
