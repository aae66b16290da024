"""The worker threads' half of delivery: one batch, its retries, and the isolation of the events
Meta refuses, with the ledger states before and after each request (delivery.engine has the
main thread's half: reading, deciding, batching, dispatching)."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from capi_cli.delivery.answers import Outcome, OutcomeKind
from capi_cli.delivery.types import (
    DeliverableEvent,
    DeliveryOptions,
    DeliverySummary,
    EventReport,
    EventSender,
)
from capi_cli.errors import SetupError
from capi_cli.events.jsontext import payload_json
from capi_cli.ledger import LedgerState, PendingEvent
from capi_cli.ledger.facts import facts_of

if TYPE_CHECKING:
    from capi_cli.ledger import LedgerStore


def json_of(event: DeliverableEvent) -> str:
    """The event's payload as compact JSON: its own text when it has one (BuiltEvent.payload_json)."""
    text = getattr(event, "payload_json", None)
    return text if type(text) is str else payload_json(event.payload)


class RequestTurns:
    """The --concurrency request slots, taken in the order the batches were handed out (a ticket
    each), so `--concurrency 1` sends them in input order however long each one's claim took.
    A ticket whose batch will not send (nothing left to claim, a stop, an error) is passed."""

    def __init__(self, slots: int) -> None:
        self._cond = threading.Condition()
        self._free = slots
        self._issued = 0
        self._next = 0  # the ticket whose turn is next
        self._passed: set[int] = set()

    def ticket(self) -> int:
        with self._cond:
            self._issued += 1
            return self._issued - 1

    @contextmanager
    def turn(self, ticket: int) -> Iterator[None]:
        with self._cond:
            while ticket != self._next or self._free == 0:
                self._cond.wait()
            self._free -= 1
            self._advance()
        try:
            yield
        finally:
            with self._cond:
                self._free += 1
                self._cond.notify_all()

    def pass_(self, ticket: int) -> None:
        """Give up `ticket` if its turn has not come (else nothing: it was taken or passed)."""
        with self._cond:
            if ticket == self._next:
                self._advance()
            elif ticket > self._next:
                self._passed.add(ticket)

    def _advance(self) -> None:
        self._next += 1
        while self._next in self._passed:
            self._passed.remove(self._next)
            self._next += 1
        self._cond.notify_all()


class BatchSender:
    """Sends one batch at a time from a worker thread; the state it shares with the main thread
    is set up by delivery.engine._Delivery."""

    ledger: LedgerStore | None
    client: EventSender | None
    dataset_id: str
    options: DeliveryOptions
    stop: threading.Event
    summary: DeliverySummary
    _lock: threading.Lock
    _successes: int
    _singleton_refusals: int
    _pause_until: float
    _was_sent: set[tuple[str, str]]
    _claim_from: dict[tuple[str, str], str]
    _request_turns: RequestTurns
    _worker_error: BaseException | None

    def _run_batch(self, events: list[DeliverableEvent], batch_id: str, ticket: int) -> None:
        try:
            self._send(events, batch_id, isolating=False, ticket=ticket)
        except BaseException as exc:  # a bug or a ledger failure: stop the run, re-raise in the caller
            with self._lock:
                if self._worker_error is None:
                    self._worker_error = exc
            self.stop.set()
        finally:
            self._request_turns.pass_(ticket)

    def _send(
        self, events: list[DeliverableEvent], batch_id: str, *, isolating: bool, ticket: int | None = None
    ) -> None:
        assert self.ledger is not None and self.client is not None
        ledger, n = self.ledger, len(events)
        with self._lock:
            seen = [self._claim_from.pop((e.event_name, e.event_id), None) for e in events]
        pending = [PendingEvent(e.event_name, e.event_id, e.event_time, e.source, e.line, e.payload_hash,
                                claim_from=c, facts=facts_of(e)) for e, c in zip(events, seen, strict=True)]
        keys = [(e.event_name, e.event_id) for e in events]
        # A client that takes the events' JSON text saves decoding and encoding each payload again.
        send_json = getattr(self.client, "send_events_json", None)
        payloads: list[Any] = ([json_of(e) for e in events] if send_json is not None
                               else [e.payload for e in events])
        attempt = 0
        turns = self._request_turns
        while True:
            # The first attempt's turn was given when the batch was handed out; a retry or an
            # isolated half queues up behind the batches handed out since.
            turn = ticket if ticket is not None else turns.ticket()
            ticket = None
            try:
                if self.stop.is_set() or not self._wait_for_pause():
                    # Not (re)sent: never begun, or settled `failed` after the last refusal/attempt.
                    self._count_not_sent(n, first=attempt == 0 and not isolating)
                    return
                claimed = ledger.begin_batch(self.dataset_id, batch_id, pending)
                if len(claimed) < n:
                    # Another run (PostgreSQL: several at once) holds or sent the rest: not ours.
                    kept = [i for i, key in enumerate(keys) if key in claimed]
                    with self._lock:
                        self.summary.skipped += n - len(kept)
                    events, pending = [events[i] for i in kept], [pending[i] for i in kept]
                    keys, payloads = [keys[i] for i in kept], [payloads[i] for i in kept]
                    if not (n := len(events)):
                        return
                with turns.turn(turn):
                    if self.summary.fatal is not None or not self._wait_for_pause():
                        # A fatal answer (a bad token: every request would get it), or a stop during
                        # a throttle, while this batch waited for its turn: claimed, never sent.
                        # (A Ctrl-C lets a begun batch go.)
                        self._settle(batch_id, keys, LedgerState.FAILED, None)
                        self._count_not_sent(n, first=attempt == 0 and not isolating)
                        return
                    if send_json is not None:
                        outcome = send_json(self.dataset_id, payloads)
                    else:
                        outcome = self.client.send_events(self.dataset_id, payloads)
                    # What stops the run is decided before the slot frees, so no waiting batch goes.
                    if outcome.kind is OutcomeKind.FATAL:
                        self._fatal(outcome.setup_error())
                    elif outcome.kind is OutcomeKind.REFUSED and n == 1:
                        self._note_singleton_refusal(outcome)
            finally:
                turns.pass_(turn)
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
                return
            self._settle(batch_id, keys, LedgerState.FAILED, outcome)
            middle = n // 2
            self._send(events[:middle], f"{batch_id}.0", isolating=True)
            self._send(events[middle:], f"{batch_id}.1", isolating=True)
            return

    def _count_not_sent(self, n: int, *, first: bool) -> None:
        with self._lock:
            if first:
                self.summary.unsent += n
            else:
                self.summary.failed += n

    def _settle(
        self, batch_id: str, keys: list[tuple[str, str]], state: LedgerState, outcome: Outcome | None
    ) -> None:
        """Record the batch's outcome (None: never sent, settled `failed` without an error)."""
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
            error_code=None if outcome is None else outcome.code,
            error_subcode=None if outcome is None else outcome.subcode,
            error_message=None if outcome is None or outcome.ok else outcome.describe(),
            fbtrace_id=None if outcome is None else outcome.fbtrace_id,
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

