"""The referral join a chunk at a time: one batched ledger lookup for a chunk of records.

EventBuilder asks its referral store one customer at a time (`latest_whatsapp_referral`,
`account_for_user`). Asked of the ledger row by row, that is a query per order; `BatchedJoin`
stands in for the store: `prefetch` works out, for a chunk of staged records, every question the
builder is about to ask, and answers them all with one batched lookup (ledger.referrals). The
builder then finds its answers here. A question not foreseen goes to the store itself, so an
answer is always the store's answer: a chunk batched or not, in workers or not, builds the same.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol

from capi_cli.events.build import EventBuilder, Head
from capi_cli.events.fields import first_value

# Messenger / Instagram: the customer's id field and the account field a stored referral fills.
_ACCOUNT_FIELDS = {"messenger": ("page_scoped_user_id", "page_id"), "instagram": ("ig_sid", "ig_account_id")}


class BatchStore(Protocol):
    """What the batched join needs from the ledger (ledger.referrals.ReferralStore)."""

    def latest_whatsapp_referral(self, user: str, at: int, window_seconds: int) -> dict[str, Any] | None: ...

    def latest_whatsapp_referrals(
        self, asks: Sequence[tuple[Sequence[str], int]], window_seconds: int,
        digests: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any] | None]: ...

    def account_for_user(self, channel: str, user_id: str) -> str | None: ...

    def accounts_for_users(self, channel: str, users: Iterable[str]) -> dict[str, str]: ...


class BatchedJoin:
    """A referral store for EventBuilder answering from the last chunk's batched lookup."""

    def __init__(self, store: BatchStore) -> None:
        self.store = store
        self._latest: dict[tuple[str, int], dict[str, Any] | None] = {}
        self._window: int | None = None
        self._accounts: dict[tuple[str, str], str | None] = {}

    def prefetch(self, builder: EventBuilder, rows: Iterable[tuple[Head, dict[str, Any]]]) -> None:
        """Look up, at once, every referral `builder.body` will ask for these (head, record) pairs."""
        asks: dict[tuple[str, int], None] = {}
        digests: dict[str, str] = {}  # a phone's SHA-256, as `ph` has it: its stored customer key
        users: dict[str, set[str]] = {"messenger": set(), "instagram": set()}
        for head, record in rows:
            channel = head.channel
            if channel == "whatsapp":
                at = head.event_time
                if at is None or first_value(record.get("ctwa_clid")) is not None:
                    continue
                for user in whatsapp_candidates(builder, record, digests):
                    asks[(user, at)] = None
            elif channel in _ACCOUNT_FIELDS:
                user_field, account_field = _ACCOUNT_FIELDS[channel]
                customer = first_value(record.get(user_field))
                if customer is not None and first_value(record.get(account_field)) is None:
                    users[channel].add(customer)
        window = builder.window_seconds
        questions = list(asks)
        answers = self.store.latest_whatsapp_referrals([((user,), at) for user, at in questions], window, digests)
        self._latest = dict(zip(questions, answers, strict=True))
        self._window = window
        self._accounts = {}
        for channel, wanted in users.items():
            if wanted:
                known = self.store.accounts_for_users(channel, wanted)
                self._accounts.update({(channel, user): known.get(user) for user in wanted})

    def latest_whatsapp_referral(self, user: str, at: int, window_seconds: int) -> dict[str, Any] | None:
        if window_seconds == self._window:
            try:
                return self._latest[(user, at)]
            except KeyError:
                pass
        return self.store.latest_whatsapp_referral(user, at, window_seconds)

    def account_for_user(self, channel: str, user_id: str) -> str | None:
        try:
            return self._accounts[(channel, user_id.strip())]
        except KeyError:
            return self.store.account_for_user(channel, user_id)


def whatsapp_candidates(builder: EventBuilder, record: dict[str, Any], digests: dict[str, str]) -> list[str]:
    """The users EventBuilder.body looks a WhatsApp record up by, in its order: the wa_id, the
    phone as `ph` normalizes it (the first value that normalizes, as body hashes it), the BSUID.

    The phone is normalized and hashed here through the builder's own cache, where body finds
    it: each phone is normalized once, not once here and once again in body. Its hash (the
    referral store's key for it) goes into `digests`."""
    raw = record["ph"] if "ph" in record else record.get("wa_id")
    phone: str | None = None
    if raw is not None:
        builder._digests.setdefault("ph", {})
        hashes, phone = builder._hash_field("ph", raw, builder.phone_context(record), [])
        if phone is not None:
            digests[phone] = hashes[0]
    return builder._whatsapp_users(record, phone)  # the same list body asks for


def batched(referrals: Any) -> Any:
    """The referral store as the builder should ask it: a chunk of records at a time when the
    store can answer batches (the ledger), else as it is."""
    if referrals is None or not hasattr(referrals, "latest_whatsapp_referrals"):
        return referrals
    return BatchedJoin(referrals)
