"""`--resend` counts only what was sent, and a resend that fails leaves `sent` records `sent`
(SPEC §7); a fatal Graph error is reported once per run, with its code and subcode right."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from capi_cli.sandbox.server import GraphStandin
from support.sending import DATASET, TOKEN, ledger_states, send_env, write_events_csv

CAPI = [sys.executable, "-m", "capi_cli"]


def capi(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CAPI, *args], env=env, capture_output=True, text=True, timeout=120)


def test_failed_resend_counts_nothing_and_leaves_sent_records_sent(tmp_path: Path) -> None:
    ids = write_events_csv(tmp_path / "orders.csv", 3)
    home = tmp_path / "home"
    with GraphStandin(token=TOKEN, datasets={DATASET}) as graph:
        first = capi(send_env(home, graph.url), "send", "--file", str(tmp_path / "orders.csv"))
        assert first.returncode == 0, first.stderr
        bad = capi(send_env(home, graph.url, token="EAAG-revoked"), "send", "--file", str(tmp_path / "orders.csv"),
                   "--resend", "--json")
        assert ledger_states(home) == dict.fromkeys(ids, "sent")
        posts = graph.posts
        again = capi(send_env(home, graph.url), "send", "--file", str(tmp_path / "orders.csv"), "--json")
        assert graph.posts == posts, "the next plain run sent the events again"
        good = capi(send_env(home, graph.url), "send", "--file", str(tmp_path / "orders.csv"), "--resend", "--json")
    assert bad.returncode == 3
    assert json.loads(bad.stdout)["sent"] == 0
    assert "sent again" not in bad.stderr
    assert json.loads(again.stdout)["skipped"] == 3 and again.returncode == 0
    assert good.returncode == 0 and json.loads(good.stdout)["sent"] == 3
    assert "--resend: 3 events the ledger records as sent were sent again" in good.stderr
    assert all(graph.received[("Purchase", event_id)] == 2 for event_id in ids)


def test_fatal_error_is_reported_once_with_its_code(tmp_path: Path) -> None:
    write_events_csv(tmp_path / "orders.csv", 20)
    with GraphStandin(token=TOKEN, datasets={DATASET}) as graph:
        done = capi(send_env(tmp_path / "home", graph.url, token="EAAG-revoked"), "send",
                    "--file", str(tmp_path / "orders.csv"), "--batch-size", "1", "--concurrency", "4")
    assert done.returncode == 3
    mentions = [line for line in done.stderr.splitlines() if "190" in line]
    assert len(mentions) == 1, done.stderr
    assert mentions[0].startswith("capi: error: Graph API: code 190:") and "None" not in done.stderr


def test_many_rejected_events_end_with_n_more(tmp_path: Path) -> None:
    ids = write_events_csv(tmp_path / "orders.csv", 30)
    with GraphStandin(token=TOKEN, datasets={DATASET}) as graph:
        graph.poison.update(ids[5:])  # 25 refused, each on its own, after 5 accepted
        done = capi(send_env(tmp_path / "home", graph.url), "send", "--file", str(tmp_path / "orders.csv"),
                    "--batch-size", "1", "--concurrency", "1")
    assert done.returncode == 1, done.stderr
    rejected = [line for line in done.stderr.splitlines() if ": rejected: " in line]
    assert len(rejected) == 20
    assert "code 100/2804019: " in rejected[0] and "None" not in done.stderr
    assert "... 5 more rejected events (`capi ledger list --status rejected`)" in done.stderr


def test_resend_to_an_unreachable_graph_leaves_sent_records_sent(tmp_path: Path) -> None:
    ids = write_events_csv(tmp_path / "orders.csv", 4)
    home = tmp_path / "home"
    with GraphStandin(token=TOKEN, datasets={DATASET}) as graph:
        assert capi(send_env(home, graph.url), "send", "--file", str(tmp_path / "orders.csv")).returncode == 0
        closed = graph.url  # the stand-in stops below: its port refuses connections
    env = send_env(home, closed)
    assert capi(env, "config", "set", "max_retries", "0").returncode == 0
    done = capi(env, "send", "--file", str(tmp_path / "orders.csv"), "--resend", "--json")
    assert done.returncode == 4, done.stderr
    summary = json.loads(done.stdout)
    assert summary["sent"] == 0 and summary["failed"] == 4
    assert "sent again" not in done.stderr
    assert ledger_states(home) == dict.fromkeys(ids, "sent")
