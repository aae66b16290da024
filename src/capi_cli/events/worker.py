"""The worker side of events.parallel: a process that maps, stages, checks the ledger for `sent`
events (when asked), normalizes, hashes and serializes the records it is sent, and answers with
compact tuples in the order it was given (kinds as plain ints: staging.Kind's values).

Started as `python -m capi_cli.events.worker`, or forked by the command (events.parallel).
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import traceback
from collections.abc import Callable
from types import SimpleNamespace
from typing import IO, TYPE_CHECKING, Any

from capi_cli.events.staging import Kind, SentKeys, Staged
from capi_cli.events.wire import PLAIN, read, write

if TYPE_CHECKING:
    from capi_cli.ledger.types import LedgerRef, LedgerStore

# Plain ints on the wire: an IntEnum member would be pickled as a reference to its class.
_ROW, _SENT, _NESTED = int(Kind.ROW), int(Kind.SENT), int(Kind.NESTED)
_AS_LOCAL: Staged = (int(Kind.LOCAL), (), None, None, None)  # too deep to pickle: the parent stages it


def import_builder() -> None:
    """The modules a worker needs, imported before its configuration comes (or before a fork)."""
    import capi_cli.events.build
    import capi_cli.events.jsontext
    import capi_cli.events.phones
    import capi_cli.events.staging
    import capi_cli.ledger  # noqa: F401


def import_driver() -> None:
    """The PostgreSQL driver, when CAPI_LEDGER names a PostgreSQL ledger (the worker's ledger
    reads need it): ~0.13 s of imports, paid while the command reads its options rather than after
    the worker's configuration comes. Before a fork, the command imports it once for all workers:
    a import in each worker cost a 2-core machine as much CPU again as the command's own."""
    from capi_cli.ledger.location import is_postgres

    if is_postgres(os.environ.get("CAPI_LEDGER", "")):
        try:
            import psycopg  # noqa: F401
        except ImportError:
            pass  # not installed: the command's own connection says so, in one line (exit 3)


def early_connection() -> tuple[str, Any] | None:
    """(url, connection) to the PostgreSQL ledger CAPI_LEDGER names, made while the command reads
    its options (the configuration says later which ledger, if any, the worker reads: this one
    is used only if it is that one). None without one, or if it cannot be made now (the command
    reports that itself)."""
    from capi_cli.ledger.location import is_postgres

    url = os.environ.get("CAPI_LEDGER", "")
    if not is_postgres(url):
        return None
    try:
        from capi_cli.ledger.pg_sql import connect

        return url, connect(url)
    except Exception:  # noqa: BLE001 - the command's own connection says what is wrong
        return None


class _Worker:
    def __init__(self, config: dict[str, Any], early: tuple[str, Any] | None = None) -> None:
        from capi_cli.events.build import EventBuilder
        from capi_cli.events.fields import FieldMapper
        from capi_cli.events.staging import Stager

        ledgers: dict[LedgerRef, LedgerStore] = {}

        def ledger(ref: LedgerRef) -> LedgerStore:
            nonlocal early
            from capi_cli.ledger.types import open_ledger

            if ref not in ledgers:
                raw = None
                if early is not None and ref.kind == "postgres" and ref.location == early[0]:
                    raw, early = early[1], None
                ledgers[ref] = open_ledger(ref, worker=True, raw=raw)
            return ledgers[ref]

        from capi_cli.events.join import batched

        referrals = batched(ledger(config["referrals"]).referrals) if config.get("referrals") else None
        sent = config.get("sent")
        self.sent_among: Callable[[list[tuple[str, str]]], set[tuple[str, str]]] | None = None
        if sent:
            from capi_cli.events.shard import skipped_among

            store, dataset_id, shard = ledger(sent[0]), sent[1], sent[2]
            self.sent_among = lambda keys: skipped_among(lambda rest: store.sent_among(dataset_id, rest), shard, keys)
        if early is not None:  # made for another ledger than the one asked (or none)
            early[1].close()
        builder = EventBuilder(
            SimpleNamespace(**config["settings"]),
            now=config["now"],
            window_seconds=config["window_seconds"],
            referrals=referrals,
            date_format=config.get("date_format"),
        )
        self.builder = builder
        localize = None
        if config.get("locale"):
            from capi_cli.inputs.reshape import Localizer

            localize = Localizer(config["locale"])
        self.stager = Stager(FieldMapper(config["mapping"], config["sets"]), builder, config["since"], config["until"],
                             localize)
        self._header: list[str] | None = None

    def _same(self, header: list[str]) -> list[str]:
        """One header object for a file's rows, however many messages they came in: the mapper
        works out a header's plan once per object."""
        if header != self._header:
            self._header = header
        return self._header  # type: ignore[return-value]

    def process(self, message: tuple[Any, list[Any]]) -> list[tuple[Any, ...]]:
        from capi_cli.events.jsontext import payload_json

        header, items = message
        lines: list[int] | None = None
        if header == PLAIN:
            from capi_cli.events.readers import PlainBlock

            header, delimiter, start, text = items
            records = list(PlainBlock(self._same(header), delimiter, start, text).records())
            lines = [line for line, _ in records]
            raws: list[Any] = [raw for _, raw in records]
        elif header is not None:
            header = self._same(header)
            raws = [(header, row) for row in items]
        else:
            raws = [(self._same(raw[0]), raw[1]) if type(raw) is tuple else raw for raw in items]
        if None in raws:  # records too deep to pickle: staged in the parent
            staged_here = iter(self.stager.stage_chunk([raw for raw in raws if raw is not None], self.sent_among))
            staged: list[Any] = [_AS_LOCAL if raw is None else next(staged_here) for raw in raws]
        else:
            staged = self.stager.stage_chunk(raws, self.sent_among, whole=True)
            if type(staged) is SentKeys:  # a re-run's usual chunk: all sent, answered by its keys
                return staged if lines is None else (lines, staged)  # type: ignore[return-value]
        body_of = self.builder.body
        answers: list[tuple[Any, ...]] = []
        for kind, unknown, head, errors, record in staged:
            if kind == _SENT:  # short: a re-run answers this for every row
                answers.append((head.event_name, head.event_id, unknown))
                continue
            if kind != _ROW:
                answers.append((int(kind), unknown, None, errors, None))
                continue
            fields = (head.event_name, head.event_id, head.event_time, head.time_given)
            body_errors: list[Any] = []
            try:
                payload, attributed = body_of(record, head, body_errors)
            except RecursionError:
                answers.append((_ROW, unknown, fields, errors, _NESTED))
                continue
            if errors or body_errors:
                # The payload goes along: problems that only drop a field still send the event.
                answers.append((_ROW, unknown, fields, errors, (payload_json(payload), attributed, body_errors)))
            else:
                answers.append((payload_json(payload), *fields, attributed, unknown))
        return answers if lines is None else (lines, answers)  # type: ignore[return-value]


def main() -> int:
    """A worker started as `python -m capi_cli.events.worker`."""
    # The builder's imports first: a worker started early (warm_up) has them done by the time
    # its configuration comes.
    import_builder()
    return serve(sys.stdin.buffer, sys.stdout.buffer)


def serve(source: IO[bytes], sink: IO[bytes]) -> int:
    """The worker's loop: its configuration, then one answer per message, until end of input."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        import_driver()
        early = early_connection()
        config = read(source)
        if config is None:  # a worker the command did not use
            if early is not None:
                early[1].close()
            return 0
        worker = _Worker(pickle.loads(config), early)
        while (data := read(source)) is not None:
            answers = worker.process(pickle.loads(data))
            write(sink, pickle.dumps(answers, protocol=pickle.HIGHEST_PROTOCOL))
    except (BrokenPipeError, KeyboardInterrupt):
        return 0
    except BaseException:
        try:
            write(sink, pickle.dumps(traceback.format_exc()))
        except OSError:
            pass
        return 1
    return 0


if __name__ == "__main__":
    code = main()
    # Nothing to tidy: the answers are written and flushed, the ledger was only read. Skipping the
    # interpreter's teardown saves the command ~20 ms of waiting for its workers to exit.
    sys.stdout.flush()
    os._exit(code)
