"""Dates written day-first or month-first (`28/11/2026 14:05`), read only when unambiguous or when a
locale or `--date-format` says how (SPEC §4)."""

from __future__ import annotations

import re
from datetime import datetime

from capi_cli.inputs.locales import ascii_digits

_NUMERIC = re.compile(
    r"(\d{1,2})[./-](\d{1,2})[./-](\d{4}|\d{2})(?:[ T,]+(\d{1,2}):(\d{2})(?::(\d{2}))?\s*([AaPp][Mm])?)?"
)
# Exports that write ISO dates with a space before the offset (Shopify: `2026-11-28 14:05:11 +0530`).
_SPACED_OFFSET = ("%Y-%m-%d %H:%M:%S %z", "%Y-%m-%d %H:%M %z")


class DateUnreadable(ValueError):
    pass


def read_date(text: str, day_first: bool | None = None, date_format: str | None = None) -> datetime:
    """A datetime (naive unless the text has an offset); DateUnreadable says why not.

    `day_first` None: only dates whose day is above 12 (or equal to the month) are read."""
    raw = ascii_digits(text.strip())
    if date_format is not None:
        try:
            return datetime.strptime(raw, date_format)
        except ValueError:
            raise DateUnreadable(f"{text!r} does not match --date-format {date_format!r}") from None
    for pattern in _SPACED_OFFSET:
        try:
            return datetime.strptime(raw, pattern)
        except ValueError:
            pass
    match = _NUMERIC.fullmatch(raw)
    if match is None:
        raise DateUnreadable(f"{text!r} is not a date")
    first, second, year_text, hour, minute, second_of_minute, half = match.groups()
    a, b = int(first), int(second)
    if a > 12 >= b or (a == b):
        day, month = a, b
    elif b > 12 >= a:
        day, month = b, a
    elif day_first is None:
        raise DateUnreadable(f"{text!r} could be day/month or month/day: give --locale or --date-format")
    else:
        day, month = (a, b) if day_first else (b, a)
    year = int(year_text) + (2000 if len(year_text) == 2 else 0)
    hours = int(hour or 0)
    if half:
        hours = hours % 12 + (12 if half.lower() == "pm" else 0)
    try:
        return datetime(year, month, day, hours, int(minute or 0), int(second_of_minute or 0))
    except ValueError:
        raise DateUnreadable(f"{text!r} is not a calendar date") from None
