"""Report facts (SPEC §8): what the ledger keeps of each event for `capi report`, and the runs.

Nothing personal: the channel, the value and currency, which customer-information keys the event
carried (their names, never their values), the conversation (stored referral) it belongs to and
that referral's ad id, and how it was tied to it. The referral is found when the batch is begun,
by the event's click id (WhatsApp) or its PSID / IGSID (Messenger / Instagram), in one query per
chunk of a batch.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any

import orjson

from capi_cli.ledger.schema import RUN_COUNTS, SQL_CHUNK, Attribution, EventFacts, PendingEvent
from capi_cli.rules import HASHED_FIELDS, UNHASHED_USER_DATA

# Customer-information keys of user_data, in Meta's order; the messaging ids are not among them.
MATCH_KEYS: tuple[str, ...] = (*HASHED_FIELDS, *UNHASHED_USER_DATA)
_MATCH_KEY_SET = frozenset(MATCH_KEYS)

# (referral_key, ad_id, attribution) of one event.
Resolved = tuple[str | None, str | None, str]


def facts_of(event: Any) -> EventFacts:
    """The facts of a built event (events.pipeline.BuiltEvent, or anything with a payload)."""
    # A worker's event comes as JSON text: orjson reads the few keys needed here ten times faster
    # than `payload` would (json), and nothing else sees this copy (it reads big integers as floats).
    payload: Mapping[str, Any] | None = getattr(event, "_payload", None)
    if payload is None:
        text = getattr(event, "payload_json", None)
        payload = orjson.loads(text) if type(text) is str else event.payload
    user = payload.get("user_data") or {}
    custom = payload.get("custom_data") or {}
    channel = payload.get("messaging_channel")
    if channel == "whatsapp":
        conversation = user.get("ctwa_clid")
    elif channel == "messenger":
        conversation = user.get("page_scoped_user_id")
    else:
        conversation = user.get("ig_sid")
    value = custom.get("value") if isinstance(custom, Mapping) else None
    currency = custom.get("currency") if isinstance(custom, Mapping) else None
    return EventFacts(
        channel=channel if isinstance(channel, str) else None,
        value=float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None,
        currency=str(currency).upper() if currency else None,
        joined=bool(getattr(event, "attributed", False)),
        match_keys=",".join(key for key in user if key in _MATCH_KEY_SET) if isinstance(user, Mapping) else "",
        conversation=str(conversation) if conversation else None,
    )


def resolve_referrals(conn: Any, events: Sequence[PendingEvent]) -> list[Resolved]:
    """The stored referral of each event: by click id on WhatsApp; on Messenger / Instagram the
    user's latest referral at or before the event (its PSID / IGSID is what Meta ties to the ad).
    `conn` is the backend's connection, in the transaction that begins the batch (SQLite), or the
    sending connection through ledger.pg_sql's translation (PostgreSQL). Ties in time are broken
    by the message key and a referral with no time comes first (SQLite's order for NULL, spelled
    out for PostgreSQL), so both backends tie an event to the same referral."""
    clids = {e.facts.conversation for e in events
             if e.facts is not None and e.facts.channel == "whatsapp" and e.facts.conversation}
    by_clid: dict[str, tuple[str, str | None]] = {}
    for chunk in _chunks(sorted(clids)):
        rows = conn.execute(
            "SELECT ctwa_clid, message_key, ad_id, ts FROM referrals WHERE channel = 'whatsapp' "
            f"AND ctwa_clid IN ({','.join('?' * len(chunk))}) ORDER BY ts NULLS FIRST, message_key",
            chunk,
        )
        for clid, key, ad_id, _ in rows:
            by_clid.setdefault(clid, (key, ad_id))  # the first referral of a click (Meta retries)
    by_user: dict[tuple[str, str], list[tuple[int, str, str | None]]] = {}
    for channel in ("messenger", "instagram"):
        users = {e.facts.conversation for e in events
                 if e.facts is not None and e.facts.channel == channel and e.facts.conversation}
        for chunk in _chunks(sorted(users)):
            rows = conn.execute(
                f"SELECT user_key, ts, message_key, ad_id FROM referrals WHERE channel = ? "
                f"AND user_key IN ({','.join('?' * len(chunk))}) ORDER BY ts NULLS FIRST, message_key",
                (channel, *chunk),
            )
            for user, ts, key, ad_id in rows:
                by_user.setdefault((channel, user), []).append((ts or 0, key, ad_id))
    resolved: list[Resolved] = []
    for event in events:
        facts = event.facts
        found: tuple[str, str | None] | None = None
        if facts is not None and facts.conversation:
            if facts.channel == "whatsapp":
                found = by_clid.get(facts.conversation)
            elif facts.channel is not None:
                for ts, key, ad_id in by_user.get((facts.channel, facts.conversation), ()):
                    if ts <= event.event_time:
                        found = (key, ad_id)
        if facts is not None and facts.joined:
            method = Attribution.JOINED
        elif found is not None:
            method = Attribution.CLICK_ID
        else:
            method = Attribution.NONE
        resolved.append((found[0], found[1], str(method)) if found else (None, None, str(method)))
    return resolved


def _chunks(values: list[str]) -> list[list[str]]:
    return [values[i : i + SQL_CHUNK] for i in range(0, len(values), SQL_CHUNK)]


def fact_columns(event: PendingEvent, resolved: Resolved) -> tuple[Any, ...]:
    """(channel, value, currency, referral_key, ad_id, attribution, match_keys) of one event."""
    facts = event.facts
    if facts is None:
        return (None, None, None, None, None, None, None)
    return (facts.channel, facts.value, facts.currency, resolved[0], resolved[1], resolved[2], facts.match_keys)


class RunStore:
    """The `runs` half of both ledgers (a mixin: it uses the ledger's connection, lock and transactions)."""

    _conn: Any  # sqlite3.Connection, or PostgreSQL's TranslatingConnection (`?` SQL on both)
    _lock: threading.RLock
    _reader_lock: threading.Lock  # guards the second connection (_read_connection)

    def _tx(self) -> AbstractContextManager[Any]:
        raise NotImplementedError

    def _errors(self) -> AbstractContextManager[None]:
        raise NotImplementedError

    def record_run(
        self,
        *,
        started_at: float,
        dataset_id: str | None,
        inputs: Sequence[str],
        counts: Mapping[str, Any],
        exit_code: int,
    ) -> str:
        """Keep one send's counts (SPEC §7 keys; a key the summary lacks counts 0) and exit code."""
        run_id = uuid.uuid4().hex
        values = [int(counts.get(name) or 0) for name in RUN_COUNTS]
        with self._tx() as conn:
            conn.execute(
                f"INSERT INTO runs (run_id, started_at, ended_at, dataset_id, inputs, {', '.join(RUN_COUNTS)}, "
                f"exit_code) VALUES ({','.join('?' * (6 + len(RUN_COUNTS)))})",
                (run_id, started_at, time.time(), dataset_id, json.dumps(list(inputs), ensure_ascii=False),
                 *values, int(exit_code)),
            )
        return run_id

    def report_query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """A read for capi_cli.report: its SQL is portable (standard SQL, `?` placeholders)."""
        with self._lock, self._errors():
            return self._report_read(self._conn, sql, params)

    def report_reader(self) -> SecondReader:
        """The same reads on the ledger's second connection (the one a send reads on), so that
        capi_cli.report can run its two long reads at once, each on a core of the database."""
        return SecondReader(self)

    def _report_read(self, conn: Any, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return conn.execute(sql, list(params)).fetchall()

    def _read_connection(self) -> Any:
        raise NotImplementedError


class SecondReader:
    """A ReportSource (capi_cli.report) on a ledger's second connection."""

    def __init__(self, ledger: RunStore) -> None:
        self._ledger = ledger

    def report_query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        ledger = self._ledger
        with ledger._reader_lock, ledger._errors():
            return ledger._report_read(ledger._read_connection(), sql, params)
