"""One `capi send` run: read → validate → build → deliver, under the ledger lock.

The order matters for exactly-once: the lock is taken before anything is read from the ledger,
`in_flight` rows of a dead run become `uncertain` before this run decides what to send, and an
event already `sent` is skipped before its row is normalized or hashed.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Any

from capi_cli.config import Settings
from capi_cli.delivery.engine import DeliveryOptions, DeliveryProgress, DeliverySummary, deliver, ledger_skip
from capi_cli.errors import ExitCode, UsageError, worst
from capi_cli.events.pipeline import BuildOptions, BuiltEvent, Problem, iter_events, referral_store
from capi_cli.events.shard import Shard
from capi_cli.events.validate import UNATTRIBUTED, all_unattributed_warning
from capi_cli.ledger import LedgerState, LedgerStore, open_ledger

if TYPE_CHECKING:
    from capi_cli.ledger.referrals import ReferralStore


@dataclass
class SendRequest:
    files: Sequence[str]
    build: BuildOptions
    dry_run: bool = False
    output: IO[str] | None = None  # NDJSON of the events as they are (or would be) sent
    test_event_code: str | None = None
    strict: bool = False
    resend: bool = False
    resend_uncertain: bool = False
    shard: Shard | None = None  # this host's share of the events (send --shard K/N)


@dataclass
class SendReport:
    summary: DeliverySummary
    problems: list[Problem] = field(default_factory=list)  # the first ones, for the report
    errors: int = 0  # invalid records (error problems may be several per record)
    warnings: list[str] = field(default_factory=list)
    pending_uncertain: int = 0  # uncertain events of this dataset in the ledger after the run
    strict_blocked: bool = False

    @property
    def exit_code(self) -> ExitCode:
        code = self.summary.exit_code
        if code is ExitCode.INTERRUPTED:
            return code
        if self.pending_uncertain:
            code = worst(code, ExitCode.INCOMPLETE)
        if self.errors:
            code = worst(code, ExitCode.DATA)
        return code


PROBLEMS_KEPT = 200


class _Counter:
    """Counts what the pipeline yields into the run's one DeliverySummary, as it passes the events
    on to delivery (which counts what becomes of them into the same summary)."""

    def __init__(self, items: Iterator[BuiltEvent | Problem], on_problem: Callable[[Problem], None],
                 summary: DeliverySummary, build: BuildOptions) -> None:
        self.items = items
        self.on_problem = on_problem
        self.summary = summary
        self.build = build
        self._last_invalid: tuple[str, int | None] | None = None

    def __iter__(self) -> Iterator[BuiltEvent]:
        summary = self.summary
        for item in self.items:
            if isinstance(item, Problem):
                self.on_problem(item)
                if item.code == UNATTRIBUTED and item.severity != "error":
                    summary.read += 1
                    summary.unattributed += 1
                elif item.severity == "error":
                    key = (item.source, item.record)
                    if key != self._last_invalid:
                        self._last_invalid = key
                        summary.invalid += 1
                        summary.read += 1
                continue
            summary.read += 1
            if item.attributed:
                summary.attributed += 1
            yield item
        summary.filtered = self.build.filtered  # rows --where left out, known once the input is read

    def unattributed_warning(self) -> str | None:
        """SPEC §4: one warning when no event of a long enough run had an ad to credit."""
        s = self.summary
        return all_unattributed_warning(s.read - s.invalid - s.unattributed, s.unattributed)


def _write_ndjson(stream: IO[str]) -> Callable[[Sequence[str]], None]:
    """`-o FILE`: each batch's events as the pipeline serialized them, one a line."""

    def sink(texts: Sequence[str]) -> None:
        if texts:
            stream.write("\n".join(texts))
            stream.write("\n")

    return sink


def run_send(
    settings: Settings,
    request: SendRequest,
    *,
    on_problem: Callable[[Problem], None] | None = None,
    progress: Callable[[DeliveryProgress], None] | None = None,
    stop: threading.Event | None = None,
) -> SendReport:
    for name in request.files:
        if name != "-" and not os.path.exists(name):
            raise UsageError(f"--file {name}: no such file")
        if name != "-" and os.path.isdir(name):
            raise UsageError(f"--file {name}: is a directory, not an events file")
    if not request.dry_run:
        settings.require_send()
    if request.strict and any(name == "-" for name in request.files):
        raise UsageError("--strict reads the input twice and cannot be used with stdin (-)")
    report_problems: list[Problem] = []
    error_records: set[tuple[str, int | None]] = set()

    def keep(problem: Problem) -> None:
        if problem.severity == "error":
            error_records.add((problem.source, problem.record))
        if len(report_problems) < PROBLEMS_KEPT:
            report_problems.append(problem)
        if on_problem is not None:
            on_problem(problem)

    dataset_id = settings.dataset_id or "dry-run"
    options = DeliveryOptions(
        batch_size=settings.batch_size,
        concurrency=settings.concurrency,
        max_retries=settings.max_retries,
        resend=request.resend,
        resend_uncertain=request.resend_uncertain,
        dry_run=request.dry_run,
    )

    def run_with(ledger: LedgerStore | None, client: Any) -> SendReport:
        referrals = ledger.referrals if ledger is not None else None
        if request.strict and _has_errors(settings, request, referrals):
            return _strict_blocked(settings, request, referrals, keep, report_problems, error_records)
        return _run(settings, request, ledger, client, dataset_id, options, keep, error_records,
                    report_problems, progress, stop)

    if request.dry_run:
        # The dry run is the send without the POST: it joins the same stored referrals as
        # `validate` and `send` (pipeline.referral_store, which creates nothing), with or
        # without a dataset id; only the ledger's `sent` records need a dataset to mean anything.
        ledger = referral_store(settings)
        try:
            return run_with(ledger, None)
        finally:
            if ledger is not None:
                ledger.close()

    from capi_cli.delivery.graph import GraphClient

    started_at = time.time()
    # SQLite: one sender (exit 5 for a second); PostgreSQL: this run registered, its claims its own.
    with open_ledger(settings.ledger) as ledger, ledger.sender():
        recovered = ledger.recover_in_flight()
        with GraphClient.from_settings(settings, test_event_code=request.test_event_code) as client:
            report = run_with(ledger, client)
        if recovered:
            report.warnings.append(
                f"{recovered} events left in flight by an interrupted run are now uncertain "
                "(`capi ledger list --status uncertain`)"
            )
        report.pending_uncertain = ledger.count(LedgerState.UNCERTAIN, dataset_id)
        _record_run(ledger, report, request, dataset_id, started_at, stop)
        return report


def _record_run(
    ledger: LedgerStore, report: SendReport, request: SendRequest, dataset_id: str, started_at: float,
    stop: threading.Event | None,
) -> None:
    """The run's counts and exit code in the ledger's `runs` (capi report): a cron job that
    fails every night shows there. A stop asked for (SIGTERM) ends in 130, as the command does."""
    exit_code = report.exit_code
    if stop is not None and stop.is_set() and report.summary.fatal is None:
        exit_code = ExitCode.INTERRUPTED
    ledger.record_run(
        started_at=started_at, dataset_id=dataset_id, inputs=list(request.files),
        counts=report.summary.to_dict(), exit_code=int(exit_code),
    )


def _has_errors(settings: Settings, request: SendRequest, referrals: ReferralStore | None) -> bool:
    """The --strict pre-check: the same pipeline, the same stored referrals as the send itself."""
    if any(name == "-" for name in request.files):
        raise UsageError("--strict reads the input twice and cannot be used with stdin (-)")
    items = iter_events(request.files, settings, request.build, referrals=referrals)
    try:
        for item in items:
            if isinstance(item, Problem) and item.severity == "error":
                return True
    finally:
        items.close()
    return False


def _strict_blocked(
    settings: Settings,
    request: SendRequest,
    referrals: ReferralStore | None,
    keep: Callable[[Problem], None],
    report_problems: list[Problem],
    error_records: set[tuple[str, int | None]],
) -> SendReport:
    """--strict: nothing is sent when any record is invalid; a second pass reports them all."""
    events = iter_events(request.files, settings, request.build, referrals=referrals)
    summary = DeliverySummary(dry_run=request.dry_run)
    counter = _Counter(events, keep, summary, request.build)
    try:
        for _ in counter:
            pass
    finally:
        events.close()
    return SendReport(summary, report_problems, errors=len(error_records), strict_blocked=True)


def _run(
    settings: Settings,
    request: SendRequest,
    ledger: LedgerStore | None,
    client: Any,
    dataset_id: str,
    options: DeliveryOptions,
    keep: Callable[[Problem], None],
    error_records: set[tuple[str, int | None]],
    report_problems: list[Problem],
    progress: Callable[[DeliveryProgress], None] | None,
    stop: threading.Event | None,
) -> SendReport:
    # A dry run without a dataset id has no `sent` records to skip: it only reads referrals.
    has_dataset = not request.dry_run or settings.dataset_id is not None
    if request.shard is not None and (ledger is None or request.resend or not has_dataset):
        raise UsageError("--shard needs the ledger: it cannot be combined with --resend, nor used in a dry run "
                         "without a dataset's ledger")
    summary = DeliverySummary(dry_run=request.dry_run)  # the run's counts: every counter adds to it
    skip = (ledger_skip(ledger, dataset_id, shard=request.shard, counts=summary)
            if ledger is not None and has_dataset and not request.resend else None)
    events = iter_events(request.files, settings, request.build,
                         referrals=ledger.referrals if ledger is not None else None, skip=skip)
    counter = _Counter(events, keep, summary, request.build)
    sink = _write_ndjson(request.output) if request.output is not None else None
    try:
        deliver(
            counter,
            ledger=ledger if has_dataset else None,
            client=client,
            dataset_id=dataset_id,
            options=options,
            progress=progress,
            sink_text=sink,
            stop=stop,
            keys_unique=True,  # iter_events reports a repeated key as duplicate_event_id
            summary=summary,
        )
    finally:
        events.close()  # worker processes, if any, stop now rather than when collected
    report = SendReport(summary, report_problems, errors=len(error_records))
    if (warning := counter.unattributed_warning()) is not None:
        report.warnings.append(warning)
    if request.resend and summary.resent:
        report.warnings.append(
            f"--resend: {summary.resent} events the ledger records as sent were sent again"
        )
    return report
