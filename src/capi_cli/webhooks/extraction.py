"""From webhook dumps to referral records: read, unwrap, extract per channel, check, de-duplicate."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from typing import IO

from capi_cli.errors import UsageError
from capi_cli.rules import CHANNELS
from capi_cli.webhooks import messenger, signature, twilio, whatsapp
from capi_cli.webhooks.model import Delivery, ExtractStats, Referral, Unreadable
from capi_cli.webhooks.reader import iter_inputs, read_input, resolve_inputs
from capi_cli.webhooks.shapes import shape_of
from capi_cli.webhooks.unwrap import deliveries


def extract(
    paths: Sequence[str],
    *,
    app_secret: str | None = None,
    channel: str | None = None,
    require_valid_signature: bool = False,
    stdin: IO[bytes] | None = None,
    stats: ExtractStats | None = None,
) -> Iterator[Referral | Unreadable]:
    """Referral records of every delivery in PATHs (`-` is stdin, directories are read recursively).

    Paths are checked at once (UsageError for a missing one); records then stream in input order,
    each delivery repeated by Meta's retries once. Unreadable input comes as `Unreadable` items
    among them. `stats`, when given, is filled in as the iterator advances.
    """
    if channel is not None and channel not in CHANNELS:
        raise UsageError(f"--channel must be one of {', '.join(CHANNELS)}, not {channel!r}")
    if require_valid_signature and not app_secret:
        raise UsageError(
            "--require-valid-signature needs an app secret (--app-secret-env NAME or CAPI_APP_SECRET)"
        )
    resolved = resolve_inputs(paths)
    return _run(resolved, app_secret, channel, require_valid_signature, stdin, stats or ExtractStats())


def _run(
    resolved: list[str | None],
    app_secret: str | None,
    channel: str | None,
    require_valid_signature: bool,
    stdin: IO[bytes] | None,
    stats: ExtractStats,
) -> Iterator[Referral | Unreadable]:
    seen: set[bytes] = set()
    for item in iter_inputs(resolved):
        stats.files += 1
        for doc in read_input(item, stdin):
            if isinstance(doc, Unreadable):
                stats.unreadable += 1
                yield doc
                continue
            found_any = False
            for delivery in deliveries(doc):
                found_any = True
                if isinstance(delivery, Unreadable):
                    stats.unreadable += 1
                    yield delivery
                    continue
                stats.deliveries += 1
                # A referral with neither a user id nor a click id (sender `NaN`, `{}`, a list) can
                # never be joined to an event: it is a broken delivery, not a record to store.
                records = [r for r in referrals_of(delivery, channel, stats) if _identifies(r)]
                if not records:
                    stats.skipped += 1
                    continue
                verdict = signature.check(delivery.raw_body, delivery.signature_header, app_secret)
                for record in records:
                    record.signature = verdict
                    if (channel and record.channel != channel) or (
                        require_valid_signature and verdict != signature.VALID
                    ):
                        stats.filtered += 1
                        continue
                    key = dedup_key(record)
                    if key in seen:
                        stats.duplicates += 1
                        continue
                    seen.add(key)
                    stats.referrals += 1
                    yield record
            if not found_any:
                stats.skipped += 1  # a document that is no webhook delivery at all


def referrals_of(delivery: Delivery, channel_hint: str | None, stats: ExtractStats) -> list[Referral]:
    shape = shape_of(delivery.payload)
    origin = delivery.origin
    if shape == "whatsapp":
        records, messages = whatsapp.extract(delivery.payload, origin)
    elif shape == "twilio":
        records, messages = twilio.extract(delivery.payload, origin)
    elif shape is not None:
        records, messages = messenger.extract(delivery.payload, origin, channel_hint)
    else:
        return []
    stats.messages += messages
    return records


def _identifies(record: Referral) -> bool:
    return bool(record.user_id or record.wa_id or record.bsuid or record.ctwa_clid)


def dedup_key(record: Referral) -> bytes:
    """A short key that is equal for the same message delivered again (Meta retries)."""
    if record.message_id:
        parts: tuple[str | None, ...] = (record.channel, record.kind, record.message_id)
    else:
        parts = (
            record.channel,
            record.kind,
            record.user_id,
            record.business_id,
            record.timestamp,
            record.ctwa_clid,
            record.ad_id,
            record.ref,
            record.source_url,
        )
    joined = "\x1f".join(p or "" for p in parts).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(joined, digest_size=16).digest()
