"""What every command shares: global state, settings loading, and rendering of results.

stdout carries only results; everything else goes to stderr (SPEC §1).
"""

from __future__ import annotations

import csv
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from capi_cli.config import Settings


class Format(StrEnum):
    table = "table"
    json = "json"
    ndjson = "ndjson"
    csv = "csv"


class TableJson(StrEnum):
    table = "table"
    json = "json"


@dataclass
class AppState:
    profile: str | None = None
    config_file: str | None = None
    quiet: bool = False
    verbose: bool = False
    _settings: dict[tuple[Any, ...], Settings] = field(default_factory=dict)


def state(ctx: typer.Context) -> AppState:
    root = ctx.find_root()
    if not isinstance(root.obj, AppState):
        root.obj = AppState()
    return root.obj


def settings(ctx: typer.Context, **overrides: Any) -> Settings:
    """Settings with command-line overrides (None means 'not given on the command line')."""
    from capi_cli.config import load_settings

    st = state(ctx)
    return load_settings(
        profile=st.profile,
        config_file=st.config_file,
        overrides={k: v for k, v in overrides.items() if v is not None},
    )


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def stderr_is_tty() -> bool:
    return _is_tty(sys.stderr)


def use_color() -> bool:
    return "NO_COLOR" not in os.environ and stderr_is_tty()


# -q of the running command, set by the root callback: warnings and notes are printed from
# places that have no context at hand, and -q silences all of them (SPEC §1).
_quiet = False


def set_quiet(flag: bool) -> None:
    global _quiet
    _quiet = flag


def is_quiet(ctx: typer.Context | None = None) -> bool:
    return _quiet or (ctx is not None and state(ctx).quiet)


def info(ctx: typer.Context | None, message: str) -> None:
    """A summary, note or progress line on stderr (silenced by -q)."""
    if is_quiet(ctx):
        return
    print(message, file=sys.stderr)


def warn(message: str) -> None:
    """A warning on stderr (silenced by -q, which leaves errors and the result only)."""
    if not _quiet:
        print(f"warning: {message}", file=sys.stderr)


def debug(ctx: typer.Context | None, message: str) -> None:
    if ctx is not None and state(ctx).verbose:
        print(f"debug: {message}", file=sys.stderr)


def write_json(document: Any, stream: Any = None) -> None:
    stream = stream or sys.stdout
    json.dump(document, stream, ensure_ascii=False, indent=2, default=str)
    stream.write("\n")


def write_ndjson(records: Iterable[Mapping[str, Any]], stream: Any = None) -> None:
    stream = stream or sys.stdout
    for record in records:
        stream.write(json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=str))
        stream.write("\n")


def write_csv(records: Iterable[Mapping[str, Any]], columns: Sequence[str], stream: Any = None) -> None:
    stream = stream or sys.stdout
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(columns)
    for record in records:
        writer.writerow(["" if record.get(c) is None else record.get(c) for c in columns])


def write_table(
    records: Iterable[Mapping[str, Any]],
    columns: Sequence[str],
    title: str | None = None,
    stream: Any = None,
) -> None:
    """A rich table for a person at a terminal; anywhere else (a pipe, a file) a plain ASCII table,
    written in one pass: rich lays out every cell, which took 11 s for 20,000 referrals."""
    stream = stream or sys.stdout
    if not _is_tty(stream):
        write_plain_table(records, columns, title, stream)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, show_lines=False, header_style="bold")
    for c in columns:
        table.add_column(c, overflow="fold")
    for record in records:
        table.add_row(*["" if record.get(c) is None else str(record.get(c)) for c in columns])
    Console(file=stream, no_color="NO_COLOR" in os.environ).print(table)


def write_plain_table(
    records: Iterable[Mapping[str, Any]], columns: Sequence[str], title: str | None = None, stream: Any = None
) -> None:
    stream = stream or sys.stdout
    cells = [[" ".join(str(v).split()) if (v := record.get(c)) is not None else "" for c in columns]
             for record in records]
    widths = [max([len(c), *(len(row[n]) for row in cells)]) for n, c in enumerate(columns)]
    rule = "+" + "+".join("-" * (w + 2) for w in widths) + "+\n"
    if title:
        stream.write(title + "\n")
    stream.write(rule + "| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)) + " |\n" + rule)
    stream.writelines("| " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) + " |\n"
                      for row in cells)
    stream.write(rule)


# -o FILE without --format: the format its name says, else NDJSON (SPEC §1).
_FORMAT_BY_EXTENSION = {".ndjson": "ndjson", ".jsonl": "ndjson", ".json": "json", ".csv": "csv"}


def file_format(path: str | None, fmt: Format | TableJson | str, given: bool | None) -> str:
    """The format of a result written to -o FILE: --format when it was given, else the file's
    extension (.ndjson/.jsonl, .json, .csv), else NDJSON. `given` None: not known, so a table
    is taken for the default (a table is for a person at a terminal) and any other for a choice."""
    fmt = str(getattr(fmt, "value", fmt))
    if path is None or path == "-" or (given if given is not None else fmt != "table"):
        return fmt
    return _FORMAT_BY_EXTENSION.get(os.path.splitext(path)[1].lower(), "ndjson")


def _format_given() -> bool | None:
    """Whether this command's --format came from the command line; None when that is not known."""
    try:
        from typer._click.core import ParameterSource
        from typer._click.globals import get_current_context
    except ImportError:  # a Typer without its own click copy
        return None
    ctx = get_current_context(silent=True)
    source = ctx.get_parameter_source("fmt") if ctx is not None else None
    return None if source is None else source is ParameterSource.COMMANDLINE


def render(
    records: Sequence[Mapping[str, Any]],
    fmt: Format | TableJson | str,
    columns: Sequence[str],
    table_columns: Sequence[str] | None = None,
    stream: Any = None,
) -> None:
    """Render a list of records in the chosen format; `columns` are the stable JSON/CSV keys.
    To an -o FILE without --format, in the format its name says (file_format)."""
    fmt = getattr(fmt, "value", fmt)
    path = getattr(stream, "capi_path", None)
    if path is not None:
        fmt = file_format(path, fmt, _format_given())
    if fmt == "json":
        write_json([{c: r.get(c) for c in columns} for r in records], stream)
    elif fmt == "ndjson":
        write_ndjson(({c: r.get(c) for c in columns} for r in records), stream)
    elif fmt == "csv":
        write_csv(records, columns, stream)
    else:
        write_table(records, table_columns or columns, stream=stream)


def open_output(path: str | None) -> Any:
    """Open -o FILE for writing (stdout when None or '-'); created 0600 since it may hold ids."""
    if path is None or path == "-":
        return sys.stdout
    from capi_cli.errors import UsageError

    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    except OSError as exc:
        raise UsageError(f"{path}: cannot write output: {exc.strerror}") from None
    stream = os.fdopen(fd, "w", encoding="utf-8", newline="")
    stream.capi_path = path  # type: ignore[attr-defined]  # render picks a file's format from its name (file_format)
    return stream
