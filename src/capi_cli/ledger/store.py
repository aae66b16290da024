"""The local SQLite ledger: what was sent to which dataset, and the ad referrals of conversations.

Meta does not deduplicate business-messaging events, so this file is what makes delivery
exactly-once. Crash safety rests on one ordering: a batch is committed `in_flight` before its
request leaves and settled in a second transaction after the answer; `in_flight` rows found by a
later run (under the send lock) belong to a dead process and become `uncertain`.

Only messaging identifiers are stored, never emails, names or phone numbers in clear: a WhatsApp
user known by phone is stored as the SHA-256 of the digits.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from capi_cli.errors import LedgerLocked, SetupError
from capi_cli.ledger.facts import RunStore, fact_columns, resolve_referrals
from capi_cli.ledger.files import check_file, create_ledger, ledger_error
from capi_cli.ledger.location import LedgerRef, is_postgres, shown
from capi_cli.ledger.queries import EventQueries
from capi_cli.ledger.referrals import ReferralStore, iso_z, parse_iso_z, phone_digits, phone_key
from capi_cli.ledger.schema import (
    EVENT_COLUMNS,
    MIGRATIONS,
    REFERRAL_COLUMNS,
    SEND_CACHE_KIB,
    SEND_WAL_AUTOCHECKPOINT_PAGES,
    EventKey,
    LedgerState,
    PendingEvent,
    split_sql,
    sqlite_sql,
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


# sent_among's read by rowid: for chunks of at least this many keys, over this many rows more
# than the chunk holds (rows of other runs or datasets in between).
_NEAR_MIN_KEYS = 32
_NEAR_SLACK = 64


class Ledger(EventQueries, RunStore):
    """One SQLite database per home (the `sqlite` backend of ledger.types.LedgerStore).
    Thread-safe: writes are serialized by one lock. One sender at a time: `sender()` is the lock."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self._conn = conn
        self.path = path
        self._lock = threading.RLock()
        # A second connection for the reads `send` makes while its threads write (entries, state_of):
        # WAL lets it read the last committed state without waiting for the writers' lock.
        self._reader: sqlite3.Connection | None = None
        self._reader_lock = threading.Lock()
        self._lock_fd: int | None = None
        self._wal_at_open = Path(f"{path}-wal").exists()  # before SQLite opens (and creates) it
        self.referrals = ReferralStore(conn, self._lock, self._tx, self._errors, self.ref)

    # -- opening -------------------------------------------------------------------------------

    @property
    def ref(self) -> LedgerRef:
        return LedgerRef("sqlite", str(self.path))

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Ledger:
        """The SQLite ledger at `path`; `ledger.open_ledger` opens either backend."""
        text = os.fspath(path)
        if is_postgres(text):
            # Callers that take either backend use ledger.open_ledger; this one needs the file.
            raise SetupError(f"ledger: {shown(text)}: this needs a SQLite ledger file, not a PostgreSQL URL")
        p = Path(text).expanduser()
        if p.is_dir():
            raise SetupError(f"ledger: {p} is a directory; CAPI_LEDGER must name a file")
        try:
            if not p.exists():
                create_ledger(p)
            check_file(p)
            conn = sqlite3.connect(p, timeout=30, check_same_thread=False, isolation_level=None)
            ledger = cls(conn, p)
            with ledger._errors():
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA busy_timeout=30000")
                ledger._migrate()
        except OSError as exc:
            raise SetupError(f"ledger: cannot open {p}: {exc.strerror}") from None
        for suffix in ("-wal", "-shm"):
            side = Path(f"{p}{suffix}")
            if side.exists():
                try:
                    os.chmod(side, 0o600)
                except OSError:
                    pass
        return ledger

    def _migrate(self) -> None:
        with self._lock:
            version = self._conn.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise SetupError(
                    f"ledger: {self.path} was written by a newer capi (schema {version}); upgrade capi"
                )
            if version == 0:
                # create_ledger never leaves a file without its schema: this one lost it (a copy
                # taken without its -wal, a truncation). Migrating would make it an empty ledger.
                raise SetupError(
                    f"ledger: {self.path} is damaged (it has no capi schema); capi will not treat it "
                    "as empty, which would send every event again. Restore it from a backup, or move "
                    "it aside to start a new ledger"
                )
            for number in range(version, len(MIGRATIONS)):
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    # Another process may have migrated since the version was read.
                    if self._conn.execute("PRAGMA user_version").fetchone()[0] > number:
                        self._conn.execute("ROLLBACK")
                        continue
                    for statement in split_sql(sqlite_sql(MIGRATIONS[number])):
                        self._conn.execute(statement)
                    self._conn.execute(f"PRAGMA user_version = {number + 1}")
                    self._conn.execute("COMMIT")
                except BaseException:
                    self._conn.execute("ROLLBACK")
                    raise

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """SQLite failures become one clear SetupError (exit 3), never a traceback. A write that
        fails leaves the last committed state (SQLite's transactions are atomic), so a later run
        handles it: a batch begun but not settled turns `uncertain`, one not begun is sent."""
        try:
            yield
        except sqlite3.DatabaseError as exc:
            raise ledger_error(self.path, exc) from None

    def close(self) -> None:
        if self._lock_fd is None:
            self._clear_dead_send_marker()
        self.release_send_lock()
        with self._reader_lock:
            if self._reader is not None:
                self._reader.close()
                self._reader = None
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock, self._errors():
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                # A failed COMMIT (disk full) leaves the transaction open; SQLite may also have
                # rolled it back itself already.
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    # -- the send lock ---------------------------------------------------------------------------

    def sender(self) -> contextlib.AbstractContextManager[None]:
        return self.send_lock()

    def maintenance(self) -> contextlib.AbstractContextManager[None]:
        return self.send_lock()

    @contextmanager
    def send_lock(self) -> Iterator[None]:
        """One `capi send` per ledger. An flock dies with its process, so a kill leaves nothing stuck."""
        self.acquire_send_lock()
        try:
            yield
        finally:
            self.release_send_lock()

    def acquire_send_lock(self) -> None:
        import fcntl

        if self._lock_fd is not None:
            return
        lock_path = Path(f"{self.path}.lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise LedgerLocked(
                f"another capi send is using the ledger {self.path}; wait for it to finish"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd
        try:
            self._mark_send_running()
        except BaseException:
            self.release_send_lock()
            raise
        with self._lock:
            # A send settles ~1000 events per transaction, twice per batch, at random places of the
            # key b-tree: ~1000 pages each. At SQLite's default (a checkpoint every 1000 WAL pages)
            # nearly every batch paid a checkpoint copying those pages back; per 100 batches that
            # was 8 s of write syscalls. The WAL is checkpointed (and truncated) at close anyway.
            self._conn.execute(f"PRAGMA wal_autocheckpoint = {SEND_WAL_AUTOCHECKPOINT_PAGES}")
            self._conn.execute(f"PRAGMA cache_size = -{SEND_CACHE_KIB}")

    # A copy of the main file taken without its -wal while a send runs (a naive backup) is a
    # consistent but old ledger: SQLite cannot tell, and capi would send again every event the
    # copy lacks. So a send writes `send_running` and checkpoints it into the main file before
    # its first request, and removes it (checkpointed too) when it ends. The marker with no -wal
    # beside it means the events written since are gone. A send killed mid-run leaves the marker
    # and its -wal; the next capi that closes the ledger with no send running (and so checkpoints
    # that -wal into the main file) removes the marker.

    def _mark_send_running(self) -> None:
        with self._lock, self._errors():
            row = self._conn.execute("SELECT value FROM meta WHERE key = 'send_running'").fetchone()
            if row is not None and not self._wal_at_open:
                raise SetupError(
                    f"ledger: {self.path} was copied while a send was running, without its -wal "
                    f"file (marked by the send of {row[0]}): it may lack events Meta already "
                    "counted, and using it would send them again. Use the ledger together with its "
                    "-wal file; if this file is complete after all (the -wal was removed after every "
                    f"capi had ended), run: sqlite3 {self.path} \"DELETE FROM meta\""
                )
        with self._tx() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO meta (key, value) VALUES ('send_running', ?)",
                (f"pid {os.getpid()} at {iso_z(time.time())}",),
            )
        self._checkpoint()

    def _checkpoint(self) -> None:
        with self._lock, self._errors():
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _clear_send_marker(self) -> None:
        with self._tx() as conn:
            conn.execute("DELETE FROM meta WHERE key = 'send_running'")
        self._checkpoint()

    def _clear_dead_send_marker(self) -> None:
        """Best effort, on close: a marker left by a dead send, once no send is running."""
        import fcntl

        try:
            with self._lock:
                row = self._conn.execute("SELECT 1 FROM meta WHERE key = 'send_running'").fetchone()
            if row is None:
                return
            fd = os.open(Path(f"{self.path}.lock"), os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._clear_send_marker()
            finally:
                os.close(fd)  # also releases the flock
        except (OSError, sqlite3.Error, SetupError):
            pass

    def release_send_lock(self) -> None:
        import fcntl

        if self._lock_fd is not None:
            try:
                self._clear_send_marker()
            except SetupError:
                pass  # disk full: the marker stays, with the -wal beside it; the next run is fine
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- events ----------------------------------------------------------------------------------

    def recover_in_flight(self) -> int:
        """`in_flight` rows can only be left by a dead run: their batch may have been counted."""
        with self._tx() as conn:
            cur = conn.execute(
                # `state != 'sent'` lets SQLite use the partial index events_open.
                "UPDATE events SET state = ?, error_message = ?, updated_at = ? WHERE state = ? AND state != 'sent'",
                (
                    LedgerState.UNCERTAIN,
                    "the run that sent this batch ended before Meta's answer was recorded",
                    time.time(),
                    LedgerState.IN_FLIGHT,
                ),
            )
            return cur.rowcount

    def _read_connection(self) -> sqlite3.Connection:
        if self._reader is None:
            self._reader = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
            self._reader.execute("PRAGMA busy_timeout=30000")
        return self._reader

    def sent_among(self, dataset_id: str, keys: Sequence[EventKey]) -> set[EventKey]:
        """The keys recorded `sent`: what a re-run skips.

        A re-run reads its file in the order the first run recorded it, so a chunk's keys usually
        sit side by side in the events table: one probe finds where they start and one read by
        rowid answers for most of them, at a third of the cost of looking each one up. Keys not
        found there are looked up one by one (`IN (...)`), so the answer is the same either way."""
        found: set[EventKey] = set()
        if not keys:
            return found
        with self._reader_lock, self._errors():
            reader = self._read_connection()
            rest = keys
            if len(keys) >= _NEAR_MIN_KEYS:
                name = keys[0][0]
                probe = [event_id for key_name, event_id in keys[:8] if key_name == name]
                (start,) = reader.execute(
                    "SELECT min(rowid) FROM events WHERE dataset_id = ? AND event_name = ? "
                    f"AND event_id IN ({','.join('?' * len(probe))})",
                    (dataset_id, name, *probe),
                ).fetchone()
                if start is not None:
                    near = set(reader.execute(
                        "SELECT event_name, event_id FROM events NOT INDEXED "
                        "WHERE rowid >= ? AND rowid < ? AND dataset_id = ? AND state = 'sent'",
                        (start, start + len(keys) + _NEAR_SLACK, dataset_id),
                    ).fetchall())
                    found = {key for key in keys if key in near}
                    rest = [key for key in keys if key not in near]
            found.update(self._lookup(reader, dataset_id, rest, "", " AND state = 'sent'"))
        return found

    def _rows_per_statement(self, params_per_row: int) -> int:
        # One statement for many rows, not executemany: sqlite3 releases the GIL at every step, and
        # with the send threads and the reader all wanting it, a thousand steps cost ~70 ms a batch.
        try:
            limit = self._conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        except (AttributeError, sqlite3.Error):  # pragma: no cover - Python < 3.11
            limit = 999
        return max(1, min(1000, limit // params_per_row))

    def begin_batch(self, dataset_id: str, batch_id: str, events: Sequence[PendingEvent]) -> set[EventKey]:
        """Every event `in_flight` in one transaction, committed before the request; the keys
        claimed: all of them here, since the send lock admits one sender."""
        now = time.time()
        with self._tx() as conn:
            # The report facts (ledger.facts) go in with the row; a resend refreshes them.
            resolved = resolve_referrals(conn, events)
            rows = [
                (dataset_id, e.event_name, e.event_id, e.event_time, batch_id, e.source, e.line, e.payload_hash,
                 now, now, *fact_columns(e, found))
                for e, found in zip(events, resolved, strict=True)
            ]
            size = self._rows_per_statement(17)
            for start in range(0, len(rows), size):
                chunk = rows[start : start + size]
                values = ",".join(["(?, ?, ?, 'in_flight', ?, ?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"] * len(chunk))
                conn.execute(
                    f"""
                    INSERT INTO events (dataset_id, event_name, event_id, state, event_time, batch_id,
                                        attempts, source, line, payload_hash, created_at, updated_at,
                                        channel, value, currency, referral_key, ad_id, attribution, match_keys)
                    VALUES {values}
                    ON CONFLICT (dataset_id, event_name, event_id) DO UPDATE SET
                        state = 'in_flight', event_time = excluded.event_time, batch_id = excluded.batch_id,
                        attempts = events.attempts + 1, source = excluded.source, line = excluded.line,
                        payload_hash = excluded.payload_hash, updated_at = excluded.updated_at,
                        error_code = NULL, error_subcode = NULL, error_message = NULL,
                        channel = excluded.channel, value = excluded.value, currency = excluded.currency,
                        referral_key = excluded.referral_key, ad_id = excluded.ad_id,
                        attribution = excluded.attribution, match_keys = excluded.match_keys
                    """,
                    [value for row in chunk for value in row],
                )
        return {(e.event_name, e.event_id) for e in events}
