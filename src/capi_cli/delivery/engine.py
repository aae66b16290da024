"""Delivery: batching, concurrency, retries and isolation of refused events, with ledger states.

Exactly-once rests on the ledger ordering (docs/internals.md): every request is preceded by
`begin_batch` (its events `in_flight`, committed) and followed by `settle`, so whatever happens in
between, a later run finds each event in a state it handles correctly. Between two attempts of a
retried request, and before splitting a refused one, the events are settled `failed`: Meta
definitely did not count them, so a crash there must lead to a resend, not to `uncertain`.

Every event given to `deliver` ends in exactly one of skipped / sent / rejected / failed /
uncertain (plus `unsent` when a stop cut the run short before its batch left).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any

from capi_cli.delivery.batches import BatchSender, RequestTurns, json_of
from capi_cli.delivery.skip import LedgerSkip, ledger_skip
from capi_cli.delivery.types import (
    SUMMARY_KEYS,
    DeliverableEvent,
    DeliveryOptions,
    DeliveryProgress,
    DeliverySummary,
    EventReport,
    EventSender,
    ProgressCallback,
)
from capi_cli.events.keyset import KeySet
from capi_cli.ledger import LedgerState

if TYPE_CHECKING:
    from capi_cli.ledger import LedgerStore

__all__ = [
    "SUMMARY_KEYS", "DeliverableEvent", "DeliveryOptions", "DeliveryProgress", "DeliverySummary", "EventReport",
    "EventSender", "LedgerSkip", "ProgressCallback", "deliver", "ledger_skip",
]


def deliver(
    events: Iterable[DeliverableEvent],
    *,
    ledger: LedgerStore | None,
    client: EventSender | None,
    dataset_id: str,
    options: DeliveryOptions | None = None,
    progress: ProgressCallback | None = None,
    sink: Callable[[Sequence[Mapping[str, Any]]], None] | None = None,
    stop: threading.Event | None = None,
    sink_text: Callable[[Sequence[str]], None] | None = None,
    keys_unique: bool = False,
    summary: DeliverySummary | None = None,
) -> DeliverySummary:
    """Send `events` (consumed lazily) to `dataset_id` exactly once, recording each in `ledger`.

    `sink` receives each batch's payloads, in the calling thread, as they leave (or would leave,
    in a dry run): `send -o FILE`; `sink_text` the same as compact JSON text (the event's
    `payload_json` when it has one: nothing is serialized twice). `keys_unique`: the caller
    already refused repeated keys (the events pipeline does), so no second set of keys is kept.
    `summary`: the run's counts, when the caller counts into them too (read, invalid, ...).
    Setting `stop` (e.g. from a SIGTERM handler) stops taking new
    batches; Ctrl-C does the same. In-flight requests are settled before returning, then
    `summary.interrupted` (exit 130) or `summary.fatal` (exit 3) says why the run ended early.
    Call under `ledger.sender()`, after `ledger.recover_in_flight()`.
    """
    options = options or DeliveryOptions()
    options.check()
    if not options.dry_run and (ledger is None or client is None):
        raise ValueError("deliver needs a ledger and a client unless dry_run")
    return _Delivery(
        ledger, client, dataset_id, options, progress, sink, stop or threading.Event(), sink_text, keys_unique,
        summary,
    ).run(events)


class _Delivery(BatchSender):
    """The main thread: read the events, decide which to send, batch and dispatch them; the worker
    threads' half (one batch, its retries, its isolation) is delivery.batches.BatchSender."""

    def __init__(
        self,
        ledger: LedgerStore | None,
        client: EventSender | None,
        dataset_id: str,
        options: DeliveryOptions,
        progress: ProgressCallback | None,
        sink: Callable[[Sequence[Mapping[str, Any]]], None] | None,
        stop: threading.Event,
        sink_text: Callable[[Sequence[str]], None] | None = None,
        keys_unique: bool = False,
        summary: DeliverySummary | None = None,
    ) -> None:
        self.ledger = ledger
        self.client = client
        self.dataset_id = dataset_id
        self.options = options
        self.progress = progress
        self.sink = sink
        self.sink_text = sink_text
        self.stop = stop
        # The run's one set of counts: the caller's (which its reading side counts into too), or new.
        self.summary = summary if summary is not None else DeliverySummary(dry_run=options.dry_run)
        self._lock = threading.Lock()
        self._seen = None if keys_unique else KeySet()
        self._run_id = uuid.uuid4().hex[:8]
        self._batch_number = 0
        self._successes = 0
        self._singleton_refusals = 0
        self._pause_until = 0.0  # shared throttle: Meta's Retry-After applies to the app, not a batch
        self._in_flight = 0
        self._started = time.monotonic()
        self._last_progress = 0.0
        # Batches in progress (claimed, waiting for their turn, sending or settling) are bounded at
        # twice the concurrency; requests to Meta at the concurrency itself, in the order the
        # batches were handed out (RequestTurns). A batch's ledger work (its claim before the
        # request, its settle after) thus overlaps other batches' requests.
        self._slots = threading.Semaphore(2 * options.concurrency)
        self._request_turns = RequestTurns(options.concurrency)
        self._futures: set[Future[None]] = set()
        self._worker_error: BaseException | None = None
        # --resend: keys the ledger had `sent`. Meta counted them once, so they stay `sent` whatever
        # this attempt ends in, and only a success counts them as resent.
        self._was_sent: set[tuple[str, str]] = set()
        # The state an event to send was read in, when it had a row: its claim must find it so.
        self._claim_from: dict[tuple[str, str], str] = {}

    # -- main thread: read, decide, batch, dispatch ----------------------------------------------

    def run(self, events: Iterable[DeliverableEvent]) -> DeliverySummary:
        executor = None if self.options.dry_run else ThreadPoolExecutor(
            max_workers=2 * self.options.concurrency, thread_name_prefix="capi-send"
        )
        candidates: list[DeliverableEvent] = []
        pending: list[DeliverableEvent] = []
        # Ledger lookups go by chunks (one query per chunk), a batch's worth at a time, so the
        # first request leaves as soon as one batch has been read.
        chunk = self.options.batch_size
        try:
            for event in events:
                candidates.append(event)
                if len(candidates) >= chunk:
                    self._decide(candidates, pending, executor)
                    candidates = []
                if self.stop.is_set():
                    break
            if not self.stop.is_set():
                self._decide(candidates, pending, executor)
                if pending:
                    self._dispatch(pending, executor)
                    pending = []
        except KeyboardInterrupt:
            self.stop.set()
        finally:
            if self.stop.is_set():
                with self._lock:
                    self.summary.delivered_events += len(candidates)
                    self.summary.unsent += len(candidates) + len(pending)
            self._drain()
            if executor is not None:
                executor.shutdown(wait=True)
        if self._worker_error is not None:
            raise self._worker_error
        if self.stop.is_set() and self.summary.fatal is None:
            self.summary.interrupted = True
        self._report(force=True)
        return self.summary

    def _decide(
        self, candidates: list[DeliverableEvent], pending: list[DeliverableEvent], executor: ThreadPoolExecutor | None
    ) -> None:
        if not candidates:
            return
        entries: Mapping[tuple[str, str], tuple[str, str | None]] = {}
        if self.ledger is not None:
            entries = self.ledger.entries(self.dataset_id, [(e.event_name, e.event_id) for e in candidates])
        summary = self.summary
        seen = self._seen
        for event in candidates:
            summary.delivered_events += 1
            if seen is not None and seen.add(f"{event.event_name}\x1f{event.event_id}"):
                summary.skipped += 1
                summary.duplicates += 1
                continue
            entry = entries.get((event.event_name, event.event_id)) if entries else None
            if entry is not None:
                if not self._should_send(event, LedgerState(entry[0]), entry[1]):
                    continue
                self._claim_from[(event.event_name, event.event_id)] = entry[0]
            pending.append(event)
            if len(pending) >= self.options.batch_size:
                self._dispatch(pending, executor)
                pending.clear()
        self._report()

    def _should_send(self, event: DeliverableEvent, state: LedgerState, stored_hash: str | None) -> bool:
        summary = self.summary
        if state is LedgerState.FAILED:
            return True  # Meta definitely did not count it
        if state is LedgerState.SENT:
            if self.options.resend:
                self._was_sent.add((event.event_name, event.event_id))
                return True
            summary.skipped += 1
            return False
        if state is LedgerState.REJECTED:
            # Resending a rejected event cannot double-count (Meta counted nothing), but it would
            # be refused again unless the row changed: send it when its payload differs.
            changed = event.payload_hash is not None and stored_hash is not None and event.payload_hash != stored_hash
            if changed or self.options.resend:
                return True
            summary.skipped += 1
            return False
        if state is LedgerState.IN_FLIGHT:
            summary.skipped += 1  # a live run holds it (after recover_in_flight, only on PostgreSQL)
            return False
        if self.options.resend_uncertain:  # uncertain: Meta may have it
            return True
        report = EventReport(event.event_name, event.event_id, None, None,
                             "uncertain since an earlier run; --resend-uncertain sends it again",
                             event.source, event.line)
        with self._lock:
            summary.uncertain += 1
            summary.earlier_uncertain += 1
            self._keep(summary.uncertain_events, report)
        return False

    def _dispatch(self, batch: Sequence[DeliverableEvent], executor: ThreadPoolExecutor | None) -> None:
        events = list(batch)
        if self.options.dry_run or executor is None:
            self.summary.batches += 1
            self._write(events)
            self.summary.requests += 1
            self.summary.sent += len(events)
            return
        # Bounded in-flight work keeps memory flat: the reader waits for a free slot.
        while not self._slots.acquire(timeout=0.1):
            self._report()
            if self.stop.is_set():
                break
        else:
            if not self.stop.is_set():
                self._submit(events, executor)
                return
            self._slots.release()
        with self._lock:
            self.summary.unsent += len(events)

    def _submit(self, events: list[DeliverableEvent], executor: ThreadPoolExecutor) -> None:
        self.summary.batches += 1
        self._write(events)
        self._batch_number += 1
        batch_id = f"{self._run_id}-{self._batch_number:06d}"
        with self._lock:
            self._in_flight += 1
        future = executor.submit(self._run_batch, events, batch_id, self._request_turns.ticket())
        self._futures.add(future)
        future.add_done_callback(self._batch_done)
        self._futures = {f for f in self._futures if not f.done()}

    def _write(self, events: Sequence[DeliverableEvent]) -> None:
        if self.sink is not None:
            self.sink([e.payload for e in events])
        if self.sink_text is not None:
            self.sink_text([json_of(e) for e in events])

    def _batch_done(self, future: Future[None]) -> None:
        with self._lock:
            self._in_flight -= 1
        self._slots.release()

    def _drain(self) -> None:
        """Let in-flight batches settle; a second Ctrl-C here still leaves workers to finish."""
        while True:
            remaining = [f for f in self._futures if not f.done()]
            if not remaining:
                return
            try:
                wait(remaining, timeout=0.1)
            except KeyboardInterrupt:
                self.stop.set()
            self._report()

    def _report(self, force: bool = False) -> None:
        if self.progress is None:
            return
        now = time.monotonic()
        if not force and now - self._last_progress < 0.1:
            return
        self._last_progress = now
        s = self.summary
        with self._lock:
            snapshot = DeliveryProgress(
                s.delivered_events, s.skipped, s.sent, s.rejected, s.failed, s.uncertain,
                s.batches, s.requests, self._in_flight, now - self._started,
            )
        self.progress(snapshot)
