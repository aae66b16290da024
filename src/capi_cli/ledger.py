"""The local SQLite ledger: what was sent to which dataset, and the ad referrals of conversations.

Meta does not deduplicate business-messaging events, so this file is what makes delivery
exactly-once. Crash safety rests on one ordering: a batch is committed `in_flight` before its
request leaves and settled in a second transaction after the answer; `in_flight` rows found by a
later run (under the send lock) belong to a dead process and become `uncertain`.

Only messaging identifiers are stored, never emails, names or phone numbers in clear: a WhatsApp
user known by phone is stored as the SHA-256 of the digits.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from capi_cli.errors import LedgerLocked, SetupError


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


EventKey = tuple[str, str]

# Ordered migrations; index + 1 is the schema version stored in PRAGMA user_version.
# Append only once released: a shipped migration is never edited.
#
# Events live in a rowid table so that a batch's rows are appended side by side: settling a
# batch then rewrites a few pages, not one page per event (event ids are random, and a table
# keyed by them scattered every batch over the whole b-tree: ~1000 WAL pages per transaction).
# Only the unique key index takes random inserts. `events_open` indexes the rows not `sent`,
# a small set, so state changes cost little and recovery and `--status` queries stay fast.
MIGRATIONS: list[str] = [
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

_CHUNK = 500  # SQLite host-parameter budget per IN (...) query
SEND_WAL_AUTOCHECKPOINT_PAGES = 20000  # ~80 MB of WAL between checkpoints while a send runs
SEND_CACHE_KIB = 32768  # page cache of the sending connection


def phone_digits(value: str) -> str | None:
    """Digits of a phone however it was written (`+90 532 123 45 67`, `0090...`); None if not a phone."""
    text = value.strip()
    if not text or not re.fullmatch(r"[+\d\s().\-/]+", text):
        return None
    digits = re.sub(r"\D", "", text)
    if text.startswith("00") or (not text.startswith("+") and digits.startswith("00")):
        digits = digits[2:]
    return digits or None


def phone_key(digits: str) -> str:
    """How a WhatsApp phone is stored: its SHA-256 (the value Meta's `ph` match key takes),
    so the ledger holds no phone number in clear yet a lookup by phone still finds it."""
    return hashlib.sha256(digits.encode("ascii")).hexdigest()


def iso_z(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso_z(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return int(value)
    try:
        dt = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp())


def _create_private(path: Path) -> None:
    """Create the file 0600 whatever the umask, before SQLite opens it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    os.chmod(path, 0o600)


def _create_ledger(path: Path) -> None:
    """Create a new ledger atomically: built with its schema under a temporary name, then linked
    into place. So a file at the ledger's path always holds a schema, and an empty or schema-less
    file there can only be a damaged ledger (see _check_file); a crash or a concurrent `capi`
    during creation can never leave a half-made ledger that would pass for a new, empty one."""
    temp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.new")
    _create_private(temp)
    try:
        conn = sqlite3.connect(temp, isolation_level=None)
        try:
            # Rollback journal while building, so that everything is in the main file when linked.
            for number, script in enumerate(MIGRATIONS):
                conn.execute("BEGIN IMMEDIATE")
                for statement in _split_sql(script):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number + 1}")
                conn.execute("COMMIT")
        finally:
            conn.close()
        try:
            os.link(temp, path)  # unlike rename, never replaces a ledger another process just made
        except FileExistsError:
            pass
    except sqlite3.DatabaseError as exc:
        raise _ledger_error(path, exc) from None
    finally:
        for leftover in (temp, Path(f"{temp}-journal")):
            leftover.unlink(missing_ok=True)


def _ledger_error(path: Path, exc: sqlite3.DatabaseError) -> SetupError:
    name = getattr(exc, "sqlite_errorname", "")
    if name == "SQLITE_FULL" or "full" in str(exc):
        return SetupError(
            f"ledger: cannot write {path}: the disk is full ({exc}); free some space and run again "
            "(a batch whose answer could not be recorded is held `uncertain`)"
        )
    if name in ("SQLITE_CORRUPT", "SQLITE_NOTADB") or "malformed" in str(exc):
        return SetupError(
            f"ledger: {path} is damaged ({exc}); capi will not treat it as empty, which would send "
            "every event again. Restore it from a backup, or move it aside"
        )
    return SetupError(f"ledger: {path}: {exc}")


_SQLITE_MAGIC = b"SQLite format 3\x00"


def _check_file(path: Path) -> None:
    """Refuse a ledger file that is damaged in a way SQLite would not notice at once.

    SQLite takes an empty file for a new, empty database, and a truncated one may answer "not
    found" for rows that were cut off: either way capi would send again events Meta already
    counted. The header says how many pages the file had at its last checkpoint; with no WAL
    beside it, the file must hold them all."""
    damaged = (
        f"ledger: {path} is damaged ({{}}); capi will not treat it as empty, which would send every "
        "event again. Restore it from a backup, or move it aside to start a new ledger"
    )
    size = path.stat().st_size
    if size == 0:
        raise SetupError(damaged.format("the file is empty"))
    with path.open("rb") as fh:
        header = fh.read(100)
    if not header.startswith(_SQLITE_MAGIC):
        raise SetupError(f"ledger: {path} is not a capi ledger (not an SQLite database); move it aside")
    if len(header) < 100:
        raise SetupError(damaged.format("truncated in its header"))
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    pages_valid = header[24:28] == header[92:96]  # SQLite's rule for trusting the in-header size
    wal = Path(f"{path}-wal")
    wal_frames = wal.exists() and wal.stat().st_size > 32
    if pages_valid and not wal_frames and page_size and size < pages * page_size:
        raise SetupError(damaged.format(f"truncated: {size} of {pages * page_size} bytes"))


class Ledger:
    """One SQLite database per home. Thread-safe: writes are serialized by one lock."""

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

    # -- opening -------------------------------------------------------------------------------

    @classmethod
    def open(cls, path: str | os.PathLike[str]) -> Ledger:
        text = os.fspath(path)
        if text.startswith(("postgresql://", "postgres://")):
            raise SetupError(
                "ledger: PostgreSQL ledgers are not supported by this version; set CAPI_LEDGER to a file path"
            )
        p = Path(text).expanduser()
        if p.is_dir():
            raise SetupError(f"ledger: {p} is a directory; CAPI_LEDGER must name a file")
        try:
            if not p.exists():
                _create_ledger(p)
            _check_file(p)
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
                # _create_ledger never leaves a file without its schema: this one lost it (a copy
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
                    for statement in _split_sql(MIGRATIONS[number]):
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
            raise _ledger_error(self.path, exc) from None

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

    def state_of(self, dataset_id: str, event_name: str, event_id: str) -> LedgerState | None:
        with self._reader_lock, self._errors():
            row = self._read_connection().execute(
                "SELECT state FROM events WHERE dataset_id = ? AND event_name = ? AND event_id = ?",
                (dataset_id, event_name, event_id),
            ).fetchone()
        return LedgerState(row[0]) if row else None

    def states(self, dataset_id: str, keys: Sequence[EventKey]) -> dict[EventKey, LedgerState]:
        return {key: LedgerState(state) for key, (state, _) in self.entries(dataset_id, keys).items()}

    def entries(self, dataset_id: str, keys: Sequence[EventKey]) -> dict[EventKey, tuple[str, str | None]]:
        """(state, payload_hash) of each known key, in as few queries as the parameter limit allows."""
        found: dict[EventKey, tuple[str, str | None]] = {}
        ids_by_name: dict[str, list[str]] = {}
        for name, event_id in keys:
            ids_by_name.setdefault(name, []).append(event_id)
        with self._reader_lock, self._errors():
            reader = self._read_connection()
            for name, ids in ids_by_name.items():
                for start in range(0, len(ids), _CHUNK):
                    chunk = ids[start : start + _CHUNK]
                    marks = ",".join("?" * len(chunk))
                    rows = reader.execute(
                        "SELECT event_id, state, payload_hash FROM events "
                        f"WHERE dataset_id = ? AND event_name = ? AND event_id IN ({marks})",
                        (dataset_id, name, *chunk),
                    )
                    for event_id, state, payload_hash in rows:
                        found[(name, event_id)] = (state, payload_hash)
        return found

    def _rows_per_statement(self, params_per_row: int) -> int:
        # One statement for many rows, not executemany: sqlite3 releases the GIL at every step, and
        # with the send threads and the reader all wanting it, a thousand steps cost ~70 ms a batch.
        try:
            limit = self._conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        except (AttributeError, sqlite3.Error):  # pragma: no cover - Python < 3.11
            limit = 999
        return max(1, min(1000, limit // params_per_row))

    def begin_batch(self, dataset_id: str, batch_id: str, events: Sequence[PendingEvent]) -> None:
        now = time.time()
        rows = [
            (dataset_id, e.event_name, e.event_id, e.event_time, batch_id, e.source, e.line, e.payload_hash, now, now)
            for e in events
        ]
        with self._tx() as conn:
            size = self._rows_per_statement(10)
            for start in range(0, len(rows), size):
                chunk = rows[start : start + size]
                values = ",".join(["(?, ?, ?, 'in_flight', ?, ?, 1, ?, ?, ?, ?, ?)"] * len(chunk))
                conn.execute(
                    f"""
                    INSERT INTO events (dataset_id, event_name, event_id, state, event_time, batch_id,
                                        attempts, source, line, payload_hash, created_at, updated_at)
                    VALUES {values}
                    ON CONFLICT (dataset_id, event_name, event_id) DO UPDATE SET
                        state = 'in_flight', event_time = excluded.event_time, batch_id = excluded.batch_id,
                        attempts = events.attempts + 1, source = excluded.source, line = excluded.line,
                        payload_hash = excluded.payload_hash, updated_at = excluded.updated_at,
                        error_code = NULL, error_subcode = NULL, error_message = NULL
                    """,
                    [value for row in chunk for value in row],
                )

    def settle(
        self,
        dataset_id: str,
        batch_id: str,
        keys: Iterable[EventKey],
        state: LedgerState | str,
        *,
        error_code: int | None = None,
        error_subcode: int | None = None,
        error_message: str | None = None,
        fbtrace_id: str | None = None,
    ) -> None:
        now = time.time()
        state = LedgerState(state)
        ids_by_name: dict[str, list[str]] = {}
        for name, event_id in keys:
            ids_by_name.setdefault(name, []).append(event_id)
        with self._tx() as conn:
            for name, ids in ids_by_name.items():
                for start in range(0, len(ids), _CHUNK):
                    chunk = ids[start : start + _CHUNK]
                    marks = ",".join("?" * len(chunk))
                    conn.execute(
                        f"""
                        UPDATE events SET state = ?, batch_id = ?, error_code = ?, error_subcode = ?,
                                          error_message = ?, fbtrace_id = ?, updated_at = ?
                        WHERE dataset_id = ? AND event_name = ? AND event_id IN ({marks})
                        """,
                        (state, batch_id, error_code, error_subcode, error_message, fbtrace_id, now,
                         dataset_id, name, *chunk),
                    )

    def stats(self) -> dict[str, Any]:
        total: dict[str, int] = {}
        by_dataset: dict[str, dict[str, int]] = {}
        with self._lock, self._errors():
            rows = self._conn.execute(
                "SELECT dataset_id, state, COUNT(*) FROM events GROUP BY dataset_id, state ORDER BY 1, 2"
            ).fetchall()
        for dataset_id, state, count in rows:
            total[state] = total.get(state, 0) + count
            by_dataset.setdefault(dataset_id, {})[state] = count
        return {"total": total, "by_dataset": by_dataset}

    def count(self, state: LedgerState | str, dataset_id: str | None = None) -> int:
        """Events in one state (cheap for every state but `sent`, through events_open)."""
        where, params = self._where(str(LedgerState(state)), None, dataset_id, None, None)
        with self._reader_lock, self._errors():
            return int(self._read_connection().execute(f"SELECT COUNT(*) FROM events{where}", params).fetchone()[0])

    def _where(
        self,
        state: str | None,
        event_name: str | None,
        dataset_id: str | None,
        since: float | None,
        until: float | None,
        event_id: str | None = None,
    ) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        for column, value in (
            ("state", state),
            ("event_name", event_name),
            ("dataset_id", dataset_id),
            ("event_id", event_id),
        ):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(str(value))
        if state is not None and str(state) != LedgerState.SENT:
            clauses.append("state != 'sent'")  # lets SQLite use the partial index events_open
        if since is not None:
            clauses.append("event_time >= ?")
            params.append(int(since))
        if until is not None:
            clauses.append("event_time <= ?")
            params.append(int(until))
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", params

    def list_events(
        self,
        state: str | None = None,
        event_name: str | None = None,
        dataset_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int | None = None,
    ) -> Iterator[dict[str, Any]]:
        where, params = self._where(state, event_name, dataset_id, since, until)
        sql = (
            "SELECT dataset_id, event_name, event_id, state, event_time, attempts, error_code, "
            f"error_subcode, error_message, source, line, updated_at FROM events{where} "
            "ORDER BY updated_at, dataset_id, event_name, event_id"
        )
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._lock, self._errors():
            rows = self._conn.execute(sql, params).fetchall()
        for row in rows:
            record = dict(zip((*EVENT_COLUMNS[:-1], "line", "updated_at"), row, strict=True))
            line = record.pop("line")
            if record["source"] is not None and line is not None:
                record["source"] = f"{record['source']}:{line}"
            record["updated_at"] = iso_z(record["updated_at"])
            yield record

    def forget(
        self,
        state: str | None = None,
        event_name: str | None = None,
        dataset_id: str | None = None,
        event_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> int:
        where, params = self._where(state, event_name, dataset_id, since, until, event_id)
        with self._tx() as conn:
            return conn.execute(f"DELETE FROM events{where}", params).rowcount

    def prune(self, older_than_seconds: float, state: str | None = None) -> int:
        cutoff = time.time() - older_than_seconds
        where, params = self._where(state, None, None, None, None)
        clause = f"{where} AND updated_at < ?" if where else " WHERE updated_at < ?"
        with self._tx() as conn:
            events = conn.execute(
                f"DELETE FROM events{clause} AND state != 'in_flight'", [*params, cutoff]
            ).rowcount
            if state is None:
                conn.execute("DELETE FROM referrals WHERE stored_at < ?", (cutoff,))
            return events

    # -- referrals -------------------------------------------------------------------------------

    def store_referrals(self, records: Iterable[Mapping[str, Any]]) -> tuple[int, int]:
        new = already = 0
        now = time.time()
        with self._tx() as conn:
            for record in records:
                row = _referral_row(record)
                cur = conn.execute(
                    """
                    INSERT OR IGNORE INTO referrals (channel, user_key, message_key, ctwa_clid, ad_id,
                        source_type, source_url, ref, user_id, wa_id, bsuid, business_id,
                        phone_number_id, message_id, ts, kind, origin, stored_at)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                    (*row, now),
                )
                if cur.rowcount:
                    new += 1
                else:
                    already += 1
        return new, already

    _SELECT_REFERRALS = (
        "SELECT channel, ctwa_clid, ad_id, source_type, source_url, ref, user_id, wa_id, bsuid, "
        "business_id, phone_number_id, message_id, ts, kind, origin FROM referrals"
    )

    def _referrals(self, where: str, params: Sequence[Any], limit: int | None = None) -> list[dict[str, Any]]:
        sql = f"{self._SELECT_REFERRALS}{where} ORDER BY ts DESC, message_key"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        with self._lock, self._errors():
            rows = self._conn.execute(sql, list(params)).fetchall()
        out = []
        for row in rows:
            record = dict(zip(REFERRAL_COLUMNS, row, strict=True))
            record["timestamp"] = iso_z(record["timestamp"])
            out.append(record)
        return out

    def list_referrals(
        self,
        channel: str | None = None,
        since: float | None = None,
        user: str | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if channel:
            clauses.append("channel = ?")
            params.append(channel)
        if since is not None:
            clauses.append("ts >= ?")
            params.append(int(since))
        if user:
            user_clause, user_params = _user_clause(user)
            clauses.append(user_clause)
            params.extend(user_params)
        where = (" WHERE " + " AND ".join(clauses)) if clauses else ""
        return self._referrals(where, params, limit)

    def lookup_referrals(self, user_id: str) -> list[dict[str, Any]]:
        clause, params = _user_clause(user_id)
        return self._referrals(f" WHERE {clause}", params)

    def latest_whatsapp_referral(self, user: str, at: int, window_seconds: int) -> dict[str, Any] | None:
        clause, params = _user_clause(user)
        found = self._referrals(
            f" WHERE channel = 'whatsapp' AND ctwa_clid IS NOT NULL AND ts BETWEEN ? AND ? AND {clause}",
            [at - window_seconds, at, *params],
            limit=1,
        )
        return found[0] if found else None

    def account_for_user(self, channel: str, user_id: str) -> str | None:
        with self._lock, self._errors():
            row = self._conn.execute(
                "SELECT business_id FROM referrals WHERE channel = ? AND user_id = ? "
                "AND business_id IS NOT NULL ORDER BY ts DESC LIMIT 1",
                (channel, user_id.strip()),
            ).fetchone()
        return row[0] if row else None


def _user_clause(user: str) -> tuple[str, list[Any]]:
    """Match a user however it was written: phone digits, BSUID, PSID or IGSID."""
    text = user.strip()
    keys = {text}
    digits = phone_digits(text)
    if digits:
        keys.add(phone_key(digits))
    marks = ",".join("?" * len(keys))
    return (
        f"(user_key IN ({marks}) OR wa_id IN ({marks}) OR bsuid IN ({marks}))",
        [*keys, *keys, *keys],
    )


def _referral_row(record: Mapping[str, Any]) -> tuple[Any, ...]:
    channel = str(record.get("channel") or "")
    wa_id = record.get("wa_id")
    user_id = record.get("user_id")
    if channel == "whatsapp":
        # Phones are stored hashed; business-scoped user ids (`US.123...`) are kept as they are.
        if wa_id:
            digits = phone_digits(str(wa_id))
            wa_id = phone_key(digits) if digits else None
        if user_id and phone_digits(str(user_id)) == str(user_id).strip():
            user_id = phone_key(str(user_id).strip())
    user_key = str(wa_id or user_id or record.get("bsuid") or "")
    ts = parse_iso_z(record.get("timestamp"))
    message_id = record.get("message_id")
    # Same conversation event stored twice must change nothing: key by message id, else by content.
    message_key = (
        str(message_id)
        if message_id
        else "|".join(
            str(v or "")
            for v in (user_id, *(record.get(k) for k in ("ctwa_clid", "ad_id", "ref", "timestamp", "kind")))
        )
    )
    return (
        channel,
        user_key,
        message_key,
        record.get("ctwa_clid") or None,
        record.get("ad_id"),
        record.get("source_type"),
        record.get("source_url"),
        record.get("ref"),
        user_id,
        wa_id,
        record.get("bsuid"),
        record.get("business_id"),
        record.get("phone_number_id"),
        message_id,
        ts,
        record.get("kind"),
        record.get("origin"),
    )


def _split_sql(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]
