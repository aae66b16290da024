"""The input options `validate` and `send` share (SPEC §4): presets, filters, grouping, local formats,
and the two strict switches. Each command lists them in its signature; this turns them into values."""

from __future__ import annotations

from typing import Any

import typer

PRESET_HELP = "Built-in mapping of a platform's export: shopify, woocommerce, razorpay (`capi fields --preset NAME`)."
WHERE_HELP = "Keep only rows where COLUMN=VALUE (VALUE|VALUE alternatives, != negates); repeatable, all must hold."
GROUP_HELP = "Adjacent rows with the same COLUMN value (an order's line items) make one event with contents."
LOCALE_HELP = "Locale of amounts and dates in the input: en_IN, pt_BR, tr_TR, id_ID... (env CAPI_LOCALE)."
DATE_FORMAT_HELP = "strptime format of event_time, e.g. '%d/%m/%Y %H:%M'."
STRICT_FIELDS_HELP = "A bad optional customer field (ge, db, em...) is an error instead of being left out."
REQUIRE_ATTRIBUTION_HELP = "An event with no click id and no stored referral is an error instead of `unattributed`."


def preset_option() -> Any:
    return typer.Option(None, "--preset", metavar="NAME", help=PRESET_HELP)


def where_option() -> Any:
    return typer.Option([], "--where", metavar="EXPR", help=WHERE_HELP)


def group_option() -> Any:
    return typer.Option(None, "--group-by", metavar="COLUMN", help=GROUP_HELP)


def locale_option() -> Any:
    return typer.Option(None, "--locale", metavar="LOCALE", help=LOCALE_HELP)


def date_format_option() -> Any:
    return typer.Option(None, "--date-format", metavar="FMT", help=DATE_FORMAT_HELP)


def strict_fields_option() -> Any:
    return typer.Option(False, "--strict-fields", help=STRICT_FIELDS_HELP)


def require_attribution_option() -> Any:
    return typer.Option(False, "--require-attribution", help=REQUIRE_ATTRIBUTION_HELP)


def reshape(preset: str | None, where: list[str], group_by: str | None, date_format: str | None) -> Any:
    """inputs.reshape.Reshape of the options, or None when none is given (the common case)."""
    if not (preset or where or group_by or date_format):
        return None
    from capi_cli.inputs.reshape import Reshape

    return Reshape(preset=preset, where=tuple(where), group_by=group_by, date_format=date_format)


def input_messages(unattributed_warning: str | None, filtered: int) -> list[str]:
    """Notes for stderr after a run."""
    notes = []
    if filtered:
        notes.append(f"{filtered} row(s) left out by --where")
    if unattributed_warning:
        notes.append(f"warning: {unattributed_warning}")
    return notes
