"""Ad referrals in the ledger database: stored by `extract-referral`, read by the referral join.

Only messaging identifiers are stored. A WhatsApp user known by phone is stored as the SHA-256 of
the digits (the value Meta's `ph` match key takes), so lookups by phone work with no phone in clear.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

from capi_cli.ledger.schema import REFERRAL_COLUMNS


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


class ReferralStore:
    """The referral half of Ledger (a mixin: it uses the Ledger's connection, lock and transactions)."""

    _conn: sqlite3.Connection
    _lock: threading.RLock

    def _tx(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def _errors(self) -> AbstractContextManager[None]:
        raise NotImplementedError

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
                        phone_number_id, message_id, ts, kind, origin, stored_at, headline)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                    """,
                    # The ad's headline is its creative's text, not customer data: kept for the report.
                    (*row, now, record.get("headline") or None),
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
