"""`capi validate`: every check `send` runs, nothing sent; exit 1 if any record is invalid."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from capi_cli.cli import input_options as opt
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
    preset: str = opt.preset_option(),
    where: list[str] = opt.where_option(),
    group_by: str = opt.group_option(),
    locale: str = opt.locale_option(),
    date_format: str = opt.date_format_option(),
    strict_fields: bool = opt.strict_fields_option(),
    require_attribution: bool = opt.require_attribution_option(),
) -> None:
    """Check event files as `send` would, without sending anything.

    Example: capi validate orders.csv --map columns.yaml --set currency=EUR
    """
    from capi_cli.events import parallel
    from capi_cli.events.pipeline import BuildOptions, validate_files

    with parallel.warmed(paths):
        options = BuildOptions(map_file=map_file, sets=sets, input_format=input_format,
                               strict_fields=strict_fields, require_attribution=require_attribution,
                               reshape=opt.reshape(preset, where, group_by, date_format))
        report = validate_files(paths, settings(ctx, locale=locale), options)

    if fmt == TableJson.json:
        write_json(report.to_dict())
    else:
        _print_report(report)
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
