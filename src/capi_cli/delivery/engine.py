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

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any

from capi_cli.delivery.answers import Outcome, OutcomeKind
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
from capi_cli.errors import SetupError
from capi_cli.events.jsontext import payload_json
from capi_cli.events.keyset import KeySet
from capi_cli.ledger import LedgerState, PendingEvent
from capi_cli.ledger.facts import facts_of

if TYPE_CHECKING:
    from capi_cli.ledger import LedgerStore

__all__ = [
    "SUMMARY_KEYS", "DeliverableEvent", "DeliveryOptions", "DeliveryProgress", "DeliverySummary", "EventReport",
    "EventSender", "LedgerSkip", "ProgressCallback", "deliver", "ledger_skip",
]


def _json_of(event: DeliverableEvent) -> str:
    """The event's payload as compact JSON: its own text when it has one (BuiltEvent.payload_json)."""
    text = getattr(event, "payload_json", None)
    return text if type(text) is str else payload_json(event.payload)


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
) -> DeliverySummary:
    """Send `events` (consumed lazily) to `dataset_id` exactly once, recording each in `ledger`.

    `sink` receives each batch's payloads, in the calling thread, as they leave (or would leave,
    in a dry run): `send -o FILE`; `sink_text` the same as compact JSON text (the event's
    `payload_json` when it has one: nothing is serialized twice). `keys_unique`: the caller
    already refused repeated keys (the events pipeline does), so no second set of keys is kept. Setting `stop` (e.g. from a SIGTERM handler) stops taking new
    batches; Ctrl-C does the same. In-flight requests are settled before returning, then
    `summary.interrupted` (exit 130) or `summary.fatal` (exit 3) says why the run ended early.
    Call under `ledger.sender()`, after `ledger.recover_in_flight()`.
    """
    options = options or DeliveryOptions()
    options.check()
    if not options.dry_run and (ledger is None or client is None):
        raise ValueError("deliver needs a ledger and a client unless dry_run")
    return _Delivery(
        ledger, client, dataset_id, options, progress, sink, stop or threading.Event(), sink_text, keys_unique
    ).run(events)


class _Delivery:
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
    ) -> None:
        self.ledger = ledger
        self.client = client
        self.dataset_id = dataset_id
        self.options = options
        self.progress = progress
        self.sink = sink
        self.sink_text = sink_text
        self.stop = stop
        self.summary = DeliverySummary(dry_run=options.dry_run)
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
        self._slots = threading.Semaphore(options.concurrency)
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
            max_workers=self.options.concurrency, thread_name_prefix="capi-send"
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
        future = executor.submit(self._run_batch, events, batch_id)
        self._futures.add(future)
        future.add_done_callback(self._batch_done)
        self._futures = {f for f in self._futures if not f.done()}

    def _write(self, events: Sequence[DeliverableEvent]) -> None:
        if self.sink is not None:
            self.sink([e.payload for e in events])
        if self.sink_text is not None:
            self.sink_text([_json_of(e) for e in events])

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

    # -- worker threads: one batch, its retries and its isolation ---------------------------------

    def _run_batch(self, events: list[DeliverableEvent], batch_id: str) -> None:
        try:
            self._send(events, batch_id, isolating=False)
        except BaseException as exc:  # a bug or a ledger failure: stop the run, re-raise in the caller
            with self._lock:
                if self._worker_error is None:
                    self._worker_error = exc
            self.stop.set()

    def _send(self, events: list[DeliverableEvent], batch_id: str, *, isolating: bool) -> None:
        assert self.ledger is not None and self.client is not None
        ledger, n = self.ledger, len(events)
        with self._lock:
            seen = [self._claim_from.pop((e.event_name, e.event_id), None) for e in events]
        pending = [PendingEvent(e.event_name, e.event_id, e.event_time, e.source, e.line, e.payload_hash,
                                claim_from=c, facts=facts_of(e)) for e, c in zip(events, seen, strict=True)]
        keys = [(e.event_name, e.event_id) for e in events]
        # A client that takes the events' JSON text saves decoding and encoding each payload again.
        send_json = getattr(self.client, "send_events_json", None)
        payloads: list[Any] = ([_json_of(e) for e in events] if send_json is not None
                               else [e.payload for e in events])
        attempt = 0
        while True:
            if self.stop.is_set() or not self._wait_for_pause():
                # Not (re)sent: never begun, or settled `failed` after the last refusal/attempt.
                with self._lock:
                    if attempt == 0 and not isolating:
                        self.summary.unsent += n
                    else:
                        self.summary.failed += n
                return
            claimed = ledger.begin_batch(self.dataset_id, batch_id, pending)
            if len(claimed) < n:
                # Another run (PostgreSQL: several at once) holds or sent the rest: not ours to send.
                kept = [i for i, key in enumerate(keys) if key in claimed]
                with self._lock:
                    self.summary.skipped += n - len(kept)
                events, pending = [events[i] for i in kept], [pending[i] for i in kept]
                keys, payloads = [keys[i] for i in kept], [payloads[i] for i in kept]
                if not (n := len(events)):
                    return
            if send_json is not None:
                outcome = send_json(self.dataset_id, payloads)
            else:
                outcome = self.client.send_events(self.dataset_id, payloads)
            with self._lock:
                self.summary.requests += 1
            kind = outcome.kind

            if kind is OutcomeKind.SUCCESS:
                self._settle(batch_id, keys, LedgerState.SENT, outcome)
                resent = sum(1 for key in keys if key in self._was_sent) if self._was_sent else 0
                with self._lock:
                    self.summary.sent += n
                    self.summary.resent += resent
                    self._successes += 1
                return
            if kind is OutcomeKind.AMBIGUOUS:
                self._settle(batch_id, keys, LedgerState.UNCERTAIN, outcome)
                self._record("uncertain", events, outcome)
                return
            if kind is OutcomeKind.FATAL:
                # Reported once, as the run's error (capi: error: ...), not once per event.
                self._settle(batch_id, keys, LedgerState.FAILED, outcome)
                with self._lock:
                    self.summary.failed += n
                self._fatal(outcome.setup_error())
                return
            if kind is OutcomeKind.RETRYABLE:
                self._settle(batch_id, keys, LedgerState.FAILED, outcome)
                attempt += 1
                if attempt > self.options.max_retries:
                    self._record("failed", events, outcome)
                    return
                self._backoff(attempt, outcome)
                continue
            # REFUSED: nothing was counted. Meta names no event, so halve until each refusal is alone.
            if n == 1:
                self._settle(batch_id, keys, LedgerState.REJECTED, outcome)
                self._record("rejected", events, outcome)
                self._note_singleton_refusal(outcome)
                return
            self._settle(batch_id, keys, LedgerState.FAILED, outcome)
            middle = n // 2
            self._send(events[:middle], f"{batch_id}.0", isolating=True)
            self._send(events[middle:], f"{batch_id}.1", isolating=True)
            return

    def _settle(self, batch_id: str, keys: list[tuple[str, str]], state: LedgerState, outcome: Outcome) -> None:
        assert self.ledger is not None
        if state is not LedgerState.SENT and self._was_sent:
            if kept := [key for key in keys if key in self._was_sent]:
                self.ledger.settle(self.dataset_id, batch_id, kept, LedgerState.SENT)
                keys = [key for key in keys if key not in self._was_sent]
        self.ledger.settle(
            self.dataset_id,
            batch_id,
            keys,
            state,
            error_code=outcome.code,
            error_subcode=outcome.subcode,
            error_message=None if outcome.ok else outcome.describe(),
            fbtrace_id=outcome.fbtrace_id,
        )

    def _backoff(self, attempt: int, outcome: Outcome) -> None:
        options = self.options
        delay = min(options.backoff_max, options.backoff_base * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
        if outcome.retry_after is not None:
            asked = min(outcome.retry_after, options.retry_after_max)
            delay = max(delay, asked)
            with self._lock:
                self._pause_until = max(self._pause_until, time.monotonic() + asked)
        self.stop.wait(delay)

    def _wait_for_pause(self) -> bool:
        """Honour a throttle another batch was told about; False if the run stopped meanwhile."""
        while True:
            with self._lock:
                remaining = self._pause_until - time.monotonic()
            if remaining <= 0:
                return True
            if self.stop.wait(remaining):
                return False

    def _record(self, state: str, events: Sequence[DeliverableEvent], outcome: Outcome) -> None:
        reports = [
            EventReport(e.event_name, e.event_id, outcome.code, outcome.subcode, outcome.describe(), e.source, e.line)
            for e in events
        ]
        with self._lock:
            setattr(self.summary, state, getattr(self.summary, state) + len(events))
            target = getattr(self.summary, f"{state}_events")
            for report in reports:
                self._keep(target, report)

    def _keep(self, target: list[EventReport], report: EventReport) -> None:
        if len(target) < self.options.report_limit:
            target.append(report)

    def _fatal(self, error: SetupError) -> None:
        with self._lock:
            if self.summary.fatal is None:
                self.summary.fatal = error
        self.stop.set()

    def _note_singleton_refusal(self, outcome: Outcome) -> None:
        with self._lock:
            self._singleton_refusals += 1
            tripped = self._successes == 0 and self._singleton_refusals >= self.options.refusal_breaker
            count = self._singleton_refusals
        if tripped:
            self._fatal(
                SetupError(
                    f"Graph API refused each of the first {count} events on its own and accepted none "
                    f"({outcome.describe()}); this looks like a request setup problem (app secret, "
                    "test event code, dataset), not bad events. Fix it, then `capi ledger forget "
                    "--status rejected` to send them again"
                )
            )

