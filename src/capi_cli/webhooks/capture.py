"""`extract-referral`'s core: the referrals of webhook dumps, stored in the ledger a chunk at a
time while they stream to the caller's output (SPEC §3).

A repeated delivery that adds fields is stored (merged into the first copy), not output again;
referrals that are no ad (listed by --all-referrals) are output, never stored: they must not take
part in the referral join.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any, Protocol

from capi_cli.webhooks.extraction import extract
from capi_cli.webhooks.model import ExtractStats, Referral, Unreadable, Unrecognised

STORE_CHUNK = 500  # referrals per transaction: one prepared statement each (ledger.referrals)


class ReferralSink(Protocol):
    """Where captured referrals go: the ledger's referral store."""

    def store_referrals(self, records: Sequence[Mapping[str, Any]]) -> tuple[int, int]: ...


@dataclass
class CaptureReport:
    """What one capture found and stored; complete once its items have all been read."""

    stats: ExtractStats = field(default_factory=ExtractStats)
    storing: bool = False
    stored_new: int = 0
    stored_already: int = 0

    def warnings(self, channel_given: bool) -> list[str]:
        stats, found = self.stats, []
        if stats.unrecognised:
            found.append(
                f"{stats.unrecognised} document(s) in a shape capi does not recognise were skipped "
                "(-v lists each one's file:line and top-level keys)"
            )
        if stats.channel_guessed and not channel_given:
            found.append(
                f"{stats.channel_guessed} referral(s) from payloads without `object` could be Messenger or "
                "Instagram; labelled messenger: give --channel instagram if they are Instagram's"
            )
        if stats.estimated:
            found.append(
                f"{stats.estimated} referral(s) carry no time in the dump: stored with the file's "
                "modification time, marked estimated"
            )
        return found


def extract_and_store(
    paths: Sequence[str],
    report: CaptureReport,
    *,
    sink: ReferralSink | None,
    app_secret: str | None = None,
    channel: str | None = None,
    require_valid_signature: bool = False,
    all_referrals: bool = False,
    stdin: IO[bytes] | None = None,
) -> Iterator[Referral | Unreadable | Unrecognised]:
    """Each referral to output (and each unreadable or unrecognised input, for the caller to
    report), in input order; ad referrals are stored in `sink` as they pass. `report` holds the
    counts once the iterator is exhausted (the last chunk is stored then)."""
    report.storing = sink is not None
    items = extract(paths, app_secret=app_secret, channel=channel, require_valid_signature=require_valid_signature,
                    all_referrals=all_referrals, stdin=stdin, stats=report.stats)
    pending: list[dict[str, Any]] = []

    def flush() -> None:
        if sink is not None and pending:
            new, already = sink.store_referrals(pending)
            report.stored_new += new
            report.stored_already += already
            pending.clear()

    for item in items:
        if isinstance(item, Referral):
            if sink is not None and item.is_ad:
                pending.append(item.store_record())
                if len(pending) >= STORE_CHUNK:
                    flush()
            if item.repeat:
                continue
        yield item
    flush()
