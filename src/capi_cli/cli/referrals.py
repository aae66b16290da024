"""`capi referrals list|lookup`: the ad referrals that `extract-referral` stored in the ledger."""

from __future__ import annotations

import time

import typer

from capi_cli.cli.common import Format, info, render, settings
from capi_cli.errors import UsageError

TABLE_COLUMNS = ("channel", "user_id", "ctwa_clid", "ad_id", "business_id", "timestamp", "kind", "origin")

referrals_app = typer.Typer(
    name="referrals",
    no_args_is_help=True,
    help="Show the ad referrals stored by extract-referral.\n\nExample: capi referrals lookup '+90 532 123 45 67'",
)


def register(app: typer.Typer) -> None:
    app.add_typer(referrals_app, name="referrals")


@referrals_app.command("list")
def list_cmd(
    ctx: typer.Context,
    channel: str = typer.Option(None, "--channel", help="whatsapp, messenger or instagram."),
    since: str = typer.Option(
        None, "--since", help="Only referrals at or after WHEN (ISO date/time, or 2d, 12h)."
    ),
    user: str = typer.Option(
        None, "--user", help="Only this user: phone in any writing, BSUID, PSID or IGSID."
    ),
    limit: int = typer.Option(None, "--limit", min=1, help="At most N referrals, newest first."),
    fmt: Format = typer.Option(Format.table, "--format", help="Output format."),
) -> None:
    """List stored referrals, newest first.

    Example: capi referrals list --channel whatsapp --since 7d --format csv
    """
    from capi_cli.ledger import REFERRAL_COLUMNS, open_ledger
    from capi_cli.webhooks import CHANNELS

    if channel is not None and channel not in CHANNELS:
        raise UsageError(f"--channel must be one of {', '.join(CHANNELS)}, not {channel!r}")
    since_seconds = None
    if since:
        from capi_cli.events.times import parse_when, timezone_named

        since_seconds = parse_when(since, time.time(), timezone_named(settings(ctx).timezone), "--since")
    with open_ledger(settings(ctx).ledger) as ledger:
        records = ledger.referrals.list_referrals(channel=channel, since=since_seconds, user=user, limit=limit)
    render(records, fmt, REFERRAL_COLUMNS, TABLE_COLUMNS)
    info(ctx, f"{len(records)} referral(s)")


@referrals_app.command("lookup")
def lookup_cmd(
    ctx: typer.Context,
    user_id: str = typer.Argument(..., metavar="USER_ID", help="Phone (any writing), BSUID, PSID or IGSID."),
    fmt: Format = typer.Option(Format.table, "--format", help="Output format."),
) -> None:
    """Show the stored referrals of one user, newest first.

    Example: capi referrals lookup 905321234567 --format json
    """
    from capi_cli.ledger import REFERRAL_COLUMNS, open_ledger

    if not user_id.strip():
        raise UsageError("USER_ID is empty: give a phone number, BSUID, PSID or IGSID")
    config = settings(ctx)
    with open_ledger(config.ledger) as ledger:
        records = ledger.referrals.lookup_referrals(user_id)
        # A phone as `validate` reads it (default_country for numbers without a country code), so
        # a lookup finds what the join finds; the input as typed is still looked up (PSID, BSUID).
        phone = _phone_as_validate_reads_it(user_id, config.default_country)
        if phone is not None:
            seen = {(r["channel"], r["message_id"], r["origin"]) for r in records}
            more = [r for r in ledger.referrals.lookup_referrals(phone) if (r["channel"], r["message_id"], r["origin"]) not in seen]
            if more:
                records = sorted([*records, *more], key=lambda r: r["timestamp"] or "", reverse=True)
    render(records, fmt, REFERRAL_COLUMNS, TABLE_COLUMNS)
    if not records:
        info(ctx, f"no referral stored for {user_id.strip()}")


def _phone_as_validate_reads_it(text: str, default_country: str | None) -> str | None:
    """`+<digits>` of a phone normalised like an events row's `phone`; None when it is no phone."""
    from capi_cli.events.normalize import FieldError, normalize

    if not any(c.isdigit() for c in text) or any(c.isalpha() for c in text):
        return None
    try:
        digits = normalize("ph", text, default_country)
    except FieldError:
        return None
    return "+" + digits if digits.isdigit() else None
