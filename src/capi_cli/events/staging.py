"""The order-free first half of building an event, the same in this process and in the worker
processes: mapping, the head (name, time, channel, id), --since/--until, "sent already?" per chunk.

`Stager.stage` gives a `Staged` record; the pipeline (events.pipeline._sequence) takes a file's
records as `StagedItem`s, in input order, whether staged here (`local_stage`) or by the workers
(events.parallel.WorkerPool.stage), and makes every decision that depends on order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from enum import IntEnum
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

from capi_cli.events.build import EventBuilder, Head
from capi_cli.events.fields import FieldMapper
from capi_cli.events.readers import Malformed, read_records, source_name

if TYPE_CHECKING:
    from capi_cli.inputs.reshape import InputPlan

Errors = list[tuple[str | None, str, str]]
NESTED_MESSAGE = "values nested too deeply"


class Kind(IntEnum):
    """What becomes of one record before the order-dependent decisions. An int on the wire: the
    worker processes answer with the plain value (pickled as a small int, not as the enum)."""

    MALFORMED = 0  # unreadable: errors holds the message
    NESTED = 1  # values nested too deeply
    OUT = 2  # outside --since/--until
    ROW = 3  # head read; the body is built next (here, or already by a worker)
    SENT = 4  # a worker found it `sent` in the ledger and built no body
    LOCAL = 5  # a worker could not take it (too deep to pickle): staged here instead
    SENT_RUN = 6  # a chunk of records all found `sent` (SentKeys): a re-run's usual chunk, as one item


# One record staged: (kind, unknown columns, head, errors (the message when MALFORMED), the mapped
# record). Plain tuples, read by position: one is made for every record, and a NamedTuple's
# constructor costs five times a tuple's.
Staged = tuple[int, Sequence[str], Head | None, Any, dict[str, Any] | None]

# One staged record as the pipeline takes it, in input order: (kind, line, its 1-based number in
# its file, unknown columns, event_name, event_id, event_time, time_given, errors (or the message
# of a MALFORMED record), body, local).
# body: None (build it here), NESTED, or (payload JSON text or None, attributed, body errors) from a
# worker. local: (record, head) to build it from, or the raw record to stage again first: (raw,),
# or an object whose raw(line) gives it (the records of a PlainBlock, never parsed here).
StagedItem = tuple[int, int, int, Sequence[str], str | None, str | None, int | None, bool, Any, Any, Any]

# A SENT_RUN item, one per chunk found sent whole: (SENT_RUN, first line, first number, (), None,
# None, None, True, (), keys, (lines, records)): keys and lines one per record, keys as
# "event_name\x1fevent_id" (the pipeline's duplicate key); records: a list of the raw records, or
# an object whose raw(line) gives one (read again only for a duplicate).

SentAmong = Callable[[list[tuple[str, str]]], set[tuple[str, str]]]


class SentKeys(list[str]):
    """What `Stager.stage_chunk(..., whole=True)` gives for a chunk whose every record the ledger
    says was sent, each naming its event outright (name and id read, nothing else) with no unknown
    column: their keys, "event_name\x1fevent_id", and no staged record at all."""

    __slots__ = ()


_ROW, _SENT, _SENT_RUN = Kind.ROW, Kind.SENT, Kind.SENT_RUN

class Stager:
    """The order-free first half of a record: mapping, the head (name, time, channel, id) and the
    --since/--until filter. The same code runs here and in the worker processes."""

    def __init__(
        self, mapper: FieldMapper, builder: EventBuilder, since: int | None, until: int | None,
        localize: Callable[[dict[str, Any], Errors], None] | None = None,
    ) -> None:
        self.mapper = mapper
        self.builder = builder
        self.since = since
        self.until = until
        self.localize = localize  # inputs.reshape.Localizer under --locale

    def stage(self, raw: Any) -> Staged:
        """(kind, unknown columns, head, errors (the message when MALFORMED), mapped record)."""
        if isinstance(raw, Malformed):
            return (Kind.MALFORMED, (), None, raw.message, None)
        if type(raw) is tuple:
            record, unknown, invalid = self.mapper.map_row(*raw)
            errors: Errors = [(key, "invalid_value", message) for key, message in invalid]
        else:
            record, unknown, invalid = self.mapper.map_record(raw)
            errors = [(key, "invalid_value", message) for key, message in invalid]
            if type(raw) is not dict and (notes := getattr(raw, "notes", None)):
                errors.extend(notes)  # inputs.grouping.GroupedRecord: what merging a group found
        if self.localize is not None:
            self.localize(record, errors)
        try:
            head = self.builder.head(record, errors)
        except RecursionError:  # values nested a thousand levels deep
            return (Kind.NESTED, unknown, None, None, None)
        if head.event_time is not None and (
            (self.since is not None and head.event_time < self.since)
            or (self.until is not None and head.event_time > self.until)
        ):
            return (Kind.OUT, unknown, None, None, None)
        return (_ROW, unknown, head, errors, record)

    @overload
    def stage_chunk(self, raws: Sequence[Any], sent_among: SentAmong | None) -> list[Staged]: ...

    @overload
    def stage_chunk(
        self, raws: Sequence[Any], sent_among: SentAmong | None, *, whole: bool
    ) -> list[Staged] | SentKeys: ...

    def stage_chunk(
        self, raws: Sequence[Any], sent_among: SentAmong | None, *, whole: bool = False
    ) -> list[Staged] | SentKeys:
        """`stage` of each record; with `sent_among`, a record the ledger says was sent comes back
        as SENT, and nothing but its name and id is read when it gives them outright (a CSV row
        with an event_id or order_id column: EventBuilder.key, the same key `head` finds).
        The ledger is asked once or twice per chunk, not once per record. `whole`: a chunk found
        sent whole comes back as its SentKeys instead."""
        stage = self.stage
        if sent_among is None:
            return self._joined([stage(raw) for raw in raws])
        keys: list[tuple[str, str] | None] = [None] * len(raws)
        unknowns: list[Sequence[str]] = [()] * len(raws)
        if self.since is None and self.until is None:  # else the time decides first (OUT before SENT)
            key_of, map_keys = self.builder.key, self.mapper.map_row_keys
            for number, raw in enumerate(raws):
                if type(raw) is tuple:
                    record, unknowns[number] = map_keys(*raw)
                    keys[number] = key_of(record)
        known = [key for key in keys if key is not None]
        sent = sent_among(known) if known else set()
        if whole and len(sent) == len(raws) and len(known) == len(raws) and not any(unknowns):
            return SentKeys([f"{name}\x1f{event_id}" for name, event_id in known])
        staged: list[Staged] = []
        for raw, key, unknown in zip(raws, keys, unknowns, strict=True):
            if key is not None and key in sent:
                staged.append((Kind.SENT, unknown, Head(key[0], None, None, key[1]), (), None))
            else:
                staged.append(stage(raw))
        # The rest: ids only the head could work out (from the time and the customer, or the row).
        asked = [(head.event_name, head.event_id) for (kind, _, head, _, _), key in zip(staged, keys, strict=True)
                 if key is None and kind == Kind.ROW and head is not None
                 and head.event_name is not None and head.event_id is not None]
        if asked and (sent := sent_among(asked)):
            for number, (kind, unknown, head, errors, mapped) in enumerate(staged):
                if (kind == Kind.ROW and keys[number] is None and head is not None
                        and (head.event_name, head.event_id) in sent):
                    staged[number] = (Kind.SENT, unknown, head, errors, mapped)
        return self._joined(staged)

    def _joined(self, staged: list[Staged]) -> list[Staged]:
        """Ask the ledger at once for the referrals of the records whose bodies come next
        (events.join): one batched lookup per chunk, not one query per record."""
        prefetch = getattr(self.builder.referrals, "prefetch", None)
        if prefetch is not None:
            prefetch(self.builder, [(head, record) for kind, _, head, _, record in staged if kind == Kind.ROW])
        return staged




_LOCAL_CHUNK = 500  # records staged before one batched "which of these were sent?" query


def local_stage(
    stager: Stager,
    path: str | Path,
    input_format: str | None,
    sent_among: SentAmong | None = None,
    plan: InputPlan | None = None,
) -> Iterator[StagedItem]:
    """Stage records in this process, a chunk at a time: with `sent_among`, the ledger is asked
    once per chunk, as the worker processes do (a query per row cost a re-run most of its time).
    `plan`: --where and --group-by, which depend on row order, reshape the records first."""
    index = 0
    records: Iterable[Any] = read_records(path, input_format)
    if plan is not None:
        records = plan.records(records, source_name(path))
    records = iter(records)
    while chunk := list(islice(records, _LOCAL_CHUNK)):
        raws = [raw for _, raw in chunk]
        staged_chunk = stager.stage_chunk(raws, sent_among, whole=True)
        if isinstance(staged_chunk, SentKeys):
            yield sent_run(staged_chunk, [line for line, _ in chunk], index, raws)
            index += len(raws)
            continue
        for (line, raw), staged in zip(chunk, staged_chunk, strict=True):
            index += 1
            yield item_of(staged, line, index, raw)


def sent_run(keys: list[str], lines: list[int], before: int, records: Any) -> StagedItem:
    """The SENT_RUN item of a chunk found sent whole, its first record the file's `before + 1`th."""
    return (_SENT_RUN, lines[0], before + 1, (), None, None, None, True, (), keys, (lines, records))


def item_of(staged: Staged, line: int, index: int, raw: Any, body: Any = None) -> StagedItem:
    """The StagedItem of a record staged in this process (`raw`: the record as read)."""
    kind, unknown, head, errors, record = staged
    if head is None:
        return (kind, line, index, unknown, None, None, None, True, errors, None, None)
    return (kind, line, index, unknown, head.event_name, head.event_id, head.event_time,
            head.time_given, errors, body, (raw,) if kind == _SENT else (record, head))
