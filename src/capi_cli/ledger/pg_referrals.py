"""Storing referrals on PostgreSQL: the two steps of ReferralStore.store_referrals in its dialect.

The rest of the referral half (lists, lookups, the batched join) is plain SQL and runs through
ledger.pg_sql's translation. These two cannot: SQLite counts new rows by `total_changes` and
merges copies with named `:param`s, and enlarges its page cache by PRAGMA; PostgreSQL counts the
rows an `INSERT ... ON CONFLICT DO NOTHING` inserted (its rowcount), takes `%(name)s`, and has no
page cache of the client's to enlarge.
"""

from __future__ import annotations

import re
from typing import Any

from capi_cli.ledger.referrals import MERGE_SQL, ReferralStore

# The stored columns in the order of store_referrals' rows.
_STORED = (
    "channel, user_key, message_key, ctwa_clid, ad_id, source_type, source_url, ref, user_id, wa_id, "
    "bsuid, business_id, phone_number_id, message_id, ts, kind, origin, ts_estimated, stored_at, headline"
)
_WIDTH = len(_STORED.split(","))
# Rows per INSERT: 20 parameters each, well within PostgreSQL's 65,535 per statement.
_ROWS_PER_STATEMENT = 1000
# The text columns, by position in a row: SQLite's TEXT affinity stores a number given for one as
# its text ('120...'), PostgreSQL refuses it (a bigint for a text column); as text here, the same.
_TEXT_AT = tuple(i for i, name in enumerate(_STORED.split(", ")) if name not in ("ts", "ts_estimated", "stored_at"))
_INTEGER_NAMES = frozenset(("ts", "ts_estimated"))
# A parameter PostgreSQL meets only in `IS NOT NULL` or a comparison with a literal has no type
# to infer from a NULL: these are the integer columns of MERGE_SQL.
_CASTS = {"ts": "bigint", "ts_estimated": "bigint"}


def _postgres_named(sql: str) -> str:
    """SQLite's `:name` parameters as psycopg's `%(name)s`, typed where PostgreSQL needs it."""

    def param(match: re.Match[str]) -> str:
        name = match.group(1)
        cast = _CASTS.get(name)
        return f"CAST(%({name})s AS {cast})" if cast else f"%({name})s"

    return re.sub(r"(?<![:\w]):(\w+)", param, sql.replace("%", "%%"))


MERGE = _postgres_named(MERGE_SQL)


class PostgresReferrals(ReferralStore):
    """The PostgreSQL ledger's referral store: ReferralStore with its storing steps in PostgreSQL's
    dialect."""

    def _insert_referrals(self, conn: Any, rows: list[tuple[Any, ...]]) -> int:
        """Insert the rows not stored yet (a copy stored already, or twice in `rows`, is skipped
        by the key (channel, message_key)); how many were new, inside the caller's transaction."""
        new = 0
        for start in range(0, len(rows), _ROWS_PER_STATEMENT):
            chunk = rows[start : start + _ROWS_PER_STATEMENT]
            values = ",".join([f"({','.join(['%s'] * _WIDTH)})"] * len(chunk))
            params = [value for row in chunk for value in row]
            for at in range(len(chunk)):
                for i in _TEXT_AT:
                    params[at * _WIDTH + i] = _text(params[at * _WIDTH + i])
            cursor = conn.raw.execute(
                f"INSERT INTO referrals ({_STORED}) VALUES {values} ON CONFLICT (channel, message_key) DO NOTHING",
                params,
                prepare=False,  # a text per chunk length: not worth a server-side plan each
            )
            new += cursor.rowcount
        return new

    def _merge_referrals(self, conn: Any, params: list[dict[str, Any]]) -> None:
        texts = [{name: value if name in _INTEGER_NAMES else _text(value) for name, value in row.items()}
                 for row in params]
        conn.raw.cursor().executemany(MERGE, texts)

    def _large_cache(self) -> None:
        """Nothing to do: the server's shared buffers serve every connection."""


def _text(value: Any) -> Any:
    """A value for a text column as SQLite's TEXT affinity keeps it (a number becomes its text)."""
    if value is None or type(value) is str:
        return value
    return str(int(value)) if isinstance(value, bool) else str(value)
