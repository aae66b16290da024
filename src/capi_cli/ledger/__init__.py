"""The ledger: what was sent (events and their states) and the referrals captured from webhooks.

`types` is the one storage interface (LedgerStore), the reference a worker process opens
(LedgerRef) and `open_ledger`; `store` the SQLite backend (single-sender lock), `postgres` the
PostgreSQL backend (claims, run registry); `queries` the event queries both share, `schema` the
states, columns and the ordered migrations of both; `files` creates and checks the SQLite file;
`referrals` the referral store each ledger holds as `ledger.referrals` (`pg_referrals` its
storing steps on PostgreSQL); `facts` the report
facts and runs of both; `copy` moves a SQLite ledger to PostgreSQL; `location` tells a URL from a
path and masks its password.

Names are loaded on first use, so `config` can use `ledger.location` without loading SQLite.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from capi_cli.ledger.location import LedgerRef
    from capi_cli.ledger.referrals import iso_z, parse_iso_z, phone_digits, phone_key
    from capi_cli.ledger.schema import (
        EVENT_COLUMNS,
        MIGRATIONS,
        REFERRAL_COLUMNS,
        EventKey,
        LedgerState,
        PendingEvent,
    )
    from capi_cli.ledger.store import Ledger
    from capi_cli.ledger.types import LedgerStore, open_ledger

_HOMES = {
    "EVENT_COLUMNS": "schema",
    "MIGRATIONS": "schema",
    "REFERRAL_COLUMNS": "schema",
    "EventKey": "schema",
    "LedgerState": "schema",
    "PendingEvent": "schema",
    "Ledger": "store",
    "LedgerRef": "location",
    "LedgerStore": "types",
    "open_ledger": "types",
    "iso_z": "referrals",
    "parse_iso_z": "referrals",
    "phone_digits": "referrals",
    "phone_key": "referrals",
}

__all__ = [
    "EVENT_COLUMNS",
    "MIGRATIONS",
    "REFERRAL_COLUMNS",
    "EventKey",
    "Ledger",
    "LedgerRef",
    "LedgerState",
    "LedgerStore",
    "PendingEvent",
    "iso_z",
    "open_ledger",
    "parse_iso_z",
    "phone_digits",
    "phone_key",
]


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'capi_cli.ledger' has no attribute {name!r}")
    return getattr(importlib.import_module(f"capi_cli.ledger.{home}"), name)
