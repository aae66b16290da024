"""The ledger's schema and vocabulary: states, columns and ordered migrations."""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class LedgerState(StrEnum):
    IN_FLIGHT = "in_flight"
    SENT = "sent"
    REJECTED = "rejected"
    FAILED = "failed"
    UNCERTAIN = "uncertain"


@dataclass(frozen=True, slots=True)
class PendingEvent:
    event_name: str
    event_id: str
    event_time: int
    source: str | None = None
    line: int | None = None
    payload_hash: str | None = None
    # The state this run read before deciding to send it (None: no row). On PostgreSQL the claim
    # succeeds only if the row is still in that state (or `failed`), so two runs never both win.
    claim_from: str | None = None


EventKey = tuple[str, str]

@dataclass(frozen=True, slots=True)
class DialectSQL:
    """A migration whose SQL differs between the backends (most are portable: a plain string,
    translated for PostgreSQL by `postgres_sql`)."""

    sqlite: str
    postgres: str


# Ordered migrations, shared by both backends; index + 1 is the schema version (SQLite's PRAGMA
# user_version, PostgreSQL's capi_schema table). Append only once released: a shipped migration
# is never edited. Write portable SQL (TEXT, INTEGER, REAL, plain indexes) or a DialectSQL.
#
# Events live in a rowid table so that a batch's rows are appended side by side: settling a
# batch then rewrites a few pages, not one page per event (event ids are random, and a table
# keyed by them scattered every batch over the whole b-tree: ~1000 WAL pages per transaction).
# Only the unique key index takes random inserts. `events_open` indexes the rows not `sent`,
# a small set, so state changes cost little and recovery and `--status` queries stay fast.
MIGRATIONS: list[str | DialectSQL] = [
    """
    CREATE TABLE events (
        id            INTEGER PRIMARY KEY,
        dataset_id    TEXT NOT NULL,
        event_name    TEXT NOT NULL,
        event_id      TEXT NOT NULL,
        state         TEXT NOT NULL,
        event_time    INTEGER,
        batch_id      TEXT,
        attempts      INTEGER NOT NULL DEFAULT 0,
        fbtrace_id    TEXT,
        error_code    INTEGER,
        error_subcode INTEGER,
        error_message TEXT,
        source        TEXT,
        line          INTEGER,
        payload_hash  TEXT,
        created_at    REAL NOT NULL,
        updated_at    REAL NOT NULL,
        UNIQUE (dataset_id, event_name, event_id)
    );
    CREATE INDEX events_open ON events (state, dataset_id) WHERE state != 'sent';
    CREATE INDEX events_batch ON events (batch_id);
    CREATE TABLE referrals (
        channel         TEXT NOT NULL,
        user_key        TEXT NOT NULL,
        message_key     TEXT NOT NULL,
        ctwa_clid       TEXT,
        ad_id           TEXT,
        source_type     TEXT,
        source_url      TEXT,
        ref             TEXT,
        user_id         TEXT,
        wa_id           TEXT,
        bsuid           TEXT,
        business_id     TEXT,
        phone_number_id TEXT,
        message_id      TEXT,
        ts              INTEGER,
        kind            TEXT,
        origin          TEXT,
        stored_at       REAL NOT NULL,
        PRIMARY KEY (channel, message_key)
    );
    CREATE INDEX referrals_user ON referrals (user_key, ts);
    CREATE INDEX referrals_wa ON referrals (wa_id, ts);
    CREATE INDEX referrals_bsuid ON referrals (bsuid, ts);
    """,
    # `send_running` marks a main file that may be behind its -wal (see Ledger.acquire_send_lock).
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    """,
    # Several senders at once (PostgreSQL): which run claimed an event, and the runs that are
    # sending, each with the advisory lock that dies with its connection (ledger.postgres).
    """
    ALTER TABLE events ADD COLUMN run_id TEXT;
    CREATE TABLE senders (
        run_id     TEXT PRIMARY KEY,
        host       TEXT NOT NULL,
        pid        INTEGER NOT NULL,
        started_at REAL NOT NULL,
        lock_key   INTEGER NOT NULL
    );
    """,
]

REFERRAL_COLUMNS = (
    "channel",
    "ctwa_clid",
    "ad_id",
    "source_type",
    "source_url",
    "ref",
    "user_id",
    "wa_id",
    "bsuid",
    "business_id",
    "phone_number_id",
    "message_id",
    "timestamp",
    "kind",
    "origin",
)

EVENT_COLUMNS = (
    "dataset_id",
    "event_name",
    "event_id",
    "state",
    "event_time",
    "attempts",
    "error_code",
    "error_subcode",
    "error_message",
    "source",
    "updated_at",
)

SQL_CHUNK = 500  # SQLite host-parameter budget per IN (...) query
SEND_WAL_AUTOCHECKPOINT_PAGES = 20000  # ~80 MB of WAL between checkpoints while a send runs
SEND_CACHE_KIB = 32768  # page cache of the sending connection


def split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def sqlite_sql(migration: str | DialectSQL) -> str:
    return migration.sqlite if isinstance(migration, DialectSQL) else migration


# SQLite's types as PostgreSQL spells them; text compares byte by byte (COLLATE "C") on both, so
# `ledger list` orders rows the same way on either backend.
_PG_TYPES = (
    (re.compile(r"\bINTEGER PRIMARY KEY\b"), "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"),
    (re.compile(r"\bINTEGER\b"), "BIGINT"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
    (re.compile(r"\bTEXT\b"), 'TEXT COLLATE "C"'),
)


def postgres_sql(migration: str | DialectSQL) -> str:
    if isinstance(migration, DialectSQL):
        return migration.postgres
    for pattern, replacement in _PG_TYPES:
        migration = pattern.sub(replacement, migration)
    return migration
