"""Reading → mapping → validating → building: the events `validate` checks and `send` sends.

`iter_events` streams: it holds one record at a time plus a compact set of the event ids seen
(8 bytes each), so memory stays flat with file size.
"""

from __future__ import annotations

import hashlib
import time
from array import array
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from capi_cli.events.build import EventBuilder, ReferralStore
from capi_cli.events.fields import FieldMapper, load_map, parse_sets
from capi_cli.events.jsontext import payload_json
from capi_cli.events.readers import Malformed, read_records, source_name
from capi_cli.events.times import parse_when
from capi_cli.events.validate import ERROR, WARNING, Problem

__all__ = ["BuildOptions", "BuiltEvent", "Problem", "iter_events", "payload_json"]

When = int | float | datetime | str | None


@dataclass
class BuildOptions:
    """What the command line adds to the settings. `strict` is the caller's business."""

    map_file: str | Path | None = None
    sets: Sequence[str] | Mapping[str, Any] = ()
    input_format: str | None = None
    since: When = None  # Unix seconds, datetime, or text as --since takes it (2026-03-01, 2d)
    until: When = None
    limit: int | None = None
    now: float | None = None  # fixed "now" (tests); default time.time() at the start of the run
    attribution_window_days: float | None = None  # default: settings.attribution_window_days


class BuiltEvent:
    """One event ready to send: `payload` is exactly what goes to Meta."""

    __slots__ = (
        "event_name", "event_id", "event_time", "payload", "source", "line", "record", "attributed", "time_given",
        "_hash", "_json",
    )

    def __init__(
        self,
        event_name: str,
        event_id: str,
        event_time: int,
        payload: dict[str, Any],
        source: str,
        line: int,
        record: int,
        attributed: bool,
        time_given: bool = True,
    ) -> None:
        self.event_name = event_name
        self.event_id = event_id
        self.event_time = event_time
        self.payload = payload
        self.source = source
        self.line = line
        self.record = record
        self.attributed = attributed
        self.time_given = time_given
        self._hash: str | None = None
        self._json: str | None = None

    @property
    def payload_hash(self) -> str:
        """SHA-256 hex of `payload_json`: the builder fixes the key order, so the same row always
        gives the same JSON and the same hash (computed when first asked for).

        A row without event_time is sent with the time of the run; that time is left out of the
        hash, or an unchanged row Meta refused would look edited (and be retried) on every run."""
        if self._hash is None:
            text = self.payload_json
            if not self.time_given:
                text = text.replace(f'"event_time":{self.event_time},', "", 1)
            self._hash = hashlib.sha256(text.encode("utf-8")).hexdigest()
        return self._hash

    @property
    def payload_json(self) -> str:
        """The payload as compact JSON (UTF-8, no spaces): write this rather than json.dumps(payload)."""
        if self._json is None:
            self._json = payload_json(self.payload)
        return self._json

    def __repr__(self) -> str:
        return f"BuiltEvent({self.event_name!r}, {self.event_id!r}, {self.source}:{self.line})"


class SeenIds:
    """A set of 64-bit fingerprints in one flat array (open addressing): 8-16 bytes an id."""

    __slots__ = ("_table", "_mask", "_count")

    def __init__(self, capacity: int = 1 << 16) -> None:
        self._table = array("Q", bytes(8 * capacity))
        self._mask = capacity - 1
        self._count = 0

    def add(self, key: str) -> bool:
        """Add `key`; True when it was already there."""
        # hash() is salted per process, which is fine: the set lives for one run. 0 marks a free slot.
        fingerprint = hash(key) & 0xFFFFFFFFFFFFFFFF or 1
        table = self._table
        mask = self._mask
        slot = fingerprint & mask
        while True:
            found = table[slot]
            if found == 0:
                table[slot] = fingerprint
                self._count += 1
                if self._count * 2 > mask:
                    self._grow()
                return False
            if found == fingerprint:
                return True
            slot = (slot + 1) & mask

    def _grow(self) -> None:
        old = self._table
        size = len(old) * 2
        self._table = table = array("Q", bytes(8 * size))
        self._mask = mask = size - 1
        for fingerprint in old:
            if fingerprint:
                slot = fingerprint & mask
                while table[slot]:
                    slot = (slot + 1) & mask
                table[slot] = fingerprint

    def __len__(self) -> int:
        return self._count


def referral_store(settings: Any) -> Any:
    """The ledger holding stored referrals, or None when there is none yet (nothing is created)."""
    location = str(getattr(settings, "ledger", "") or "")
    if not location or ("://" not in location and not Path(location).exists()):
        return None
    from capi_cli.ledger import Ledger

    return Ledger.open(location)


def _bound(value: When, now: float, builder: EventBuilder, option: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=builder.tz)
        return int(value.timestamp())
    if isinstance(value, int | float):
        return int(value)
    return parse_when(value, now, builder.tz, option)


def iter_events(
    paths: Iterable[str | Path],
    settings: Any,
    options: BuildOptions | None = None,
    referrals: ReferralStore | None = None,
    skip: Callable[[str, str], bool] | None = None,
) -> Iterator[BuiltEvent | Problem]:
    """Every input record as a BuiltEvent, or as the Problems that keep it from being sent.

    Warnings (unknown columns) come as Problems too, before the record they were found in.
    Records outside --since/--until are left out silently; `skip(event_name, event_id)` True
    leaves a record out before anything is hashed; `limit` counts the records not skipped.
    """
    options = options or BuildOptions()
    mapper = FieldMapper(
        load_map(options.map_file) if options.map_file else None,
        parse_sets(options.sets) if options.sets else None,
    )
    now = options.now if options.now is not None else time.time()
    days = options.attribution_window_days or getattr(settings, "attribution_window_days", 7) or 7
    builder = EventBuilder(settings, now=now, window_seconds=int(days * 86400), referrals=referrals)
    since = _bound(options.since, now, builder, "--since")
    until = _bound(options.until, now, builder, "--until")
    remaining = options.limit
    seen = SeenIds()
    head_of, body_of = builder.head, builder.body
    map_row, map_record = mapper.map_row, mapper.map_record

    for path in paths:
        source = source_name(path)
        warned: set[str] = set()
        index = 0
        for line, raw in read_records(path, options.input_format):
            index += 1
            if isinstance(raw, Malformed):
                if remaining is not None:
                    if remaining <= 0:
                        return
                    remaining -= 1
                yield Problem(source, line, index, None, "malformed_record", ERROR, raw.message)
                continue
            if type(raw) is tuple:
                record, unknown, oversized = map_row(*raw)
            else:
                record, unknown, oversized = map_record(raw)  # type: ignore[arg-type]
            for column in unknown:
                if column not in warned:
                    warned.add(column)
                    yield Problem(
                        source, line, index, column, "unknown_column", WARNING,
                        f"column {column!r} is not a known field and is ignored (map it with --map FILE.yaml)",
                    )
            errors: list[tuple[str | None, str, str]] = [
                (key, "invalid_value", f"{key}: value longer than 8192 characters") for key in oversized
            ]
            try:
                head = head_of(record, errors)
            except RecursionError:  # values nested a thousand levels deep
                yield Problem(source, line, index, None, "malformed_record", ERROR, "values nested too deeply")
                continue
            if head.event_time is not None and (
                (since is not None and head.event_time < since) or (until is not None and head.event_time > until)
            ):
                continue
            if head.event_id is not None and head.event_name is not None:
                if seen.add(f"{head.event_name}\x1f{head.event_id}"):
                    errors.append(
                        ("event_id", "duplicate_event_id",
                         f"{head.event_name} {head.event_id!r} appears earlier in the input; only the first is kept")
                    )
                elif skip is not None and skip(head.event_name, head.event_id):
                    continue
            if remaining is not None:
                if remaining <= 0:
                    return
                remaining -= 1
            try:
                payload, attributed = body_of(record, head, errors)
            except RecursionError:
                yield Problem(source, line, index, None, "malformed_record", ERROR, "values nested too deeply")
                continue
            if errors:
                for key, code, message in errors:
                    yield Problem(source, line, index, key, code, ERROR, message)
                continue
            yield BuiltEvent(
                head.event_name,  # type: ignore[arg-type]
                head.event_id,  # type: ignore[arg-type]
                head.event_time,  # type: ignore[arg-type]
                payload,
                source,
                line,
                index,
                attributed,
                head.time_given,
            )
