"""What delivery takes and gives: the event and sender protocols, the options, the summary of a run
(SPEC §7's JSON keys) and the progress reports. The engine is capi_cli.delivery."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from capi_cli.delivery.answers import Outcome
from capi_cli.errors import ExitCode, SetupError, UsageError, worst
from capi_cli.rules import MAX_EVENTS_PER_REQUEST


class DeliverableEvent(Protocol):
    """What deliver needs of an event (events.pipeline.BuiltEvent has it)."""

    @property
    def event_name(self) -> str: ...
    @property
    def event_id(self) -> str: ...
    @property
    def event_time(self) -> int: ...
    @property
    def payload(self) -> Mapping[str, Any]: ...
    @property
    def source(self) -> str | None: ...
    @property
    def line(self) -> int | None: ...
    @property
    def payload_hash(self) -> str | None: ...


class EventSender(Protocol):
    """The part of graph.GraphClient that deliver uses (a fake in unit tests, if ever needed)."""

    def send_events(self, dataset_id: str, events: Sequence[Mapping[str, Any]]) -> Outcome: ...


@dataclass(frozen=True)
class DeliveryOptions:
    batch_size: int = 1000
    concurrency: int = 4
    max_retries: int = 5
    resend: bool = False  # send again events the ledger says were sent (the CLI warns)
    resend_uncertain: bool = False  # send again events whose earlier outcome is unknown
    dry_run: bool = False  # no request, no ledger write; counts what would be sent
    backoff_base: float = 0.5  # seconds; doubled per attempt, with jitter
    backoff_max: float = 30.0
    retry_after_max: float = 60.0  # cap on waits Meta asks for (Retry-After, usage headers)
    # Meta refusing this many events one by one, with nothing accepted in the run, is a request-level
    # problem (app secret, test_event_code, dataset setup), not bad events: stop instead of
    # isolating every event of the input at two requests each.
    refusal_breaker: int = 16
    report_limit: int = 1000  # rejected/uncertain/failed events kept for the final report

    def check(self) -> None:
        if not 1 <= self.batch_size <= MAX_EVENTS_PER_REQUEST:
            raise UsageError(f"--batch-size must be between 1 and {MAX_EVENTS_PER_REQUEST}, not {self.batch_size}")
        if self.concurrency < 1:
            raise UsageError(f"--concurrency must be at least 1, not {self.concurrency}")
        if self.max_retries < 0:
            raise UsageError(f"max_retries must be 0 or more, not {self.max_retries}")


@dataclass(frozen=True)
class EventReport:
    """One event for the final report (rejected, uncertain or failed)."""

    event_name: str
    event_id: str
    code: int | None
    subcode: int | None
    message: str
    source: str | None = None
    line: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "event_name": self.event_name,
            "event_id": self.event_id,
            "code": self.code,
            "subcode": self.subcode,
            "message": self.message,
            "source": f"{self.source}:{self.line}" if self.source and self.line else self.source,
        }


SUMMARY_KEYS = (
    "read",
    "invalid",
    "attributed",
    "unattributed",
    "filtered",
    "skipped",
    "sent",
    "rejected",
    "failed",
    "uncertain",
    "batches",
    "requests",
    "dry_run",
)


@dataclass
class DeliverySummary:
    """SPEC §7 summary. deliver fills the delivery side; the caller adds read/invalid/attributed
    (and adds the rows its pipeline skipped before hashing to `skipped`)."""

    read: int = 0
    invalid: int = 0
    attributed: int = 0
    unattributed: int = 0  # built, but no ad to credit: not sent (SPEC §4)
    filtered: int = 0  # rows --where left out
    skipped: int = 0  # ledger says sent (or rejected with the same payload), or a duplicate key
    sent: int = 0  # in a dry run: would be sent
    rejected: int = 0
    failed: int = 0
    uncertain: int = 0  # this run's ambiguous outcomes + earlier uncertain events not resent
    batches: int = 0
    requests: int = 0
    dry_run: bool = False
    # beyond the JSON keys
    delivered_events: int = 0  # events deliver was given (its share of `read`)
    duplicates: int = 0  # of `skipped`: same key twice in this run
    resent: int = 0  # events sent again although the ledger said sent (--resend)
    earlier_uncertain: int = 0  # of `uncertain`: left by an earlier run and not resent
    unsent: int = 0  # not sent because the run stopped (fatal error or interruption)
    fatal: SetupError | None = None
    interrupted: bool = False
    rejected_events: list[EventReport] = field(default_factory=list)
    uncertain_events: list[EventReport] = field(default_factory=list)
    failed_events: list[EventReport] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in SUMMARY_KEYS}

    @property
    def exit_code(self) -> ExitCode:
        """SPEC §1: setup (3) over incomplete (4) over data (1); interruption is 130."""
        codes = [ExitCode.OK]
        if self.invalid or self.rejected:
            codes.append(ExitCode.DATA)
        if self.failed or self.uncertain:
            codes.append(ExitCode.INCOMPLETE)
        if self.fatal is not None:
            codes.append(ExitCode.SETUP)
        if self.interrupted:
            return ExitCode.INTERRUPTED
        return worst(*codes)


@dataclass(frozen=True)
class DeliveryProgress:
    """Counters for a progress bar; passed to the callback from the calling thread only."""

    events: int
    skipped: int
    sent: int
    rejected: int
    failed: int
    uncertain: int
    batches: int
    requests: int
    in_flight: int
    elapsed: float


ProgressCallback = Callable[[DeliveryProgress], None]
