"""`capi sandbox` (SPEC §11) run as a user runs it: a process on 127.0.0.1 that capi sends to."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx

from support.sandbox_process import running_sandbox
from support.sending import DATASET, TOKEN, send_env, write_events_csv

CAPI = [sys.executable, "-m", "capi_cli"]


def test_send_through_the_sandbox_logs_each_request_and_writes_accepted_events(tmp_path: Path) -> None:
    ids = write_events_csv(tmp_path / "orders.csv", 5)
    log = tmp_path / "sandbox.log"
    accepted = tmp_path / "accepted.ndjson"
    with running_sandbox(["--dataset", DATASET, "--token", TOKEN, "-o", str(accepted),
                          "--fail", "throttle@2"], log=log) as url:
        env = send_env(tmp_path / "home", url)
        done = subprocess.run([*CAPI, "send", "--file", str(tmp_path / "orders.csv"), "--batch-size", "2", "--json"],
                              env=env, capture_output=True, text=True, timeout=120)
        refused = subprocess.run([*CAPI, "send", "--file", str(tmp_path / "orders.csv")],
                                 env={**send_env(tmp_path / "other", url, token="EAAG-wrong")},
                                 capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["sent"] == 5
    lines = log.read_text().splitlines()
    requests = [line for line in lines if line.startswith("POST ")]
    # 3 batches, the second throttled once and retried: 4 requests, one line each.
    assert len(requests) == 5, lines  # + the refused token's request
    assert sum("-> 200 events_received" in line for line in requests) == 3
    assert any("error code 4" in line and "[fault throttle]" in line for line in requests)
    assert any("error code 190" in line for line in requests)
    assert TOKEN not in log.read_text()
    assert sorted(json.loads(line)["event_id"] for line in accepted.read_text().splitlines()) == ids
    assert refused.returncode == 3 and "190" in refused.stderr


def test_dataset_edge_creates_once_and_the_new_dataset_takes_events(tmp_path: Path) -> None:
    with running_sandbox() as url:
        first = httpx.post(f"{url}/v26.0/104996122399160/dataset", headers={"Authorization": "Bearer any"})
        again = httpx.post(f"{url}/v26.0/104996122399160/dataset", headers={"Authorization": "Bearer any"})
        other = httpx.post(f"{url}/v26.0/109876543210987/dataset", headers={"Authorization": "Bearer any"})
        read = httpx.get(f"{url}/v26.0/{first.json()['id']}", headers={"Authorization": "Bearer any"})
        anonymous = httpx.post(f"{url}/v26.0/104996122399160/dataset")
    assert first.status_code == 200 and first.json()["id"].isdigit()
    assert again.json() == first.json()
    assert other.json()["id"] != first.json()["id"]
    assert read.status_code == 200 and read.json()["id"] == first.json()["id"]
    assert anonymous.status_code == 401 and anonymous.json()["error"]["code"] == 190


def test_bad_options_are_usage_errors(tmp_path: Path) -> None:
    done = subprocess.run([*CAPI, "sandbox", "--port", "0", "--fail", "meltdown"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and done.stderr.startswith("capi: error: --fail unknown fault kind 'meltdown'")
    assert "Traceback" not in done.stderr


def test_quiet_sandbox_prints_only_its_url(tmp_path: Path) -> None:
    write_events_csv(tmp_path / "orders.csv", 2)
    log = tmp_path / "sandbox.log"
    with running_sandbox(["-q"], log=log) as url:
        env = send_env(tmp_path / "home", url)
        done = subprocess.run([*CAPI, "send", "--file", str(tmp_path / "orders.csv")], env=env,
                              capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert log.read_text() == ""


def test_a_long_running_sandbox_keeps_counts_not_requests() -> None:
    """`capi sandbox` keeps no request bodies (GraphStandin(keep_requests=False)): a backfill of
    hundreds of thousands of events would otherwise stay in its memory, each answer slower than the
    last. What it was sent is still counted, so duplicates still show."""
    from capi_cli.sandbox import GraphStandin

    event = {"event_name": "Purchase", "event_id": "o1", "action_source": "business_messaging",
             "messaging_channel": "whatsapp", "user_data": {"ctwa_clid": "c", "whatsapp_business_account_id": "1"}}
    with GraphStandin(token=TOKEN, datasets={DATASET}, keep_requests=False) as standin:
        for _ in range(2):
            event["event_time"] = int(standin.now())
            answer = httpx.post(f"{standin.url}/v26.0/{DATASET}/events", json={"data": [event]},
                                headers={"Authorization": f"Bearer {TOKEN}"})
            assert answer.status_code == 200, answer.text
        assert standin.requests == [] and standin.posts == 2
        assert standin.duplicates() == {("Purchase", "o1"): 2}
