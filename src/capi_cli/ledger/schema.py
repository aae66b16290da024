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
    facts: EventFacts | None = None  # what the report needs (SPEC §8); None: not known
    # The state this run read before deciding to send it (None: no row). On PostgreSQL the claim
    # succeeds only if the row is still in that state (or `failed`), so two runs never both win.
    claim_from: str | None = None


@dataclass(frozen=True, slots=True)
class EventFacts:
    """What `capi report` needs of a sent event, nothing personal (SPEC §8 "Report facts").

    `conversation` is the event's own messaging identifier that finds its stored referral: the
    click id on WhatsApp, the PSID / IGSID on Messenger / Instagram. It is used to look the
    referral up and is not stored again with the event (the referral's key is)."""

    channel: str | None = None
    value: float | None = None
    currency: str | None = None
    joined: bool = False  # the referral join gave the event its identifiers
    match_keys: str = ""  # "em,ph": which customer-information keys it carried, never their values
    conversation: str | None = None


class Attribution(StrEnum):
    """How an event was tied to a stored referral (its conversation), in events.attribution."""

    CLICK_ID = "click_id"  # its own click id (Messenger/Instagram: its PSID/IGSID) found the referral
    JOINED = "joined"  # the referral join (phone, BSUID, PSID) gave it its identifiers
    NONE = "none"  # no stored referral: the ad is unknown


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
    # Every referral has a time; `ts_estimated` = 1 when it is the dump file's date, not the
    # delivery's. A message is the same message only within one business: key it by the phone
    # number id (WhatsApp) or the business id, then the message id (ledger_referrals.message_key).
    """
    ALTER TABLE referrals ADD COLUMN ts_estimated INTEGER NOT NULL DEFAULT 0;
    UPDATE referrals SET message_key = coalesce(phone_number_id, business_id, '') || '|' || message_id
        WHERE message_id IS NOT NULL AND message_id != '';
    """,
    # The referral join at scale. `user_key` is each referral's normalised customer key: the
    # SHA-256 of the phone's digits when the referral has a phone, else the BSUID, PSID or IGSID
    # as given. The join asks it, with the channel and the attribution window, in one range scan
    # of this index per key (a WhatsApp referral with both a phone and a BSUID is also found by
    # its BSUID, through the second). `wa_id`'s own index went: a stored wa_id is the user_key.
    # Plain SQL (a partial index included), so PostgreSQL takes the same statements.
    """
    DROP INDEX IF EXISTS referrals_user;
    DROP INDEX IF EXISTS referrals_wa;
    DROP INDEX IF EXISTS referrals_bsuid;
    CREATE INDEX referrals_customer ON referrals (user_key, channel, ts);
    CREATE INDEX referrals_customer_bsuid ON referrals (bsuid, channel, ts) WHERE bsuid IS NOT NULL;
    """,
    # Report facts (SPEC §8): per event, nothing personal. Events settled before this migration
    # keep NULLs and are reported as "ad unknown". The conversation is the referral's
    # (channel, message_key): events.channel + events.referral_key. The ad's headline is its
    # creative's text, not customer data, so it is stored now for the report. `runs` keeps each
    # send's counts (SPEC §7 summary keys) and exit code, so a silent cron failure shows.
    # events_by_ad lets the report read a million sent events in the order it groups them, with no
    # sort and no table lookups (capi_cli.report.queries). It holds `sent` rows only, and `id` right
    # after the grouped columns puts each new row at the end of its group: settling a batch touches
    # a page per ad in it, not a page per event (a key in event-time order cost a send 15% more).
    # events_referral answers "did this conversation convert?"; only events tied to one are in it.
    # (Both indexes were remade for the report's speed: see the migration after the next.)
    """
    ALTER TABLE events ADD COLUMN channel TEXT;
    ALTER TABLE events ADD COLUMN value DOUBLE PRECISION;
    ALTER TABLE events ADD COLUMN currency TEXT;
    ALTER TABLE events ADD COLUMN referral_key TEXT;
    ALTER TABLE events ADD COLUMN ad_id TEXT;
    ALTER TABLE events ADD COLUMN attribution TEXT;
    ALTER TABLE events ADD COLUMN match_keys TEXT;
    CREATE INDEX events_by_ad ON events (ad_id, event_name, currency, match_keys, channel, id, event_time, value,
                                         dataset_id) WHERE state = 'sent';
    CREATE INDEX events_referral ON events (referral_key, channel) WHERE state = 'sent' AND referral_key IS NOT NULL;
    ALTER TABLE referrals ADD COLUMN headline TEXT;
    CREATE INDEX referrals_clid ON referrals (ctwa_clid) WHERE ctwa_clid IS NOT NULL;
    CREATE INDEX referrals_by_ad ON referrals (channel, ad_id, ts, message_key, ctwa_clid, headline, source_url);
    CREATE TABLE runs (
        run_id       TEXT PRIMARY KEY,
        started_at   DOUBLE PRECISION NOT NULL,
        ended_at     DOUBLE PRECISION NOT NULL,
        dataset_id   TEXT,
        inputs       TEXT NOT NULL,
        read         INTEGER NOT NULL DEFAULT 0,
        invalid      INTEGER NOT NULL DEFAULT 0,
        unattributed INTEGER NOT NULL DEFAULT 0,
        filtered     INTEGER NOT NULL DEFAULT 0,
        skipped      INTEGER NOT NULL DEFAULT 0,
        sent         INTEGER NOT NULL DEFAULT 0,
        rejected     INTEGER NOT NULL DEFAULT 0,
        failed       INTEGER NOT NULL DEFAULT 0,
        uncertain    INTEGER NOT NULL DEFAULT 0,
        exit_code    INTEGER NOT NULL
    );
    CREATE INDEX runs_started ON runs (started_at);
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
    # `capi report` over a million events (SPEC §10: under 2 s). With a dataset, SQLite (which
    # plans with no statistics) answered `dataset_id = ?` from the event key's index, then looked up
    # and sorted every sent event (2.2 s instead of 0.5): events_by_ad now begins with dataset_id,
    # so the same equality is answered there and the rows still come in the order the report
    # groups them. "Did this conversation convert by the period's end (in this dataset)?" is asked
    # once per referral of the period: events_referral found the key, but each probe then read
    # table rows for event_time and dataset_id (0.8 s); events_converted holds both (0.4 s). Each
    # replaces an index, so a send keeps as many up to date as before.
    """
    DROP INDEX IF EXISTS events_by_ad;
    CREATE INDEX events_by_ad ON events (dataset_id, ad_id, event_name, currency, match_keys, channel, id,
                                         event_time, value) WHERE state = 'sent';
    DROP INDEX IF EXISTS events_referral;
    CREATE INDEX events_converted ON events (referral_key, channel, event_time, dataset_id)
        WHERE state = 'sent' AND referral_key IS NOT NULL;
    """,
    # events_batch (batch_id) answered no query, yet every claim and settle kept it up to date (a
    # settle writes each row anew, so each of its indexes too): one index fewer per event sent.
    """
    DROP INDEX IF EXISTS events_batch;
    """,
]

# The counts a run keeps (the SPEC §7 summary keys that are counts of events).
RUN_COUNTS = ("read", "invalid", "unattributed", "filtered", "skipped", "sent", "rejected", "failed", "uncertain")

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
JOIN_MMAP_BYTES = 1 << 30  # memory map of the referral join's reads (virtual; the OS holds the pages)


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
