"""PostgreSQL for the tests that need a server: CAPI_TEST_POSTGRES_URL (set by .ci/run), or a
private server this session starts (tests/pg_server.py) and stops at the end. With CI set, no
server is a failure, not a skip. Each test gets a fresh database of its own."""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from pg_server import PgServer, start

_GIVEN = os.environ.get("CAPI_TEST_POSTGRES_URL")  # read before the tests clear CAPI_*
_numbers = itertools.count()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[str]:
    """The admin URL of a running server."""
    given = _GIVEN
    if given:
        yield given
        return
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg is not installed (pip install -e '.[test]')")
    server: PgServer | None = None
    # Not under pytest's own temporary directory: that one is private to this user, and the
    # server runs as `nobody` when the tests run as root.
    base = Path(tempfile.mkdtemp(prefix="capi-pg-"))
    base.chmod(0o755)
    try:
        server = start(base / "server")
    except Exception as exc:  # noqa: BLE001 - reported as the reason
        _unavailable(f"could not start PostgreSQL: {exc}")
    assert server is not None
    try:
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL tests need a server under CI: {reason}")
    pytest.skip(reason)


@pytest.fixture
def pg_url(postgres_server: str) -> str:
    """A fresh, empty database on the server, for this test alone."""
    import psycopg

    name = f"capi_t{os.getpid()}_{next(_numbers)}"
    with psycopg.connect(postgres_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return _with_db(postgres_server, name)


def _with_db(url: str, name: str) -> str:
    head, _, query = url.partition("?")
    scheme, _, rest = head.partition("://")
    authority = rest.split("/", 1)[0]
    return f"{scheme}://{authority}/{name}" + (f"?{query}" if query else "")
