"""What the webhook reader produces: referral records, unreadable input, and run statistics."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass(slots=True)
class Referral:
    """One ad referral found in a webhook delivery; the keys and their order are SPEC §3's output record."""

    channel: str  # whatsapp | messenger | instagram
    ctwa_clid: str | None = None
    ad_id: str | None = None
    source_type: str | None = None
    source_url: str | None = None
    headline: str | None = None
    body: str | None = None
    media_type: str | None = None
    ref: str | None = None
    user_id: str | None = None
    wa_id: str | None = None
    bsuid: str | None = None
    username: str | None = None
    profile_name: str | None = None
    business_id: str | None = None
    phone_number_id: str | None = None
    message_id: str | None = None
    timestamp: str | None = None
    kind: str | None = None  # message | referral | postback | automatic_event
    signature: str | None = None  # valid | invalid | unverifiable; None without an app secret
    origin: str | None = None  # file:line
    # Not output keys (SPEC §3 fixes those): what extraction and the store need to know.
    is_ad: bool = field(default=True, compare=False)  # False: m.me / ig.me link, Shops product, plugin...
    timestamp_estimated: bool = field(default=False, compare=False)  # from the file's date, not the dump
    repeat: bool = field(default=False, compare=False)  # a repeated delivery adding fields: store only

    def to_dict(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in REFERRAL_KEYS}

    def store_record(self) -> dict[str, Any]:
        """What the ledger stores: the output keys and whether the time is an estimate."""
        record = self.to_dict()
        record["timestamp_estimated"] = self.timestamp_estimated
        return record


_INTERNAL = ("is_ad", "timestamp_estimated", "repeat")
REFERRAL_KEYS: tuple[str, ...] = tuple(f.name for f in fields(Referral) if f.name not in _INTERNAL)


@dataclass(frozen=True, slots=True)
class Unrecognised:
    """A document in no shape capi knows (no webhook payload, no known envelope): counted, shown with -v."""

    source: str
    line: int
    keys: tuple[str, ...]

    def __str__(self) -> str:
        shown = ", ".join(self.keys[:12]) + (", ..." if len(self.keys) > 12 else "")
        return f"{self.source}:{self.line}: unrecognised document (top-level keys: {shown or 'none'})"


@dataclass(frozen=True, slots=True)
class Unreadable:
    """Input that could not be read; the rest of the input is still processed."""

    source: str
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = self.source if self.line is None else f"{self.source}:{self.line}"
        return f"{where}: {self.reason}"


@dataclass(slots=True)
class Document:
    """One JSON document (or form body) read from an input, with the line where it starts."""

    value: Any
    source: str
    line: int


@dataclass(slots=True)
class Delivery:
    """One webhook payload as Meta or Twilio posted it, unwrapped from whatever logged it.

    `raw_body` is the body exactly as received when the dump kept it (needed for signatures);
    `signature_header` is the `X-Hub-Signature-256` value kept beside it, if any.
    """

    payload: dict[str, Any]
    source: str
    line: int
    raw_body: bytes | None = None
    signature_header: str | None = None
    wrappers: tuple[dict[str, Any], ...] | None = None  # what logged it, innermost first (for its time)

    @property
    def origin(self) -> str:
        return f"{self.source}:{self.line}"


@dataclass(slots=True)
class ExtractStats:
    """Counts for the summary line of `extract-referral`."""

    files: int = 0
    deliveries: int = 0  # webhook payloads found (after unwrapping request logs)
    messages: int = 0  # messages, postbacks, referral events and automatic events examined
    referrals: int = 0  # records produced (after de-duplication and filters)
    non_ad: int = 0  # referrals that are no ad (m.me / ig.me links, Shops products, chat plugin)
    skipped: int = 0  # deliveries without any referral (statuses, plain messages, reads, echoes)
    duplicates: int = 0  # records repeated by Meta's retries, produced once
    merged: int = 0  # of those, copies that carried fields the first lacked (merged in the store)
    filtered: int = 0  # records left out by --channel or --require-valid-signature
    estimated: int = 0  # records whose time is the file's date: the dump held none
    channel_guessed: int = 0  # Messenger-or-Instagram records labelled without evidence
    unrecognised: int = 0  # documents in no shape capi knows
    unreadable: int = 0  # broken lines, bad encoding, binary files

    def to_dict(self) -> dict[str, int]:
        return asdict(self)
