"""The pipeline's "sent already?" hook: a re-run skips what the ledger records as sent before
normalizing or hashing it, in this process or in the worker processes (which open the ledger
themselves from its LedgerRef)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from capi_cli.events.shard import Shard, skipped_among
from capi_cli.ledger.schema import LedgerState

if TYPE_CHECKING:
    from capi_cli.ledger import LedgerRef, LedgerStore


class LedgerSkip:
    """The events pipeline's `skip` hook: True for events the ledger says were sent, so a re-run
    does not even normalize and hash them. Other states are left to deliver (which counts them).

    `worker_spec` lets the pipeline's worker processes ask the ledger themselves (in batches);
    they report what they skipped to `note_skipped`, so `skipped` counts both ways. With a
    `shard` (send --shard K/N), events of the other shares are skipped the same way."""

    def __init__(
        self, ledger: LedgerStore, dataset_id: str, *, resend: bool = False, shard: Shard | None = None,
        counts: Any = None,
    ) -> None:
        self.ledger = ledger
        self.dataset_id = dataset_id
        self.resend = resend
        self.shard = shard
        # The run's counts (a DeliverySummary): an event skipped here was read and skipped.
        self.counts = counts if counts is not None else SimpleNamespace(read=0, skipped=0)

    @property
    def worker_spec(self) -> tuple[LedgerRef, str, Shard | None] | None:
        return None if self.resend else (self.ledger.ref, self.dataset_id, self.shard)

    def __call__(self, event_name: str, event_id: str) -> bool:
        if (self.shard is not None and not self.shard.holds(event_name, event_id)) or (
            not self.resend and self.ledger.state_of(self.dataset_id, event_name, event_id) is LedgerState.SENT
        ):
            self.note_skipped()
            return True
        return False

    def note_skipped(self, count: int = 1) -> None:
        self.counts.read += count
        self.counts.skipped += count

    @property
    def skipped(self) -> int:
        return int(self.counts.skipped)

    def sent_among(self, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """The keys to skip: recorded sent, or (with a shard) another host's share."""
        return skipped_among(lambda rest: self.ledger.sent_among(self.dataset_id, rest), self.shard, keys)


def ledger_skip(
    ledger: LedgerStore, dataset_id: str, *, resend: bool = False, shard: Shard | None = None, counts: Any = None,
) -> LedgerSkip:
    return LedgerSkip(ledger, dataset_id, resend=resend, shard=shard, counts=counts)
