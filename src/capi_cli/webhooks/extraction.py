"""From webhook dumps to referral records: read, unwrap, extract per channel, check, de-duplicate."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO

from capi_cli.errors import UsageError
from capi_cli.rules import CHANNELS
from capi_cli.webhooks import messenger, signature, twilio, whatsapp
from capi_cli.webhooks.model import REFERRAL_KEYS, Delivery, ExtractStats, Referral, Unreadable, Unrecognised
from capi_cli.webhooks.reader import iter_inputs, read_input, resolve_inputs
from capi_cli.webhooks.shapes import shape_of
from capi_cli.webhooks.unwrap import deliveries, received_time


def extract(
    paths: Sequence[str],
    *,
    app_secret: str | None = None,
    channel: str | None = None,
    require_valid_signature: bool = False,
    all_referrals: bool = False,
    stdin: IO[bytes] | None = None,
    stats: ExtractStats | None = None,
) -> Iterator[Referral | Unreadable | Unrecognised]:
    """Referral records of every delivery in PATHs (`-` is stdin, directories are read recursively).

    Paths are checked at once (UsageError for a missing one); records then stream in input order,
    each message repeated by Meta's retries once. Only ad referrals are records unless
    `all_referrals`. A repeated delivery that carries fields the first copy lacked comes again
    with `repeat=True`: for the store to merge, not to output. Unreadable input and documents in
    no known shape come as `Unreadable` / `Unrecognised` items among them. `stats`, when given, is
    filled in as the iterator advances.
    """
    if channel is not None and channel not in CHANNELS:
        raise UsageError(f"--channel must be one of {', '.join(CHANNELS)}, not {channel!r}")
    if require_valid_signature and not app_secret:
        raise UsageError(
            "--require-valid-signature needs an app secret (--app-secret-env NAME or CAPI_APP_SECRET)"
        )
    resolved = resolve_inputs(paths)
    options = _Options(app_secret, channel, require_valid_signature, all_referrals)
    return _run(resolved, options, stdin, stats or ExtractStats())


@dataclass(frozen=True, slots=True)
class _Options:
    app_secret: str | None
    channel: str | None
    require_valid_signature: bool
    all_referrals: bool


def _run(
    resolved: list[str | None], options: _Options, stdin: IO[bytes] | None, stats: ExtractStats
) -> Iterator[Referral | Unreadable | Unrecognised]:
    # dedup key -> the fields the record had when produced (a bit per field), to see what a copy adds
    seen: dict[bytes, int] = {}
    for item in iter_inputs(resolved):
        stats.files += 1
        file_time = _file_time(item.path)
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
                records = referrals_of(delivery, options.channel, stats)
                if records:
                    yield from _records(records, delivery, options, stats, seen, file_time)
                else:
                    stats.skipped += 1
            if not found_any:
                stats.unrecognised += 1
                yield Unrecognised(doc.source, doc.line, _top_level_keys(doc.value))


def _records(
    records: list[Referral],
    delivery: Delivery,
    options: _Options,
    stats: ExtractStats,
    seen: dict[bytes, int],
    file_time: str,
) -> Iterator[Referral]:
    ads = [r for r in records if r.is_ad]
    stats.non_ad += len(records) - len(ads)
    # An ad referral with neither a user id nor a click id (sender `NaN`, `{}`, a list) can never
    # be joined to an event: a broken delivery, not a record. Non-ads are only listed.
    ads = [r for r in ads if _identifies(r)]
    records = [r for r in records if not r.is_ad or _identifies(r)] if options.all_referrals else ads
    if not records:
        stats.skipped += 1
        return
    verdict = signature.check(delivery.raw_body, delivery.signature_header, options.app_secret)
    received: str | None = None
    for record in records:
        record.signature = verdict
        if (options.channel and record.channel != options.channel) or (
            options.require_valid_signature and verdict != signature.VALID
        ):
            stats.filtered += 1
            continue
        if record.timestamp is None:
            received = received or received_time(delivery.wrappers) or ""
            if received:
                record.timestamp = received
            else:
                record.timestamp, record.timestamp_estimated = file_time, True
        key = dedup_key(record)
        mask = _present(record)
        first = seen.get(key)
        if first is not None:
            stats.duplicates += 1
            if mask & ~first:
                # This copy knows more (a contact, a click id): the store merges it into the first.
                seen[key] = first | mask
                stats.merged += 1
                record.repeat = True
                yield record
            continue
        seen[key] = mask
        stats.referrals += 1
        stats.estimated += record.timestamp_estimated
        yield record


def referrals_of(delivery: Delivery, channel_hint: str | None, stats: ExtractStats) -> list[Referral]:
    shape = shape_of(delivery.payload)
    origin = delivery.origin
    if shape == "whatsapp":
        records, messages = whatsapp.extract(delivery.payload, origin)
    elif shape == "twilio":
        records, messages = twilio.extract(delivery.payload, origin)
    elif shape in ("messenger", "instagram", "page_or_ig"):
        records, messages, guessed = messenger.extract(delivery.payload, origin, channel_hint)
        stats.channel_guessed += guessed * len(records)
    else:
        return []
    stats.messages += messages
    return records


def _identifies(record: Referral) -> bool:
    return bool(record.user_id or record.wa_id or record.bsuid or record.ctwa_clid)


_MERGED_FIELDS = tuple(k for k in REFERRAL_KEYS if k not in ("signature", "origin"))


def _present(record: Referral) -> int:
    mask = 0
    for bit, key in enumerate(_MERGED_FIELDS):
        if getattr(record, key) is not None:
            mask |= 1 << bit
    return mask


def dedup_key(record: Referral) -> bytes:
    """Equal for the same message delivered again (Meta's retries, a relay's copy): channel,
    business (phone number id first for WhatsApp: a bare `value` copy has no WABA id) and message
    id. Two businesses' messages that share an id stay apart."""
    if record.message_id:
        parts: tuple[str | None, ...] = (
            record.channel,
            record.phone_number_id or record.business_id,
            record.message_id,
        )
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


def _file_time(path: str | None) -> str:
    """The best a dump without times holds: the file's modification time (stdin: now)."""
    try:
        when = os.stat(path).st_mtime if path is not None else time.time()
    except OSError:
        when = time.time()
    return datetime.fromtimestamp(when, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _top_level_keys(value: object) -> tuple[str, ...]:
    if isinstance(value, dict):
        return tuple(str(k) for k in value)
    return (f"<{type(value).__name__}>",)
