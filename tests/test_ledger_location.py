"""A ledger's location: a PostgreSQL URL told from a path, its password never shown, and the
shared SQLite-dialect queries as PostgreSQL takes them."""

from __future__ import annotations

import pickle

import pytest

from capi_cli.ledger import LedgerRef
from capi_cli.ledger.location import mask_password, shown
from capi_cli.ledger.pg_sql import translate


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://capi:s3cr%40t@db:5432/capi?sslmode=require", "postgresql://capi:***@db:5432/capi?sslmode=require"),
        ("postgres://capi:x@db/capi", "postgres://capi:***@db/capi"),
        ("postgresql://capi@db/capi?password=s3cret&sslmode=require", "postgresql://capi@db/capi?password=***&sslmode=require"),
        ("postgresql:///capi?service=ledger", "postgresql:///capi?service=ledger"),
        ("/home/me/.local/share/capi/ledger.sqlite3", "/home/me/.local/share/capi/ledger.sqlite3"),
    ],
)
def test_password_is_masked(given: str, expected: str) -> None:
    assert shown(given) == expected
    assert LedgerRef.parse(given).shown == expected
    assert "s3cr" not in repr(LedgerRef.parse(given))


def test_libpq_keyword_password_is_masked() -> None:
    assert mask_password("connection to host=db password=s3cret dbname=capi failed") == (
        "connection to host=db password=*** dbname=capi failed"
    )


def test_ref_is_picklable_for_worker_processes() -> None:
    ref = LedgerRef.parse("postgresql://capi:pw@db/capi")
    assert ref.kind == "postgres" and pickle.loads(pickle.dumps(ref)) == ref
    assert LedgerRef.parse("ledger.sqlite3").kind == "sqlite"


def test_shared_queries_translate_to_postgres() -> None:
    assert translate("SELECT state FROM events WHERE dataset_id = ? AND event_id IN (?,?)") == (
        "SELECT state FROM events WHERE dataset_id = %s AND event_id IN (%s,%s)"
    )
    assert translate("INSERT OR IGNORE INTO referrals (a, b) VALUES (?, ?)") == (
        "INSERT INTO referrals (a, b) VALUES (%s, %s) ON CONFLICT DO NOTHING"
    )
    assert translate("SELECT 1 WHERE x LIKE '5%'") == "SELECT 1 WHERE x LIKE '5%%'"
