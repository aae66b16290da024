"""Event times and the --since/--until bounds, as Unix seconds."""

from __future__ import annotations

import re
from datetime import date, datetime, tzinfo
from functools import lru_cache
from typing import Any

from capi_cli.errors import ConfigError, UsageError
from capi_cli.events.normalize import FieldError

# Unix times at or above this are milliseconds (1e11 s is the year 5138; 1e11 ms is March 1973).
_MS_THRESHOLD = 100_000_000_000
_MS_LIMIT = 100_000_000_000_000
_NUMBER = re.compile(r"\d+(?:\.\d*)?")
_RELATIVE = re.compile(r"(\d+)\s*(s|m|h|d|w)", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@lru_cache(maxsize=16)
def timezone_named(name: str) -> tzinfo:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"timezone {name!r} is not an IANA time zone (e.g. Europe/Istanbul); fix CAPI_TIMEZONE") from None


def _from_datetime(moment: datetime, tz: tzinfo) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=tz)
    return int(moment.timestamp())


def _from_number(number: float, original: Any) -> int:
    if number < 0 or number >= _MS_LIMIT:
        raise FieldError("event_time", "bad_timestamp", f"event_time {original!r} is not a Unix time")
    if number >= _MS_THRESHOLD:
        number /= 1000
    return int(number)


def parse_event_time(value: Any, tz: tzinfo, day_first: bool | None = None, date_format: str | None = None) -> int:
    """Unix seconds from Unix seconds or milliseconds (detected), ISO 8601, or a date/datetime;
    `28/11/2026 14:05` when unambiguous or `day_first` says how; exactly `date_format` when given.

    Naive times are read in `tz`. Raises FieldError(code=bad_timestamp).
    """
    if date_format is not None and isinstance(value, str):
        return _from_datetime(_read_date(value, None, date_format), tz)
    if isinstance(value, bool):
        raise FieldError("event_time", "bad_timestamp", f"event_time {value!r} is not a time")
    if isinstance(value, int | float):
        return _from_number(float(value), value)
    if isinstance(value, datetime):
        return _from_datetime(value, tz)
    if isinstance(value, date):
        return _from_datetime(datetime(value.year, value.month, value.day), tz)
    text = str(value).strip()
    if _NUMBER.fullmatch(text):
        return _from_number(float(text), value)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        moment = _read_date(text, day_first, None)
    return _from_datetime(moment, tz)


def _read_date(text: str, day_first: bool | None, date_format: str | None) -> datetime:
    """Exports' own ways of writing a time (inputs.dates), as bad_timestamp when unreadable."""
    from capi_cli.inputs.dates import DateUnreadable, read_date

    try:
        return read_date(text, day_first, date_format)
    except DateUnreadable as exc:
        hint = "" if date_format else "; use Unix seconds/milliseconds or ISO 8601 (2026-03-01T14:30:00+03:00)"
        raise FieldError("event_time", "bad_timestamp", f"event_time {exc}{hint}") from None


def parse_when(text: str, now: float, tz: tzinfo, option: str = "--since") -> int:
    """A --since/--until bound: ISO date or date-time (naive in `tz`), or relative like `2d`, `12h`, `1w`."""
    raw = text.strip()
    relative = _RELATIVE.fullmatch(raw)
    if relative is not None:
        amount, unit = int(relative.group(1)), relative.group(2).lower()
        return int(now - amount * _UNIT_SECONDS[unit])
    if _NUMBER.fullmatch(raw):
        try:
            return _from_number(float(raw), raw)
        except FieldError:
            pass
    else:
        try:
            return _from_datetime(datetime.fromisoformat(raw), tz)
        except ValueError:
            pass
    raise UsageError(f"{option} {text!r}: use an ISO date/time (2026-03-01, 2026-03-01T12:00) or a relative age (2d, 12h, 30m, 1w)")
