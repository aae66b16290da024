"""Ad referrals in the ledger database: stored by `extract-referral`, read by the referral join.

Only messaging identifiers are stored. A WhatsApp user known by phone is stored as the SHA-256 of
the digits (the value Meta's `ph` match key takes), so lookups by phone work with no phone in clear.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from capi_cli.ledger.schema import JOIN_MMAP_BYTES, REFERRAL_COLUMNS, SEND_CACHE_KIB, SQL_CHUNK

if TYPE_CHECKING:
    from capi_cli.ledger.location import LedgerRef

# The stored columns of REFERRAL_COLUMNS, in its order (`ts` is the record's `timestamp`).
_COLUMNS = (
    "channel, ctwa_clid, ad_id, source_type, source_url, ref, user_id, wa_id, bsuid, "
    "business_id, phone_number_id, message_id, ts, kind, origin"
)


# What the join answers of a referral: its identity and what an event takes from it (the click
# id and the WABA); the columns read are fewer than a full record's, for a lookup per order.
_JOINED = ("channel", "ctwa_clid", "ad_id", "bsuid", "business_id", "message_id", "ts")


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
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))  # half datetime's cost: a join makes many


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


class ReferralStore:
    """The referral half of a ledger, held by it as `ledger.referrals` (both backends): it works
    on the ledger's connection, under its lock, in its transactions and with its errors, all
    given when the ledger makes it. `ref` is the ledger's, so a worker process can open the same
    ledger and take its referral store."""

    def __init__(
        self,
        conn: Any,  # sqlite3.Connection, or PostgreSQL's TranslatingConnection
        lock: threading.RLock,
        tx: Callable[[], AbstractContextManager[Any]],
        errors: Callable[[], AbstractContextManager[None]],
        ref: LedgerRef,
    ) -> None:
        self._conn = conn
        self._lock = lock
        self._tx = tx
        self._errors = errors
        self.ref = ref
        self._cache_enlarged = False  # the connection's page cache (_large_cache)

    # -- referrals -------------------------------------------------------------------------------

    def store_referrals(self, records: Iterable[Mapping[str, Any]]) -> tuple[int, int]:
        """Store referrals; (new, already stored). A record already stored (same channel, business
        and message) is merged into it: a field the stored copy lacks is taken from the new one,
        and a delivery's own time replaces an estimated one. Nothing stored is ever lost."""
        now = time.time()
        # The ad's headline is its creative's text, not customer data: kept for the report.
        rows = [(*_referral_row(record), now, record.get("headline") or None) for record in records]
        with self._tx() as conn:
            new = self._insert_referrals(conn, rows)
            if new < len(rows):
                # Some were stored already (or twice in this chunk): merge every copy into the
                # stored row; merging a row into itself changes nothing.
                self._merge_referrals(conn, [{**_merge_params(row[:-2]), "headline": row[-1]} for row in rows])
        return new, len(rows) - new

    # The two steps of store_referrals in SQLite's dialect; the PostgreSQL backend has its own
    # (ledger.pg_referrals: no total_changes, no named `:param`s, no PRAGMA there).

    def _insert_referrals(self, conn: Any, rows: list[tuple[Any, ...]]) -> int:
        """Insert the rows not stored yet, inside the caller's transaction; how many were new."""
        self._large_cache()
        before = conn.total_changes
        # One prepared statement for the chunk, in one transaction.
        conn.executemany(
            """
            INSERT OR IGNORE INTO referrals (channel, user_key, message_key, ctwa_clid, ad_id,
                source_type, source_url, ref, user_id, wa_id, bsuid, business_id,
                phone_number_id, message_id, ts, kind, origin, ts_estimated, stored_at, headline)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            """,
            rows,
        )
        return int(conn.total_changes - before)

    def _merge_referrals(self, conn: Any, params: list[dict[str, Any]]) -> None:
        conn.executemany(MERGE_SQL, params)

    def _large_cache(self) -> None:
        """The customer index is keyed by hashes, so stores and lookups land on random pages: with
        SQLite's default 2 MB page cache, a large table costs a disk read per referral. Beyond the
        page cache, the file is read through a memory map: a page the OS holds is read in place,
        without a system call and a copy (8% of the CPU of a dry run joined by phone)."""
        if not self._cache_enlarged:
            with self._lock, self._errors():
                self._conn.execute(f"PRAGMA cache_size = -{SEND_CACHE_KIB}")
                self._conn.execute(f"PRAGMA mmap_size = {JOIN_MMAP_BYTES}")
            self._cache_enlarged = True

    _SELECT_REFERRALS = f"SELECT {_COLUMNS} FROM referrals"

    def _referrals(self, where: str, params: Sequence[Any], limit: int | None = None) -> list[dict[str, Any]]:
        # NULLS LAST is SQLite's own order for DESC, spelled out for PostgreSQL (NULLs first there).
        sql = f"{self._SELECT_REFERRALS}{where} ORDER BY ts DESC NULLS LAST, message_key"
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
        return self.latest_whatsapp_referrals([((user,), at)], window_seconds)[0]

    def latest_whatsapp_referrals(
        self, asks: Sequence[tuple[Sequence[str], int]], window_seconds: int,
        digests: Mapping[str, str] | None = None,
    ) -> list[dict[str, Any] | None]:
        """For each (users, at): the most recent stored WhatsApp referral with a click id of the
        first of `users` that has one in [at - window, at] (ties: the smallest message key), else
        None; as {channel, ctwa_clid, ad_id, bsuid, business_id, message_id, timestamp}. One
        indexed range query per SQL_CHUNK customer keys, however many asks: the cost follows the
        number of orders, not the number of stored referrals. `digests`: the SHA-256 of users that
        are phone digits, when the caller has it (EventBuilder hashed them for `ph`)."""
        known = digests or {}
        keys_of = {user: customer_keys(user, known.get(user)) for users, _ in asks for user in users}
        if not keys_of:
            return [None] * len(asks)
        low = min(at for _, at in asks) - window_seconds
        high = max(at for _, at in asks)
        found = self._whatsapp_history(keys_of.values(), low, high)
        return [_latest(found, keys_of, users, at - window_seconds, at) for users, at in asks]

    def _whatsapp_history(self, keys_of: Iterable[tuple[str, ...]], low: int, high: int) -> dict[str, list[_Dated]]:
        """Every WhatsApp referral with a click id in [low, high] of each customer key, newest
        first (ties: smallest message key). Index range scans on the normalised key, and on the
        BSUID for the users as written (a referral with a phone has its BSUID there, and a hash is
        never a BSUID). Plain SQL: the same statements run on PostgreSQL."""
        # A WhatsApp phone is stored hashed (and a BSUID is never all digits): digits as written
        # are looked up by their hash alone.
        texts = sorted({keys[0] for keys in keys_of if not keys[0].isdigit()})
        every = sorted({key for keys in keys_of for key in keys if not key.isdigit()})
        self._large_cache()
        by_key: dict[str, list[_Dated]] = {}
        seen: dict[str, _Dated] = {}
        for column, keys in (("user_key", every), ("bsuid", texts)):
            for start in range(0, len(keys), SQL_CHUNK):
                chunk = keys[start:start + SQL_CHUNK]
                with self._lock, self._errors():
                    rows = self._conn.execute(
                        f"SELECT {', '.join(_JOINED)}, user_key, message_key FROM referrals WHERE {column} IN "
                        f"({','.join('?' * len(chunk))}) AND channel = 'whatsapp' AND ts BETWEEN ? AND ? "
                        "AND ctwa_clid IS NOT NULL",
                        [*chunk, low, high],
                    ).fetchall()
                keyed = 7 if column == "user_key" else 3  # the row's user_key, or its bsuid (_JOINED)
                for row in rows:
                    message_key = row[8]
                    dated = seen.get(message_key)
                    if dated is None:
                        channel, clid, ad_id, bsuid, business_id, message_id, ts = row[:7]
                        # Its "timestamp" is written by _latest, for the one referral an order gets.
                        record = {"channel": channel, "ctwa_clid": clid, "ad_id": ad_id, "bsuid": bsuid,
                                  "business_id": business_id, "message_id": message_id}
                        dated = seen[message_key] = (-ts, message_key, record)
                    key = row[keyed]
                    history = by_key.get(key)
                    if history is None:
                        by_key[key] = [dated]
                    elif dated not in history:  # found by its user_key and its BSUID alike
                        history.append(dated)
        for history in by_key.values():
            if len(history) > 1:
                history.sort()
        return by_key

    def account_for_user(self, channel: str, user_id: str) -> str | None:
        return self.accounts_for_users(channel, [user_id]).get(user_id.strip())

    def accounts_for_users(self, channel: str, users: Iterable[str]) -> dict[str, str]:
        """The business id (page / Instagram account) of the most recent referral of each user on
        `channel` that names one; users without one are left out."""
        wanted = sorted({u.strip() for u in users})
        best: dict[str, tuple[int, str]] = {}
        for start in range(0, len(wanted), SQL_CHUNK):
            chunk = wanted[start:start + SQL_CHUNK]
            with self._lock, self._errors():
                rows = self._conn.execute(
                    f"SELECT user_key, ts, business_id FROM referrals WHERE user_key IN ({','.join('?' * len(chunk))}) "
                    "AND channel = ? AND business_id IS NOT NULL",
                    [*chunk, channel],
                ).fetchall()
            for user, ts, business_id in rows:
                rank = (ts if ts is not None else -(2**62), business_id)
                if user not in best or rank > best[user]:
                    best[user] = rank
        return {user: rank[1] for user, rank in best.items()}


def customer_keys(user: str, digest: str | None = None) -> tuple[str, ...]:
    """The normalised customer keys a user written any way may be stored under: the text itself
    (a BSUID, PSID or IGSID) and, when it reads as a phone, the hash of its digits (`digest`, when
    the caller has it already)."""
    text = user.strip()
    # Digits as EventBuilder gives a phone are the common case: no regex for them.
    plain = text.isdigit() and not text.startswith("00")
    digits = text if plain else phone_digits(text)
    if digits:
        hashed = digest if plain and digest is not None else phone_key(digits)
        return (text, hashed) if hashed != text else (text,)
    return (text,)


# A referral in a customer's history: (-ts, message key, the record); sorting gives newest first.
_Dated = tuple[int, str, dict[str, Any]]


def _latest(
    found: Mapping[str, list[_Dated]],
    keys_of: Mapping[str, tuple[str, ...]],
    users: Sequence[str],
    low: int,
    high: int,
) -> dict[str, Any] | None:
    """The first of `users` with a referral in [low, high]: its newest (histories are newest first)."""
    for user in users:
        best: _Dated | None = None
        for key in keys_of[user]:
            for dated in found.get(key, ()):
                if -dated[0] <= high:
                    if -dated[0] >= low and (best is None or dated[:2] < best[:2]):
                        best = dated
                    break
        if best is not None:
            record = best[2]
            if "timestamp" not in record:
                record["timestamp"] = iso_z(-best[0])
            return record
    return None


def _user_clause(user: str) -> tuple[str, list[Any]]:
    """Match a user however it was written: phone digits, BSUID, PSID or IGSID, by the normalised
    customer key (`user_key`) or, for a WhatsApp referral that also carries a phone, its BSUID."""
    keys = customer_keys(user)
    marks = ",".join("?" * len(keys))
    return f"(user_key IN ({marks}) OR bsuid IN ({marks}))", [*keys, *keys]


# Row columns in _referral_row's order; the merge keeps what is stored and fills in what it lacks.
_ROW = (
    "channel", "user_key", "message_key", "ctwa_clid", "ad_id", "source_type", "source_url", "ref",
    "user_id", "wa_id", "bsuid", "business_id", "phone_number_id", "message_id", "ts", "kind",
    "origin", "ts_estimated",
)
_FILLED = ("ctwa_clid", "ad_id", "source_type", "source_url", "ref", "user_id", "wa_id", "bsuid",
           "business_id", "phone_number_id", "kind")
# A delivery's own time (or a logged one) beats the file's date; SET expressions see the old row.
# SQLite's named parameters: ledger.pg_referrals rewrites them for PostgreSQL.
_BETTER_TIME = ":ts IS NOT NULL AND (ts IS NULL OR (ts_estimated = 1 AND :ts_estimated = 0))"
MERGE_SQL = (
    "UPDATE referrals SET "
    + ", ".join(f"{c} = coalesce({c}, :{c})" for c in _FILLED)
    + ", headline = coalesce(headline, :headline)"
    + ", user_key = CASE WHEN user_key = '' THEN :user_key ELSE user_key END"
    + f", ts = CASE WHEN {_BETTER_TIME} THEN :ts ELSE ts END"
    + f", ts_estimated = CASE WHEN {_BETTER_TIME} THEN :ts_estimated ELSE ts_estimated END"
    + " WHERE channel = :channel AND message_key = :message_key"
)


def _merge_params(row: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(_ROW, row, strict=True))


def message_key(record: Mapping[str, Any]) -> str | None:
    """The stored identity of a message: the business (phone number id first for WhatsApp, as a
    bare `value` copy has no WABA id) and the message id; None when the record has no message id."""
    message_id = record.get("message_id")
    if not message_id:
        return None
    business = record.get("phone_number_id") or record.get("business_id") or ""
    return f"{business}|{message_id}"


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
    # Same conversation event stored twice must add nothing: key by business + message id, else by content.
    key = message_key(record) or "|".join(
        str(v or "")
        for v in (user_id, *(record.get(k) for k in ("ctwa_clid", "ad_id", "ref", "timestamp", "kind")))
    )
    return (
        channel,
        user_key,
        key,
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
        1 if record.get("timestamp_estimated") and ts is not None else 0,
    )
