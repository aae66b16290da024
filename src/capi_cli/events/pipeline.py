"""Reading → mapping → validating → building: the events `validate` checks and `send` sends.

`iter_events` streams: it holds a few records at a time plus one compact set of the event ids
seen (events.keyset, 8-16 bytes each), so memory stays flat with file size.

Large files are built in worker processes (events.parallel): this process reads the records and
makes every decision that depends on order (duplicates, `skip`, `--limit`, warnings once per
column); the workers map, normalize, hash and serialize. Both ways give the same items in the
same order; CAPI_WORKERS=0 forces one process.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from capi_cli import clock
from capi_cli.events.build import EventBuilder, ReferralStore
from capi_cli.events.fields import FieldMapper
from capi_cli.events.join import batched
from capi_cli.events.jsontext import payload_json
from capi_cli.events.keyset import KeySet, expected_records
from capi_cli.events.readers import is_empty_file, source_name
from capi_cli.events.staging import NESTED_MESSAGE, Kind, StagedItem, Stager, local_stage
from capi_cli.events.times import parse_when
from capi_cli.events.validate import ERROR, WARNING, Problem, ValidationReport, collect, triage
from capi_cli.inputs.setup import InputSetup, suggestion

if TYPE_CHECKING:
    from capi_cli.inputs.reshape import Reshape

__all__ = ["BuildOptions", "BuiltEvent", "Problem", "iter_events", "payload_json"]

When = int | float | datetime | str | None
Errors = list[tuple[str | None, str, str]]

SeenIds = KeySet  # the name tests and older callers know
SENT, SENT_RUN = int(Kind.SENT), int(Kind.SENT_RUN)


@dataclass
class BuildOptions:
    """What the command line adds to the settings. `strict` is the caller's business."""

    map_file: str | Path | None = None
    sets: Sequence[str] | Mapping[str, Any] = ()
    input_format: str | None = None
    since: When = None  # Unix seconds, datetime, or text as --since takes it (2026-03-01, 2d)
    until: When = None
    limit: int | None = None
    now: float | None = None  # fixed "now"; default clock.now() at the start of the run
    attribution_window_days: float | None = None  # default: settings.attribution_window_days
    strict_fields: bool = False  # a bad optional customer field is an error, not dropped_field
    require_attribution: bool = False  # an unattributed event is an error (missing_identifier)
    reshape: Reshape | None = None  # --preset, --where, --group-by, --date-format
    filtered: int = 0  # set by iter_events: rows --where left out


class BuiltEvent:
    """One event ready to send: `payload` is exactly what goes to Meta.

    An event built by a worker process arrives as its JSON text; `payload` is parsed from it
    only if someone asks (the NDJSON output and the ledger hash use the text as it is)."""

    __slots__ = (
        "event_name", "event_id", "event_time", "_payload", "source", "line", "record", "attributed", "time_given",
        "_hash", "_json",
    )

    def __init__(
        self,
        event_name: str,
        event_id: str,
        event_time: int,
        payload: dict[str, Any] | None,
        source: str,
        line: int,
        record: int,
        attributed: bool,
        time_given: bool = True,
        json_text: str | None = None,
    ) -> None:
        if payload is None and json_text is None:
            raise ValueError("BuiltEvent needs its payload or its JSON text")
        self.event_name = event_name
        self.event_id = event_id
        self.event_time = event_time
        self._payload = payload
        self.source = source
        self.line = line
        self.record = record
        self.attributed = attributed
        self.time_given = time_given
        self._hash: str | None = None
        self._json = json_text

    @property
    def payload(self) -> dict[str, Any]:
        if self._payload is None:
            self._payload = json.loads(self._json)  # type: ignore[arg-type]
        return self._payload

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
            self._json = payload_json(self._payload)  # type: ignore[arg-type]
        return self._json

    def __repr__(self) -> str:
        return f"BuiltEvent({self.event_name!r}, {self.event_id!r}, {self.source}:{self.line})"


def referral_store(settings: Any) -> Any:
    """The ledger holding stored referrals, or None when there is none yet (nothing is created)."""
    location = str(getattr(settings, "ledger", "") or "")
    from capi_cli.ledger.types import LedgerRef, open_ledger

    if not location or not LedgerRef.parse(location).exists():
        return None
    return open_ledger(location)


def validate_files(paths: Iterable[str | Path], settings: Any, options: BuildOptions) -> ValidationReport:
    """`capi validate`: every check `send` runs, with the same stored referrals, nothing sent."""
    ledger = referral_store(settings)
    try:
        report = collect(iter_events(paths, settings, options,
                                     referrals=ledger.referrals if ledger is not None else None))
    finally:
        if ledger is not None:
            ledger.close()
    report.tally.filtered = options.filtered
    return report


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
) -> Generator[BuiltEvent | Problem, None, None]:
    """Every input record as a BuiltEvent, or as the Problems that keep it from being sent.

    Warnings (unknown columns) come as Problems too, before the record they were found in.
    Records outside --since/--until are left out silently; `skip(event_name, event_id)` True
    leaves a record out before anything is hashed; `limit` counts the records not skipped.
    A `skip` with a `worker_spec` (delivery.LedgerSkip) is answered by the worker processes
    from the ledger itself; they report each event skipped that way to its `note_skipped`.
    """
    options = options or BuildOptions()
    paths = list(paths)
    inputs = InputSetup(options, settings)
    mapper = FieldMapper(inputs.mapping, inputs.sets)
    now = options.now if options.now is not None else clock.now()
    days = options.attribution_window_days or getattr(settings, "attribution_window_days", 7) or 7
    window = int(days * 86400)
    builder = EventBuilder(settings, now=now, window_seconds=window, referrals=batched(referrals),
                           date_format=inputs.date_format)
    since = _bound(options.since, now, builder, "--since")
    until = _bound(options.until, now, builder, "--until")
    stager = Stager(mapper, builder, since, until, inputs.localizer())
    plan = inputs.plan(mapper)

    from capi_cli.events.parallel import worker_count

    # Filters and groups depend on row order: such a run reads and builds in this process.
    workers = 0 if plan is not None else worker_count(paths, referrals)
    spec = getattr(skip, "worker_spec", None) if skip is not None else None
    if not workers:
        sent_among = getattr(skip, "sent_among", None) if spec is not None else None
        try:
            yield from _sequence(
                paths, options, stager, skip, spec if sent_among is not None else None,
                lambda path: local_stage(stager, path, options.input_format, sent_among, plan), inputs,
            )
        finally:
            options.filtered = plan.filtered if plan is not None else 0
        return
    from capi_cli.events.parallel import WorkerPool

    pool = WorkerPool(
        workers,
        {
            "settings": {name: getattr(settings, name, None) for name in EventBuilder.SETTINGS},
            "now": now,
            "window_seconds": window,
            "mapping": inputs.mapping,
            "sets": inputs.sets,
            "locale": getattr(settings, "locale", None),
            "date_format": inputs.date_format,
            "since": since,
            "until": until,
            "referrals": getattr(referrals, "ref", None) if referrals is not None else None,  # a LedgerRef
            "sent": spec,
        },
    )
    try:
        yield from _sequence(
            paths, options, stager, skip, spec, lambda path: pool.stage(stager, path, options.input_format), inputs
        )
    finally:
        pool.close()


def _sent_runs(
    items: Iterator[StagedItem], seen: KeySet, note_skipped: Callable[[int], None] | None
) -> Iterator[StagedItem]:
    """The items of a file, each SENT_RUN (a chunk found sent whole) taken here: its keys go into
    `seen` and are counted skipped at once. A key seen already is a duplicate, which needs the
    order-dependent decisions: it comes on as a SENT item of its own, read again from its record."""
    for item in items:
        if item[0] != SENT_RUN:
            yield item
            continue
        keys, (lines, records) = item[9], item[10]
        duplicates = seen.add_all(keys)
        if note_skipped is not None and len(keys) > len(duplicates):
            note_skipped(len(keys) - len(duplicates))
        for position in duplicates:
            name, _, event_id = keys[position].partition("\x1f")
            local = (records[position],) if type(records) is list else records
            yield (SENT, lines[position], item[2] + position, (), name, event_id, None, True, (), None, local)


def _sequence(
    paths: list[str | Path],
    options: BuildOptions,
    stager: Stager,
    skip: Callable[[str, str], bool] | None,
    skip_spec: Any,
    stage_file: Callable[[str | Path], Iterator[StagedItem]],
    inputs: InputSetup,
) -> Iterator[BuiltEvent | Problem]:
    """The decisions that depend on order, in input order: warnings once per column, duplicates,
    `skip`, `--limit`; then the body (built here unless a worker built it already)."""
    remaining = options.limit
    seen = KeySet(max(1 << 14, expected_records(paths, options.input_format) * 3 // 2))  # (at most 2/3 full)
    # Bound once, as plain ints: looked up and compared for every record.
    SENT, MALFORMED, NESTED, OUT = int(Kind.SENT), int(Kind.MALFORMED), int(Kind.NESTED), int(Kind.OUT)  # noqa: N806
    body_of = stager.builder.body
    note_skipped = getattr(skip, "note_skipped", None)

    for path in paths:
        source = source_name(path)
        if is_empty_file(path):
            # Under cron a failed export is often a 0-byte file: an error, not "no problems found".
            yield Problem(source, 0, 0, None, "empty_input", ERROR, "empty file: no header and no records")
            continue
        warned: set[str] = set()
        for column, message in inputs.unused_map_keys(path):
            yield Problem(source, 1, None, column, "unused_map_key", WARNING, message)
        items = stage_file(path)
        if skip is not None:
            items = _sent_runs(items, seen, note_skipped)
        for item in items:
            # (item[0], [3], [4], [5]: kind, unknown, event_name, event_id; by index on the path every row takes)
            if item[0] == SENT and not item[3] and not seen.add(f"{item[4]}\x1f{item[5]}"):
                # The common case of a re-run, kept short: sent before, no new column, no duplicate.
                if note_skipped is not None:
                    note_skipped()
                continue
            kind, line, index, unknown, name, event_id, event_time, time_given, errors, body, local = item
            if kind == MALFORMED:
                if remaining is not None:
                    if remaining <= 0:
                        return
                    remaining -= 1
                yield Problem(source, line, index, None, "malformed_record", ERROR, errors)
                continue
            for column in unknown:
                if column not in warned:
                    warned.add(column)
                    yield Problem(
                        source, line, index, column, "unknown_column", WARNING,
                        f"column {column!r} is not a known field and is ignored (map it with --map FILE.yaml, "
                        f"or to null to silence this){suggestion(column)}",
                    )
            if kind == NESTED:
                yield Problem(source, line, index, None, "malformed_record", ERROR, NESTED_MESSAGE)
                continue
            if kind == OUT:
                continue
            duplicate = None
            if event_id is not None and name is not None:
                if seen.add(f"{name}\x1f{event_id}"):
                    duplicate = ("event_id", "duplicate_event_id",
                                 f"{name} {event_id!r} appears earlier in the input; only the first is kept")
                    errors = [*errors, duplicate]
                    if kind == SENT:
                        body = None  # the worker skipped the body; the duplicate's problems need it
                elif kind == SENT:
                    if note_skipped is not None:
                        note_skipped()
                    continue
                elif skip is not None and skip_spec is None and skip(name, event_id):
                    continue
            if remaining is not None:
                if remaining <= 0:
                    return
                remaining -= 1
            if body is None:
                if type(local) is not tuple or len(local) == 1:
                    # (raw,) or what gives it by line: a worker staged the record, and skipped it as
                    # sent; the mapped record and everything the head finds wrong are needed here.
                    staged = stager.stage(local[0] if type(local) is tuple else local.raw(line))
                    errors = [*staged[3], duplicate] if duplicate is not None and staged[3] is not None else errors
                    local = (staged[4], staged[2])
                record, head = local
                try:
                    payload, attributed = body_of(record, head, errors)
                except RecursionError:
                    yield Problem(source, line, index, None, "malformed_record", ERROR, NESTED_MESSAGE)
                    continue
                text = None
            elif type(body) is not tuple:  # Kind.NESTED: too deep to build
                yield Problem(source, line, index, None, "malformed_record", ERROR, NESTED_MESSAGE)
                continue
            else:
                text, attributed, body_errors = body
                if body_errors:
                    errors = [*errors, *body_errors]
                payload = None
            if errors:
                errors, warnings, unattributed = triage(
                    errors, strict_fields=options.strict_fields, require_attribution=options.require_attribution)
                for key, code, message in warnings:
                    yield Problem(source, line, index, key, code, WARNING, message)
                if errors:
                    for key, code, message in errors:
                        yield Problem(source, line, index, key, code, ERROR, message)
                    continue
                if unattributed is not None:
                    yield Problem(source, line, index, unattributed[0], unattributed[1], WARNING, unattributed[2])
                    continue
            # A head without a name, id or time has errors, reported above: these are set here.
            yield BuiltEvent(name, event_id, event_time, payload, source, line, index, attributed, time_given,  # type: ignore[arg-type]
                             text)
