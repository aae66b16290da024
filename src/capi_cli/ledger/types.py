"""The one storage interface both ledger backends implement, and the reference that opens one.

The send path asks the ledger its questions through `LedgerStore` only ("was this sent?",
"claim these", "settle these"), so the SQLite file and the PostgreSQL server are interchangeable;
a worker process gets a `LedgerRef` (picklable) and opens the same ledger itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, Protocol

from capi_cli.ledger.location import LedgerRef
from capi_cli.ledger.referrals import ReferralStore
from capi_cli.ledger.schema import EventKey, LedgerState, PendingEvent

__all__ = ["LedgerRef", "LedgerStore", "open_ledger"]

def open_ledger(location: str | Path | LedgerRef, *, worker: bool = False, raw: Any = None) -> LedgerStore:
    """The ledger at `location` (a file path, a postgresql:// URL, or a LedgerRef), migrated and ready.
    `worker`: for a process that asks it from one thread only (PostgreSQL: one connection, `raw`
    if one was made already)."""
    ref = location if isinstance(location, LedgerRef) else LedgerRef.parse(str(location))
    if ref.kind == "postgres":
        from capi_cli.ledger.postgres import PostgresLedger

        return PostgresLedger.open(ref.location, raw=raw, one_connection=worker)
    from capi_cli.ledger.store import Ledger

    return Ledger.open(ref.location)


class LedgerStore(Protocol):
    """Everything capi asks a ledger. States and JSON are the same on both backends."""

    @property
    def ref(self) -> LedgerRef: ...

    def close(self) -> None: ...

    def __enter__(self) -> LedgerStore: ...

    def __exit__(self, *exc: object) -> None: ...

    # -- sending -------------------------------------------------------------------------------
    def sender(self) -> AbstractContextManager[None]:
        """Held for a whole `capi send`: SQLite's single-sender lock (LedgerLocked, exit 5), or
        PostgreSQL's run registration with its liveness lock (several senders at once)."""
        ...

    def maintenance(self) -> AbstractContextManager[None]:
        """Held by `ledger forget`: no send's claimed rows may go from under it (SQLite: the send
        lock, exit 5 while a send runs; PostgreSQL: forget leaves `in_flight` rows alone)."""
        ...

    def recover_in_flight(self) -> int:
        """`in_flight` events of runs that are gone -> `uncertain` (never a live run's)."""
        ...

    def state_of(self, dataset_id: str, event_name: str, event_id: str) -> LedgerState | None: ...

    def entries(self, dataset_id: str, keys: Sequence[EventKey]) -> dict[EventKey, tuple[str, str | None]]: ...

    def sent_among(self, dataset_id: str, keys: Sequence[EventKey]) -> set[EventKey]:
        """The keys recorded `sent`: what a re-run skips. One round trip per call."""
        ...

    def begin_batch(self, dataset_id: str, batch_id: str, events: Sequence[PendingEvent]) -> set[EventKey]:
        """Claim the events `in_flight` for this run, committed before the request; returns the
        keys this run won (another run may hold or have sent the rest)."""
        ...

    def settle(
        self,
        dataset_id: str,
        batch_id: str,
        keys: Iterable[EventKey],
        state: LedgerState | str,
        *,
        error_code: int | None = None,
        error_subcode: int | None = None,
        error_message: str | None = None,
        fbtrace_id: str | None = None,
    ) -> None: ...

    def count(self, state: LedgerState | str, dataset_id: str | None = None) -> int: ...

    # -- looking and maintaining ---------------------------------------------------------------
    def stats(self) -> dict[str, Any]: ...

    def list_events(
        self,
        state: str | None = None,
        event_name: str | None = None,
        dataset_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = None,
    ) -> Iterator[dict[str, Any]]: ...

    def forget(
        self,
        state: str | None = None,
        event_name: str | None = None,
        dataset_id: str | None = None,
        event_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> int: ...

    def prune(self, older_than_seconds: float, state: str | None = None) -> int: ...

    # -- referrals -----------------------------------------------------------------------------
    @property
    def referrals(self) -> ReferralStore:
        """The referral half (ledger.referrals): stored by `extract-referral`, read by the join,
        listed by `capi referrals`; on this ledger's connection."""
        ...

    # -- report facts and runs (capi report) ---------------------------------------------------
    def record_run(
        self, *, started_at: float, dataset_id: str | None, inputs: Sequence[str], counts: Mapping[str, Any],
        exit_code: int,
    ) -> str:
        """One `capi send` in `runs`: when, which inputs, the summary's counts, the exit code."""
        ...

    def report_query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """A read for capi_cli.report, in portable SQL with `?` placeholders."""
        ...
