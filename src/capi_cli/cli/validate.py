"""`capi validate`: every check `send` runs, nothing sent; exit 1 if any record is invalid."""

from __future__ import annotations

from pathlib import Path

import typer

from capi_cli.cli import input_options as opt
from capi_cli.cli.common import TableJson, settings
from capi_cli.cli.reports import render_validation


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

    render_validation(ctx, report, fmt)
