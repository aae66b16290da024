"""Running the ledger's shared queries (written in SQLite's dialect) on PostgreSQL.

The shared queries (ledger.queries, ledger.referrals) use `?` placeholders and SQLite's
`INSERT OR IGNORE`; a query added there later works on both backends through this translation,
as a migration added to the shared list does through schema.postgres_sql.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence
from typing import Any

from capi_cli.errors import SetupError
from capi_cli.ledger.location import mask_password, shown

_INSERT_OR_IGNORE = re.compile(r"\bINSERT\s+OR\s+IGNORE\s+INTO\b", re.IGNORECASE)


@functools.lru_cache(maxsize=256)
def translate(sql: str) -> str:
    """SQLite-dialect SQL as PostgreSQL takes it (psycopg's `%s` placeholders)."""
    text = sql.replace("%", "%%").replace("?", "%s")
    if _INSERT_OR_IGNORE.search(text):
        text = _INSERT_OR_IGNORE.sub("INSERT INTO", text).rstrip().rstrip(";") + " ON CONFLICT DO NOTHING"
    return text.replace(" NOT INDEXED", "")


class TranslatingConnection:
    """A psycopg connection that takes the shared queries as they are written."""

    def __init__(self, raw: Any) -> None:
        self.raw = raw

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.raw.execute(translate(sql), list(params))


def text_array(values: Sequence[str]) -> str:
    """`values` as one PostgreSQL text[] literal, for `= ANY(%s::text[])`. psycopg dumps a Python
    list element by element (~1.4 µs each: 1,000 ids a settle, as many a lookup); this is one join.
    For a statement planned with its parameters (prepare=False) the array is still a constant to
    the planner, which probes the key's index with it."""
    if not values:
        return "{}"
    text = '","'.join(values)
    if '"' in text or "\\" in text:  # quoted elements escape these two (ids are rarely so)
        text = '","'.join(v.replace("\\", "\\\\").replace('"', '\\"') for v in values)
    return '{"' + text + '"}'


def connect(url: str) -> Any:
    """A psycopg connection in autocommit mode (transactions are explicit). Credentials come
    from the URL, PGPASSFILE/PGSERVICE or libpq's environment variables, as libpq reads them."""
    try:
        import psycopg
    except ImportError:
        raise SetupError(
            "ledger: a PostgreSQL ledger needs the psycopg driver: pip install 'capi-cli[postgres]'"
        ) from None
    try:
        conn = psycopg.connect(
            url,
            autocommit=True,
            connect_timeout=10,
            application_name="capi",
            # The client notices a lost server within ~25 s instead of the kernel's 2 hours.
            keepalives=1,
            keepalives_idle=10,
            keepalives_interval=5,
            keepalives_count=3,
        )
        # ... and the server notices a lost client (its host gone) as soon: its session, and with
        # it the run's liveness lock, ends, so other runs may recover its `in_flight` events.
        # (One round trip: several statements go as one simple query when there are no parameters.)
        conn.execute("SET tcp_keepalives_idle = 10; SET tcp_keepalives_interval = 5; "
                     "SET tcp_keepalives_count = 3; SET tcp_user_timeout = 25000")
    except psycopg.Error as exc:
        raise error(url, exc, connecting=True) from None
    return conn


def error(url: str, exc: BaseException, *, connecting: bool = False) -> SetupError:
    """One line for a database failure; never the password (psycopg may echo the conninfo)."""
    message = mask_password(" ".join(str(exc).split())) or type(exc).__name__
    if connecting:
        return SetupError(
            f"ledger: cannot connect to the PostgreSQL ledger {shown(url)} ({message}); check the "
            "URL, the server and the credentials (URL, PGPASSFILE/PGSERVICE or PG* variables)"
        )
    lost = any(
        part in message
        for part in ("server closed the connection", "terminating connection", "connection is closed",
                     "the connection is lost", "consuming input failed", "connection refused",
                     "Connection refused", "SSL SYSCALL", "sending query", "server conn crashed")
    )
    if lost:
        return SetupError(
            f"ledger: lost the connection to the PostgreSQL ledger {shown(url)} ({message}); batches "
            "already begun stay in_flight and become uncertain at the next run, which settles the rest: "
            "run again once the server is reachable"
        )
    return SetupError(f"ledger: PostgreSQL ledger {shown(url)}: {message}")
