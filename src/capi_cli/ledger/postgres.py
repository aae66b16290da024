"""The PostgreSQL ledger: the same states, migrations and commands as the SQLite file, for several
senders on several hosts at once.

Exactly-once across hosts rests on claims instead of one lock. An event is claimed by a
conditional insert/update that only one transaction can win (the row must be absent, `failed`, or
still in the state the run read), committed `in_flight` with the run's id before its request
leaves. Each sending run registers itself (`senders`: run id, host, pid, start) and holds a
session-level advisory lock for as long as its connection lives: a run killed, or whose host or
connection is lost, drops it (at once for a killed process; within the TCP keepalive time, ~25 s,
for a lost host). `recover_in_flight` turns `uncertain` only the `in_flight` events of runs whose
lock is free, never those of a live run.
"""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

import orjson

from capi_cli.errors import SetupError
from capi_cli.ledger.facts import RunStore, fact_columns, resolve_referrals
from capi_cli.ledger.location import LedgerRef, shown
from capi_cli.ledger.pg_readahead import ReadAhead
from capi_cli.ledger.pg_referrals import PostgresReferrals
from capi_cli.ledger.pg_sql import TranslatingConnection, connect, error, text_array
from capi_cli.ledger.queries import EventQueries, ids_by_name
from capi_cli.ledger.schema import MIGRATIONS, EventKey, LedgerState, PendingEvent, postgres_sql, split_sql

# pg_advisory_xact_lock key under which migrations run, so two hosts starting at once migrate once.
MIGRATION_LOCK = 0x6361_7069_6D69_67  # "capimig"
_DEADLOCK_RETRIES = 5
# The planner's statistics of `events` must follow its growth, or a lookup of 500 keys planned on
# an "empty" table filters 40,000 rows instead of probing the key (50 ms instead of 2): a send
# analyzes when its claims since the last ANALYZE reach this many, or the rows analyzed then.
_ANALYZE_AFTER = 10_000
# What a send's own lookups, window reads, claims and settles filter on: the ANALYZE made while a
# send claims (the growing table) reads these columns' statistics only (81 ms instead of 200 at
# 100,000 rows, four times in such a send); the one at a run's start and end takes them all.
_SEND_COLUMNS = "id, dataset_id, event_name, event_id, state, run_id"
_GONE = "the run that sent this batch ended before Meta's answer was recorded"
# The report facts a claim writes (a re-claim refreshes them, as SQLite's begin_batch does), in
# fact_columns' order.
_FACTS = "channel, value, currency, referral_key, ad_id, attribution, match_keys"
# A batch's rows travel as one JSON parameter, read by the server: psycopg dumps a Python list to
# an array at ~1 µs an element (13 columns of 1,000 events: 11 ms of the client's CPU a claim);
# orjson writes the JSON in a twentieth of that. Each row: (name, id, time, source, line, hash,
# the facts in fact_columns' order[, the state the run read]). (Lists of ids for a lookup or a
# settle stay arrays, as one text[] literal: pg_sql.text_array. `= ANY(ARRAY(SELECT
# json_array_elements_text(...)))` is no constant to the planner, which on a table without
# statistics then scans it comparing each row to every id.)
_ROWS = ("SELECT j->>0 AS n, j->>1 AS i, (j->>2)::bigint AS t, j->>3 AS s, (j->>4)::bigint AS l, j->>5 AS h, "
         "j->>6 AS c, (j->>7)::float8 AS v, j->>8 AS cu, j->>9 AS r, j->>10 AS a, j->>11 AS m, j->>12 AS k, "
         "j->>13 AS x FROM jsonb_array_elements(%s::jsonb) AS j")


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


class PostgresLedger(EventQueries, RunStore):
    """The `postgres` backend of LedgerStore. The main connection holds the run's registration
    and liveness lock; a reader serves the lookups made while batches are claimed and settled,
    each sending thread on a connection of its own (so batches do not wait for each other).
    Its referral store (`referrals`), report facts and runs are SQLite's code (ReferralStore,
    RunStore, ledger.facts) through the translation, but for storing referrals (PostgresReferrals)."""

    def __init__(self, raw: Any, url: str, *, one_connection: bool = False) -> None:
        self.url = url
        self._one_connection = one_connection
        self._raw = raw
        self._conn = TranslatingConnection(raw)
        self._lock = threading.RLock()
        self._reader_raw: Any = None
        self._reader: TranslatingConnection | None = None
        self._reader_lock = threading.Lock()
        self.run_id: str | None = None
        self._run_lock_key: int | None = None
        self._thread = threading.local()
        self._senders: list[Any] = []  # the sending threads' connections
        self._senders_lock = threading.Lock()
        self._claimed_since_analyze = 0
        self._read_ahead = ReadAhead()
        self._analyze_at = _ANALYZE_AFTER
        self.referrals = PostgresReferrals(self._conn, self._lock, self._tx, self._errors, self.ref)

    @property
    def ref(self) -> LedgerRef:
        return LedgerRef("postgres", self.url)

    @classmethod
    def open(cls, url: str, *, raw: Any = None, one_connection: bool = False) -> PostgresLedger:
        """`raw`: a connection to `url` made already (connect). `one_connection`: reads on the
        main connection too, for a process that asks from one thread only (a worker process):
        a connection less to make, and for the server to start."""
        ledger = cls(raw if raw is not None else connect(url), url, one_connection=one_connection)
        try:
            ledger._migrate()
        except BaseException:
            ledger.close()
            raise
        return ledger

    def _migrate(self) -> None:
        with self._errors(), self._raw.transaction():
            self._raw.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            self._raw.execute("CREATE TABLE IF NOT EXISTS capi_schema (version INTEGER NOT NULL)")
            row = self._raw.execute("SELECT version FROM capi_schema").fetchone()
            version = row[0] if row else 0
            if version > len(MIGRATIONS):
                raise SetupError(
                    f"ledger: {shown(self.url)} was written by a newer capi (schema {version}); upgrade capi"
                )
            for number in range(version, len(MIGRATIONS)):
                for statement in split_sql(postgres_sql(MIGRATIONS[number])):
                    self._raw.execute(statement)
            if row is None:
                self._raw.execute("INSERT INTO capi_schema (version) VALUES (%s)", (len(MIGRATIONS),))
            elif version < len(MIGRATIONS):
                self._raw.execute("UPDATE capi_schema SET version = %s", (len(MIGRATIONS),))

    @contextmanager
    def _errors(self) -> Iterator[None]:
        import psycopg

        try:
            yield
        except psycopg.Error as exc:
            raise error(self.url, exc) from None

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        with self._lock, self._errors(), self._raw.transaction():
            yield self._conn

    def _read_connection(self) -> TranslatingConnection:
        if self._one_connection:
            return self._conn
        if self._reader is None:
            self._reader_raw = connect(self.url)
            self._reader = TranslatingConnection(self._reader_raw)
        return self._reader

    def _sending_connection(self) -> Any:
        raw = getattr(self._thread, "raw", None)
        if raw is None:
            raw = self._thread.raw = connect(self.url)
            with self._senders_lock:
                self._senders.append(raw)
        return raw

    def close(self) -> None:
        with self._senders_lock:
            senders, self._senders = self._senders, []
        for raw in (*senders, self._reader_raw, self._raw):
            if raw is not None:
                try:
                    raw.close()
                except Exception:  # noqa: BLE001 - a connection already lost closes anyway
                    pass
        self._reader_raw = self._reader = None

    def __enter__(self) -> PostgresLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _report_read(self, conn: Any, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """A read for capi_cli.report (RunStore's), with no JIT compilation: the planner estimates
        a report's reads of a large ledger dear enough to compile them, which cost more than it
        saved (0.24 s of the 0.9 s that counting converted conversations took)."""
        with conn.raw.transaction():
            conn.raw.execute("SET LOCAL jit = off")
            return list(conn.execute(sql, params).fetchall())

    # -- runs: registration and liveness ---------------------------------------------------------

    @contextmanager
    def sender(self) -> Iterator[None]:
        """Register this run for as long as it sends; its advisory lock is its liveness signal."""
        run_id, key = uuid.uuid4().hex, secrets.randbits(62)
        with self._lock, self._errors():
            # The lock first: a registered run whose lock is free is dead, never one starting.
            self._raw.execute("SELECT pg_advisory_lock(%s)", (key,))
            self._raw.execute(
                "INSERT INTO senders (run_id, host, pid, started_at, lock_key) VALUES (%s, %s, %s, %s, %s)",
                (run_id, socket.gethostname(), os.getpid(), time.time(), key),
            )
        self.run_id, self._run_lock_key = run_id, key
        self._analyze_if_stale()
        try:
            yield
        finally:
            self.run_id = self._run_lock_key = None
            try:
                self._analyze_if_stale()  # here rather than at the start of the next run (a re-run)
                with self._lock:
                    self._raw.execute("DELETE FROM senders WHERE run_id = %s", (run_id,))
                    self._raw.execute("SELECT pg_advisory_unlock(%s)", (key,))
            except Exception:  # noqa: BLE001 - connection lost: the server ends the session and its lock
                pass

    def _analyze_if_stale(self) -> None:
        """Before a run reads the ledger: statistics older than a tenth of the table (autovacuum's
        rule, which may not have run yet after the last send) are brought up to date."""
        with self._lock, self._errors():
            row = self._raw.execute(
                "SELECT n_mod_since_analyze, n_live_tup FROM pg_stat_user_tables "
                "WHERE relname = 'events' AND schemaname = current_schema()"
            ).fetchone()
            if row is not None and row[0] > 0.1 * row[1] + 1000:
                self._raw.execute("ANALYZE events")
                self._analyze_at = max(_ANALYZE_AFTER, int(row[1]))

    def _note_claimed(self, raw: Any, count: int) -> None:
        with self._senders_lock:
            self._claimed_since_analyze += count
            due = self._claimed_since_analyze >= self._analyze_at
            if due:
                self._analyze_at = max(self._analyze_at * 2, _ANALYZE_AFTER)
                self._claimed_since_analyze = 0
        if due:
            raw.execute(f"ANALYZE events ({_SEND_COLUMNS})")

    def count(self, state: LedgerState | str, dataset_id: str | None = None) -> int:
        """EventQueries.count on the main connection: asked once at the end of a send, whose reads
        were the workers' (a second connection made for it cost the run ~7 ms)."""
        where, params = self._where(str(LedgerState(state)), None, dataset_id, None, None)
        with self._lock, self._errors():
            return int(self._conn.execute(f"SELECT COUNT(*) FROM events{where}", params).fetchone()[0])

    def maintenance(self) -> AbstractContextManager[None]:
        return nullcontext()  # forget leaves in_flight rows (claimed by a run) alone

    def live_runs(self) -> list[dict[str, Any]]:
        """The registered runs whose liveness lock is held (for `doctor` and the tests)."""
        with self._lock, self._errors():
            rows = self._raw.execute(
                "SELECT s.run_id, s.host, s.pid, s.started_at FROM senders s WHERE EXISTS ("
                " SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted"
                " AND ((l.classid::bigint << 32) | l.objid::bigint) = s.lock_key AND l.objsubid = 1)"
                " ORDER BY s.started_at"
            ).fetchall()
        return [dict(zip(("run_id", "host", "pid", "started_at"), row, strict=True)) for row in rows]

    def recover_in_flight(self) -> int:
        """`in_flight` events of runs that are gone (their lock is free, or no longer registered)
        -> `uncertain`; also rows with no run (copied from a SQLite ledger). A live run's claims
        are never touched: a claim only ever takes rows that are not `in_flight`."""
        with self._lock, self._errors():
            runs = self._raw.execute(
                "SELECT run_id, lock_key FROM senders WHERE run_id IS DISTINCT FROM %s", (self.run_id,)
            ).fetchall()
            dead: list[tuple[str, int]] = []
            try:
                for run_id, key in runs:
                    if self._raw.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()[0]:
                        dead.append((run_id, key))
                gone = [run_id for run_id, _ in dead]
                with self._raw.transaction():
                    count = self._raw.execute(
                        "UPDATE events SET state = 'uncertain', error_message = %s, updated_at = %s "
                        "WHERE state = 'in_flight' AND state <> 'sent' AND (run_id IS NULL OR run_id = ANY(%s) "
                        # A run that ended without settling (its connection lost) is no longer
                        # registered. A live run's registration is committed before its first claim,
                        # so any of its claims this statement sees comes with its `senders` row.
                        "OR NOT EXISTS (SELECT 1 FROM senders s WHERE s.run_id = events.run_id))",
                        (_GONE, time.time(), gone),
                    ).rowcount
                    self._raw.execute("DELETE FROM senders WHERE run_id = ANY(%s)", (gone,))
            finally:
                for _, key in dead:
                    self._raw.execute("SELECT pg_advisory_unlock(%s)", (key,))
        return int(count)

    # -- the hot path: one round trip per batch ---------------------------------------------------

    def _lookup(
        self, reader: Any, dataset_id: str, keys: Sequence[EventKey], columns: str, condition: str
    ) -> Iterator[tuple[Any, ...]]:
        """One query per event name: `event_id = ANY(...)` on the key's unique index. Planned at
        each call (prepare=False): a plan cached while the table was small (a seq scan) would be
        kept by the session as the table grows, costing a scan of the table per key."""
        select = f", {columns}" if columns else ""
        for name, ids in ids_by_name(keys).items():
            rows = reader.raw.execute(
                f"SELECT event_id{select} FROM events WHERE dataset_id = %s AND event_name = %s "
                f"AND event_id = ANY(%s::text[]){condition}",
                (dataset_id, name, text_array(ids)), prepare=False,
            ).fetchall()
            for row in rows:
                yield (name, *row)

    def sent_among(self, dataset_id: str, keys: Sequence[EventKey]) -> set[EventKey]:
        """The keys recorded `sent`; a re-run's chunks mostly answered from a read-ahead window."""
        if not keys:
            return set()
        with self._reader_lock, self._errors():
            known = self._read_ahead.answer(dataset_id, keys)
            if known is not None:
                return known
            reader = self._read_connection()
            found = {(name, event_id): (row_id, state) for name, event_id, row_id, state
                     in self._lookup(reader, dataset_id, keys, "id, state", "")}
            self._read_ahead.refill(reader.raw, dataset_id, found)
            return {key for key, (_, state) in found.items() if state == "sent"}

    def begin_batch(self, dataset_id: str, batch_id: str, events: Sequence[PendingEvent]) -> set[EventKey]:
        """Claim the events for this run. New keys are inserted (a key another run inserts first
        is lost: ON CONFLICT DO NOTHING waits for that run's transaction); existing rows are taken
        only if `failed` or still in the state this run read, never `in_flight`. Keys go in sorted
        order so two runs claiming overlapping batches lock rows in the same order."""
        if self.run_id is None:
            raise RuntimeError("begin_batch outside sender()")
        import psycopg

        events = sorted(events, key=lambda e: (e.event_name, e.event_id))
        now = time.time()
        facts = self._facts(events)
        for attempt in range(_DEADLOCK_RETRIES):
            try:
                return self._claim(dataset_id, batch_id, events, facts, now)
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure) as exc:
                # The transaction was rolled back whole: nothing was claimed, so trying again is safe.
                if attempt + 1 == _DEADLOCK_RETRIES:
                    raise error(self.url, exc) from None
        raise AssertionError("unreachable")

    def _facts(self, events: Sequence[PendingEvent]) -> list[tuple[Any, ...]]:
        """The report facts of each event (ledger.facts), its referral resolved as on SQLite: one
        query per chunk of the batch, read once (not again when a deadlock retries the claim)."""
        with self._errors():
            resolved = resolve_referrals(TranslatingConnection(self._sending_connection()), events)
        return [fact_columns(e, found) for e, found in zip(events, resolved, strict=True)]

    def _claim(
        self, dataset_id: str, batch_id: str, events: Sequence[PendingEvent], facts: list[tuple[Any, ...]],
        now: float,
    ) -> set[EventKey]:
        import psycopg

        rows = [(e.event_name, e.event_id, e.event_time, e.source, e.line, e.payload_hash, *fact)
                for e, fact in zip(events, facts, strict=True)]
        raw = self._sending_connection()
        try:
            with raw.transaction():
                claimed = {tuple(row) for row in raw.execute(
                    "INSERT INTO events (dataset_id, event_name, event_id, state, event_time, batch_id, "
                    "attempts, source, line, payload_hash, created_at, updated_at, run_id, "
                    f"{_FACTS}) "
                    "SELECT %s, n, i, 'in_flight', t, %s, 1, s, l, h, %s, %s, %s, c, v, cu, r, a, m, k "
                    f"FROM ({_ROWS}) AS u ORDER BY n, i "
                    "ON CONFLICT (dataset_id, event_name, event_id) DO NOTHING RETURNING event_name, event_id",
                    (dataset_id, batch_id, now, now, self.run_id, _json(rows)), prepare=False,
                ).fetchall()}
                rest = [i for i, e in enumerate(events) if (e.event_name, e.event_id) not in claimed]
                if rest:
                    # Rows this run read before (their state must be still that one, or `failed`).
                    again = [(*rows[i], events[i].claim_from) for i in rest]
                    claimed.update(tuple(row) for row in raw.execute(
                        "UPDATE events e SET state = 'in_flight', event_time = u.t, batch_id = %s, "
                        "attempts = e.attempts + 1, source = u.s, line = u.l, payload_hash = u.h, "
                        "updated_at = %s, run_id = %s, error_code = NULL, error_subcode = NULL, "
                        "error_message = NULL, channel = u.c, value = u.v, currency = u.cu, referral_key = u.r, "
                        f"ad_id = u.a, attribution = u.m, match_keys = u.k FROM ({_ROWS}) AS u "
                        "WHERE e.dataset_id = %s AND e.event_name = u.n AND e.event_id = u.i "
                        "AND e.state <> 'in_flight' AND (e.state = 'failed' OR e.state = u.x) "
                        "RETURNING e.event_name, e.event_id",
                        (batch_id, now, self.run_id, _json(again), dataset_id), prepare=False,
                    ).fetchall())
            self._note_claimed(raw, len(claimed))
        except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure):
            raise
        except psycopg.Error as exc:
            raise error(self.url, exc) from None
        return claimed  # type: ignore[return-value]

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
        grouped = ids_by_name(keys)
        now = time.time()
        with self._errors(), self._sending_connection().transaction() as tx:
            for name, ids in grouped.items():
                tx.connection.execute(
                    "UPDATE events SET state = %s, batch_id = %s, error_code = %s, error_subcode = %s, "
                    "error_message = %s, fbtrace_id = %s, updated_at = %s WHERE dataset_id = %s "
                    "AND event_name = %s AND event_id = ANY(%s::text[]) AND run_id = %s AND state = 'in_flight'",
                    (str(LedgerState(state)), batch_id, error_code, error_subcode, error_message, fbtrace_id,
                     now, dataset_id, name, text_array(ids), self.run_id), prepare=False,
                )

    def forget(
        self,
        state: str | None = None,
        event_name: str | None = None,
        dataset_id: str | None = None,
        event_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
    ) -> int:
        """As on SQLite, except that `in_flight` rows stay: a live run on another host owns them
        (a dead run's become `uncertain` at the next send, and can be forgotten then)."""
        where, params = self._where(state, event_name, dataset_id, since, until, event_id)
        where = f"{where} AND state != 'in_flight'" if where else " WHERE state != 'in_flight'"
        with self._tx() as conn:
            return int(conn.execute(f"DELETE FROM events{where}", params).rowcount)
