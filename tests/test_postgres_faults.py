"""Losing the PostgreSQL ledger mid-send (issue 15): the server stopped, or the run's connection
killed with pg_terminate_backend. The run ends with one clear line and exit 3, never with an event
sent and not recorded at least `in_flight`; a re-run once the server is back settles everything:
no event twice, none lost (received, or listed `uncertain`)."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from capi_cli.sandbox.server import GraphStandin
from pg_server import PgServer, start
from support.sending import DATASET, TOKEN
from test_postgres_senders import finish, overlapping_files, spawn, states


@pytest.fixture
def own_server() -> Iterator[PgServer]:
    """A server of this test's own, since the test stops it."""
    pytest.importorskip("psycopg")
    base = Path(tempfile.mkdtemp(prefix="capi-pg-fault-"))
    base.chmod(0o755)
    try:
        server = start(base / "server")
    except Exception as exc:  # noqa: BLE001
        shutil.rmtree(base, ignore_errors=True)
        import os

        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL tests need a server under CI: {exc}")
        pytest.skip(f"could not start PostgreSQL: {exc}")
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)


def _wait_posts(graph: GraphStandin, n: int) -> None:
    deadline = time.monotonic() + 60
    while graph.posts < n:
        assert time.monotonic() < deadline
        time.sleep(0.005)


def _check_settled(graph: GraphStandin, url: str, ids: list[str]) -> None:
    assert graph.duplicates() == {}, "no event received twice"
    received = {event_id for _, event_id in graph.received}
    ledger = states(url)
    assert [i for i in ids if i not in received and ledger.get(i, ("?",))[0] != "uncertain"] == []
    assert all(state != "in_flight" for state, _ in ledger.values())
    assert all(event_id in received for event_id, (state, _) in ledger.items() if state == "sent")


def _one_clear_line(err: str) -> None:
    lines = [line for line in err.splitlines() if line.startswith("capi: error:")]
    assert len(lines) == 1 and "lost the connection to the PostgreSQL ledger" in lines[0], err
    assert "Traceback" not in err and "pg-Secret" not in err


def test_server_stopped_mid_send_then_restarted(tmp_path: Path, own_server: PgServer) -> None:
    url = own_server.create_database("capi")
    files, ids = overlapping_files(tmp_path, 1, per_host=600)
    with GraphStandin(token=TOKEN, datasets={DATASET}, latency=0.1) as graph:
        proc = spawn(tmp_path / "home", graph.url, url, files)
        _wait_posts(graph, 5)
        own_server.stop()
        code, _, err = finish(proc)
        assert code == 3, err
        _one_clear_line(err)
        own_server.start()
        code, _, err = finish(spawn(tmp_path / "home", graph.url, url, files))
        assert code in (0, 4), err
        _check_settled(graph, url, ids)
        # Meta received everything but what a lost answer leaves uncertain.
        assert len(graph.received) >= len(ids) - 2 * 20 * 2


def test_connection_killed_with_pg_terminate_backend(tmp_path: Path, own_server: PgServer) -> None:
    import psycopg

    url = own_server.create_database("capi")
    files, ids = overlapping_files(tmp_path, 1, per_host=600)
    with GraphStandin(token=TOKEN, datasets={DATASET}, latency=0.1) as graph:
        proc = spawn(tmp_path / "home", graph.url, url, files)
        _wait_posts(graph, 5)
        with psycopg.connect(own_server.url, autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'capi' AND datname = 'capi'"
            ).fetchone()
        assert killed is not None and killed[0] >= 1
        code, _, err = finish(proc)
        assert code == 3, err
        _one_clear_line(err)
        code, _, err = finish(spawn(tmp_path / "home2", graph.url, url, files))
        assert code in (0, 4), err
        _check_settled(graph, url, ids)
