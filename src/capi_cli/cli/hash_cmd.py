"""`capi hash FIELD VALUE...`: the SHA-256 Meta receives for a customer field, to check a match key by hand."""

from __future__ import annotations

import sys

import typer

from capi_cli.cli.common import TableJson, settings, write_json
from capi_cli.errors import DataError, UsageError


def register(app: typer.Typer) -> None:
    app.command("hash")(hash_values)


def hash_values(
    ctx: typer.Context,
    field: str = typer.Argument(..., metavar="FIELD", help="em, ph, fn, ln, ge, db, ct, st, zp, country, external_id (or email, phone, ...)."),
    values: list[str] = typer.Argument(..., metavar="VALUE", help="One or more values."),
    normalized: bool = typer.Option(False, "--normalized", help="Also print the normalized value that is hashed."),
    fmt: TableJson = typer.Option(TableJson.table, "--format", help="table (one line per value) or json."),
) -> None:
    """Print the hash of each VALUE as capi sends it (one line each: [normalized<TAB>]hash).

    Example: capi hash ph '+1 (415) 555-2671' --normalized
    """
    from capi_cli.events.fields import resolve_name
    from capi_cli.events.normalize import FieldError, is_hashed, normalize, sha256_hex
    from capi_cli.rules import HASHED_FIELDS

    key = resolve_name(field)
    if key == "wa_id":
        key = "ph"
    if key not in HASHED_FIELDS:
        raise UsageError(f"FIELD {field!r} is not hashed; use one of {', '.join(HASHED_FIELDS)}")
    default_country = settings(ctx).default_country
    rows: list[dict[str, str | None]] = []
    failed = 0
    for value in values:
        try:
            clean = normalize(key, value, default_country)
        except FieldError as exc:
            failed += 1
            print(f"capi: error: {key}: {exc.message}", file=sys.stderr)
            continue
        digest = clean if is_hashed(clean) else sha256_hex(clean)
        row: dict[str, str | None] = {"field": key, "value": value, "hash": digest}
        if normalized:
            row["normalized"] = clean
        rows.append(row)
    if fmt == TableJson.json:
        write_json(rows)
    else:
        for row in rows:
            sys.stdout.write(f"{row['normalized']}\t{row['hash']}\n" if normalized else f"{row['hash']}\n")
    if failed:
        raise DataError(f"{failed} value(s) could not be normalized")
