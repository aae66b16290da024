"""The ledger: what was sent (events and their states) and the referrals captured from webhooks.

`store` is the SQLite store (lock, recovery, batches, queries); `schema` the states, columns and
the ordered migrations; `files` creates and checks the database file; `referrals` the referral half.
"""

from capi_cli.ledger.store import (
    EVENT_COLUMNS,
    MIGRATIONS,
    REFERRAL_COLUMNS,
    EventKey,
    Ledger,
    LedgerState,
    PendingEvent,
    iso_z,
    parse_iso_z,
    phone_digits,
    phone_key,
)

__all__ = [
    "EVENT_COLUMNS",
    "MIGRATIONS",
    "REFERRAL_COLUMNS",
    "EventKey",
    "Ledger",
    "LedgerState",
    "PendingEvent",
    "iso_z",
    "parse_iso_z",
    "phone_digits",
    "phone_key",
]
