"""`capi validate`: every check `send` runs, nothing sent; exit 1 if any record is invalid."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from capi_cli.cli.common import TableJson, info, settings, write_json
from capi_cli.errors import DataError

if TYPE_CHECKING:
    from capi_cli.events.validate import ValidationReport

# The human report shows this many problems per code; --format json has them all.
_SHOWN_PER_CODE = 20


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)


def validate(
    ctx: typer.Context,
    paths: list[str] = typer.Argument(..., metavar="PATH", help="Event files (.csv .tsv .yaml .json .ndjson), or - for stdin."),
    map_file: Path = typer.Option(None, "--map", metavar="MAPPING.yaml", help="Rename your columns: {'Order Total': value}."),
    sets: list[str] = typer.Option([], "--set", metavar="KEY=VALUE", help="A constant for every row that lacks it (repeatable)."),
    fmt: TableJson = typer.Option(TableJson.table, "--format", help="table (grouped report) or json."),
    input_format: str = typer.Option(None, "--input-format", help="csv, tsv, yaml, json or ndjson (default: by extension)."),
) -> None:
    """Check event files as `send` would, without sending anything.

    Example: capi validate orders.csv --map columns.yaml --set currency=EUR
    """
    from capi_cli.events import parallel

    parallel.warm_up(paths)
    try:
        from capi_cli.events.pipeline import BuildOptions, iter_events, referral_store
        from capi_cli.events.validate import collect

        current = settings(ctx)
        options = BuildOptions(map_file=map_file, sets=sets, input_format=input_format)
        referrals = referral_store(current)
        try:
            report = collect(iter_events(paths, current, options, referrals=referrals))
        finally:
            if referrals is not None:
                referrals.close()
    finally:
        parallel.cool_down()

    if fmt == TableJson.json:
        write_json(report.to_dict())
    else:
        _print_report(report)
    tally = report.tally
    if tally.records == 0:
        info(ctx, "note: no records to check (a header only?)")
    info(ctx, f"{tally.records} record(s): {tally.valid} valid, {tally.invalid} invalid, {tally.attributed} attributed from stored referrals")
    if not report.ok:
        raise DataError(f"{tally.invalid} invalid record(s); fix them or leave them out (send skips them, --strict refuses)")


def _print_report(report: ValidationReport) -> None:
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
