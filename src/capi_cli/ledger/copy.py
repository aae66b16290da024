"""Moving up: a SQLite ledger's events and referrals copied into a PostgreSQL ledger.

Idempotent: a row already there (same event key, same referral) is left as it is, so running the
copy twice changes nothing, and a copy after PostgreSQL senders started never undoes their work.
Rows `in_flight` in the file (a run that died) arrive with no run and become `uncertain` at the
next PostgreSQL send. Every column both tables have is copied, so a later migration adding a
column to both needs nothing here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from capi_cli.errors import UsageError
from capi_cli.ledger.location import LedgerRef
from capi_cli.ledger.postgres import PostgresLedger
from capi_cli.ledger.store import Ledger

# Each table, and the key on which a row already in PostgreSQL wins.
_TABLES = (
    ("events", "dataset_id, event_name, event_id"),
    ("referrals", "channel, message_key"),
    ("runs", "run_id"),  # the sends `capi report` lists
)
_CHUNK = 2000


@dataclass
class CopyResult:
    to: str  # the target, password masked
    copied: dict[str, int]  # rows added per table
    already: dict[str, int]  # rows the target had already

    def to_dict(self) -> dict[str, Any]:
        return {"to": self.to, "copied": self.copied, "already": self.already}


def copy_to_postgres(source: LedgerRef, to: str) -> CopyResult:
    """`capi ledger copy --to URL`: the ledger in use (a SQLite file) into the PostgreSQL one."""
    target = LedgerRef.parse(to)
    if target.kind != "postgres":
        raise UsageError(f"--to {target.shown}: give a postgresql:// URL")
    if source.kind != "sqlite":
        raise UsageError(f"ledger copy copies a SQLite ledger; the ledger in use is already {source.shown}")
    if not source.exists():
        raise UsageError(f"ledger copy: there is no ledger at {source.location} to copy")
    with Ledger.open(source.location) as sqlite_ledger, PostgresLedger.open(target.location) as pg:
        return copy_ledger(sqlite_ledger, pg)


def copy_ledger(source: Ledger, target: PostgresLedger) -> CopyResult:
    """Copy under the file's send lock (a send running on it exits the copy with exit 5)."""
    copied: dict[str, int] = {}
    already: dict[str, int] = {}
    with source.send_lock():
        for table, key in _TABLES:
            copied[table], already[table] = _copy_table(source, target, table, key)
    return CopyResult(target.ref.shown, copied, already)


def _copy_table(source: Ledger, target: PostgresLedger, table: str, key: str) -> tuple[int, int]:
    with source._lock, source._errors():
        ours = [row[1] for row in source._conn.execute(f"PRAGMA table_info({table})")]
    with target._lock, target._errors():
        theirs = {row[0] for row in target._raw.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s "
            "AND table_schema = current_schema()", (table,))}
    columns = [c for c in ours if c in theirs and c != "id"]  # ids are each database's own
    names = ", ".join(columns)
    insert = (f"INSERT INTO {table} ({names}) VALUES ({', '.join(['%s'] * len(columns))}) "
              f"ON CONFLICT ({key}) DO NOTHING RETURNING 1")
    total = added = 0
    with source._lock, source._errors():
        cursor = source._conn.execute(f"SELECT {names} FROM {table} ORDER BY rowid")
        while rows := cursor.fetchmany(_CHUNK):
            total += len(rows)
            with target._tx():
                added += _inserted(target, insert, rows)
    return added, total - added


def _inserted(target: PostgresLedger, insert: str, rows: list[Any]) -> int:
    """Rows actually inserted (one result set per row: empty when the row was there already)."""
    cursor = target._raw.cursor()
    cursor.executemany(insert, rows, returning=True)
    added = 0
    while True:
        added += len(cursor.fetchall())
        if not cursor.nextset():
            return added
