"""The event queries both backends share: lookups, settling, stats, listing, forget and prune.

Written once in SQLite's dialect (`?` placeholders); the PostgreSQL backend runs them through a
connection that translates (ledger.pg_sql). A backend provides `_conn` and `_read_connection()`
(DB-API-like: `execute(sql, params)` returning a cursor), `_lock`, `_reader_lock`, `_tx()` and
`_errors()`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

from capi_cli.ledger.referrals import iso_z
from capi_cli.ledger.schema import EVENT_COLUMNS, SQL_CHUNK, EventKey, LedgerState


class EventQueries:
    """The event half of a ledger, over the backend's connections (a mixin)."""

    _conn: Any
    _lock: threading.RLock
    _reader_lock: threading.Lock

    def _tx(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _errors(self) -> AbstractContextManager[None]:
        raise NotImplementedError

    def _read_connection(self) -> Any:
        raise NotImplementedError

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
        with self._reader_lock, self._errors():
            rows = self._lookup(self._read_connection(), dataset_id, keys, "state, payload_hash", "")
            return {(name, event_id): (state, payload_hash) for name, event_id, state, payload_hash in rows}

    def _lookup(
        self,
        reader: Any, dataset_id: str, keys: Sequence[EventKey], columns: str, condition: str
    ) -> Iterator[tuple[Any, ...]]:
        """(event_name, event_id, *columns) of the keys found (and matching `condition`), one
        `IN (...)` query per event name and SQL_CHUNK ids."""
        select = f", {columns}" if columns else ""
        for name, ids in ids_by_name(keys).items():
            for first in range(0, len(ids), SQL_CHUNK):
                chunk = ids[first : first + SQL_CHUNK]
                rows = reader.execute(
                    f"SELECT event_id{select} FROM events WHERE dataset_id = ? AND event_name = ? "
                    f"AND event_id IN ({','.join('?' * len(chunk))}){condition}",
                    (dataset_id, name, *chunk),
                )
                for row in rows:
                    yield (name, *row)


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
        with self._tx() as conn:
            for name, ids in ids_by_name(keys).items():
                for start in range(0, len(ids), SQL_CHUNK):
                    chunk = ids[start : start + SQL_CHUNK]
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


def ids_by_name(keys: Iterable[EventKey]) -> dict[str, list[str]]:
    """Event keys grouped by event name (a query per name on the key's index), in their order."""
    grouped: dict[str, list[str]] = {}
    for name, event_id in keys:
        grouped.setdefault(name, []).append(event_id)
    return grouped
