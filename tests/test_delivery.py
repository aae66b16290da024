# ruff: noqa: F811  (pytest fixtures imported from support.graph)
"""deliver() against the Graph stand-in and a SQLite ledger on disk: batching, concurrency,
every fault kind, isolation of refused events, and exactly-once across runs."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from capi_cli.delivery.engine import DeliveryOptions, DeliverySummary, deliver, ledger_skip
from capi_cli.delivery.graph import GraphClient
from capi_cli.errors import ExitCode
from capi_cli.ledger import Ledger
from capi_cli.sandbox.server import (
    NO_BODY_503,
    RESET_AFTER,
    RESET_BEFORE,
    SLOW,
    THROTTLE,
    TRANSIENT,
    WRONG_COUNT,
    Fault,
    GraphStandin,
)
from support.graph import APP_SECRET, DATASET, TOKEN, graph, payload  # noqa: F401

FAST = DeliveryOptions(
    batch_size=10, concurrency=3, max_retries=3, backoff_base=0.01, backoff_max=0.05, retry_after_max=0.05
)


@dataclass(frozen=True)
class Ev:
    """The BuiltEvent attributes deliver uses."""

    event_name: str
    event_id: str
    event_time: int
    payload: dict[str, Any] = field(compare=False)
    source: str | None = "orders.csv"
    line: int | None = None
    payload_hash: str | None = None


def ev(event_id: str, **kwargs: Any) -> Ev:
    body = payload(event_id, **kwargs)
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
    return Ev(body["event_name"], event_id, body["event_time"], body, line=2, payload_hash=digest)


def evs(n: int, prefix: str = "o") -> list[Ev]:
    return [ev(f"{prefix}{i}") for i in range(n)]


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger.open(tmp_path / "ledger.sqlite3") as opened:
        yield opened


def send(graph: GraphStandin, ledger: Ledger, events: Any, options: DeliveryOptions = FAST,
         token: str = TOKEN, **kwargs: Any) -> DeliverySummary:
    with GraphClient(token, graph_url=graph.url, timeout=0.5) as client:
        return deliver(iter(events), ledger=ledger, client=client, dataset_id=DATASET, options=options, **kwargs)


def states(ledger: Ledger) -> dict[str, str]:
    return {r["event_id"]: r["state"] for r in ledger.list_events(dataset_id=DATASET)}


def assert_exactly_once(graph: GraphStandin, ledger: Ledger) -> None:
    assert graph.duplicates() == {}
    received = {event_id for (_, event_id) in graph.received}
    for event_id, state in states(ledger).items():
        if state == "sent":
            assert event_id in received, event_id
        if state in ("failed", "rejected"):
            assert event_id not in received, event_id
        assert state != "in_flight"


def test_batches_flow_concurrently_within_the_limit(graph: GraphStandin, ledger: Ledger) -> None:
    graph.latency = 0.05
    summary = send(graph, ledger, evs(100))
    assert summary.to_dict() == {
        "read": 0, "invalid": 0, "attributed": 0, "unattributed": 0, "filtered": 0, "skipped": 0, "sent": 100,
        "rejected": 0, "failed": 0, "uncertain": 0, "batches": 10, "requests": 10, "dry_run": False,
    }
    assert 1 < graph.max_concurrent <= 3
    assert len(graph.received) == 100 and graph.posts == 10
    assert set(states(ledger).values()) == {"sent"}
    assert summary.exit_code is ExitCode.OK


def test_concurrency_one_sends_one_at_a_time(graph: GraphStandin, ledger: Ledger) -> None:
    graph.latency = 0.02
    send(graph, ledger, evs(30), replace(FAST, concurrency=1))
    assert graph.max_concurrent == 1 and graph.posts == 3


def test_events_are_in_flight_in_the_ledger_during_their_request(graph: GraphStandin, ledger: Ledger) -> None:
    seen: list[dict[str, int]] = []
    graph.inject(Fault(TRANSIENT), on=lambda record: bool(seen.append(ledger.stats()["total"])))
    send(graph, ledger, evs(10))
    assert seen == [{"in_flight": 10}]
    assert ledger.stats()["total"] == {"sent": 10}


def test_the_next_batch_is_claimed_while_a_request_is_out(graph: GraphStandin, ledger: Ledger) -> None:
    """A batch's ledger work (its claim, its settle) does not hold one of the --concurrency request
    slots: while one request is out, the next batch is already claimed, and still only one request
    at a time reaches Meta."""
    graph.latency = 0.05
    in_flight: list[int] = []
    graph.fault_rules.append(lambda record: in_flight.append(ledger.stats()["total"].get("in_flight", 0)))
    summary = send(graph, ledger, evs(60), replace(FAST, concurrency=1))
    assert summary.sent == 60 and graph.max_concurrent == 1
    assert max(in_flight) > 10  # more than the one batch being sent was claimed
    assert set(states(ledger).values()) == {"sent"}


def test_concurrency_one_sends_batches_in_input_order(graph: GraphStandin, ledger: Ledger,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Batches take their request turns in the order they were handed out: the first batch's slow
    claim does not let the second one go first."""
    real = ledger.begin_batch

    def slow_first(dataset_id: str, batch_id: str, events: Any) -> Any:
        if batch_id.endswith("-000001"):
            time.sleep(0.2)
        return real(dataset_id, batch_id, events)

    monkeypatch.setattr(ledger, "begin_batch", slow_first)
    send(graph, ledger, evs(30), replace(FAST, concurrency=1))
    assert [r.body["data"][0]["event_id"] for r in graph.requests if r.body] == ["o0", "o10", "o20"]


def test_reading_overlaps_sending_and_stays_bounded(graph: GraphStandin, ledger: Ledger) -> None:
    graph.latency = 0.05
    pulled = 0
    at_first_request: list[int] = []

    def source() -> Iterator[Ev]:
        nonlocal pulled
        for e in evs(200):
            pulled += 1
            yield e

    graph.inject(Fault(TRANSIENT), on=lambda record: bool(at_first_request.append(pulled)) if
                 not at_first_request else False)
    options = replace(FAST, concurrency=2)
    summary = send(graph, ledger, source(), options)
    assert summary.sent == 200
    # the first request left before the reader had gone far: (batches in progress, twice the
    # concurrency, + pending + lookup chunk) batches
    assert at_first_request[0] <= 10 * (2 * 2 + 2)


@pytest.mark.parametrize(
    ("fault", "state"),
    [
        (Fault(TRANSIENT), "sent"),
        (Fault(THROTTLE, code=4, retry_after=30), "sent"),
        (Fault(THROTTLE, code=17), "sent"),
        (Fault(THROTTLE, code=80004), "sent"),
        (Fault(NO_BODY_503), "uncertain"),
        (Fault(RESET_BEFORE), "uncertain"),
        (Fault(RESET_AFTER), "uncertain"),
        (Fault(SLOW, delay=0.8), "uncertain"),
        (Fault(WRONG_COUNT), "uncertain"),
    ],
)
def test_each_fault_kind_never_delivers_twice(graph: GraphStandin, ledger: Ledger, fault: Fault, state: str) -> None:
    graph.inject(fault, on=[2, 5])
    summary = send(graph, ledger, evs(60))
    assert_exactly_once(graph, ledger)
    final = states(ledger)
    faulted = [r.number for r in graph.requests if r.fault]
    assert faulted == [2, 5]
    if state == "sent":
        assert set(final.values()) == {"sent"} and summary.sent == 60 and summary.requests == 8
        assert summary.exit_code is ExitCode.OK
        return
    assert summary.uncertain == 20 and summary.sent == 40
    assert sorted(final.values()).count("uncertain") == 20
    assert {e.event_id for e in summary.uncertain_events} == {k for k, v in final.items() if v == "uncertain"}
    assert summary.exit_code is ExitCode.INCOMPLETE
    # a later run does not resend them on its own, and keeps reporting them (exit 4)
    posts = graph.posts
    again = send(graph, ledger, evs(60))
    assert graph.posts == posts and again.uncertain == 20 and again.skipped == 40
    assert again.earlier_uncertain == 20 and again.exit_code is ExitCode.INCOMPLETE
    if fault.kind in (NO_BODY_503, RESET_BEFORE):  # nothing was counted: a deliberate resend is safe
        resent = send(graph, ledger, evs(60), replace(FAST, resend_uncertain=True))
        assert resent.sent == 20 and resent.skipped == 40
        assert graph.duplicates() == {} and len(graph.received) == 60
        assert set(states(ledger).values()) == {"sent"}


def test_refused_events_are_isolated_and_batch_mates_delivered(graph: GraphStandin, ledger: Ledger) -> None:
    graph.poison = {"o3", "o17", "o18"}
    events = [*evs(40), ev("old", event_time=int(time.time()) - 9 * 86400), ev("lead", event_name="Lead")]
    summary = send(graph, ledger, events)
    assert summary.rejected == 5 and summary.sent == 37
    assert_exactly_once(graph, ledger)
    assert len(graph.received) == 37
    rows = {r["event_id"]: r for r in ledger.list_events(state="rejected")}
    assert set(rows) == {"o3", "o17", "o18", "old", "lead"}
    assert (rows["o3"]["error_code"], rows["o3"]["error_subcode"]) == (100, 2804019)
    assert rows["old"]["error_subcode"] == 2804003 and rows["lead"]["error_subcode"] == 2804066
    assert rows["old"]["error_message"]
    assert {(e.event_id, e.code) for e in summary.rejected_events} >= {("o3", 100), ("lead", 100)}
    assert summary.exit_code is ExitCode.DATA
    # the same file again: rejected rows unchanged are not resent
    posts = graph.posts
    again = send(graph, ledger, events)
    assert graph.posts == posts and again.skipped == 42


def test_fixed_rejected_row_is_sent_again(graph: GraphStandin, ledger: Ledger) -> None:
    send(graph, ledger, [ev("x1", event_name="Lead"), ev("x2")])
    assert states(ledger)["x1"] == "rejected"
    fixed = ev("x1", event_name="Lead")
    fixed = replace(fixed, payload={**fixed.payload, "event_name": "LeadSubmitted"}, payload_hash="changed")
    summary = send(graph, ledger, [fixed, ev("x2")])
    assert summary.sent == 1 and summary.skipped == 1
    assert ("LeadSubmitted", "x1") in graph.received


def test_retries_exhausted_become_failed_then_a_later_run_sends_them(graph: GraphStandin, ledger: Ledger) -> None:
    failing = True
    graph.inject(Fault(TRANSIENT), on=lambda record: failing)
    summary = send(graph, ledger, evs(20), replace(FAST, max_retries=2))
    assert summary.failed == 20 and summary.requests == 6 and not graph.received
    assert set(states(ledger).values()) == {"failed"}
    assert {r["attempts"] for r in ledger.list_events()} == {3}
    assert summary.exit_code is ExitCode.INCOMPLETE and len(summary.failed_events) == 20
    failing = False
    again = send(graph, ledger, evs(20))
    assert again.sent == 20 and set(states(ledger).values()) == {"sent"}
    assert_exactly_once(graph, ledger)


def test_retry_after_is_capped_and_honoured(graph: GraphStandin, ledger: Ledger) -> None:
    graph.inject(Fault(THROTTLE, code=613, retry_after=3600), on=1)
    started = time.monotonic()
    summary = send(graph, ledger, evs(10), replace(FAST, retry_after_max=0.2))
    assert summary.sent == 10 and 0.2 <= time.monotonic() - started < 3


def test_rerun_sends_nothing_new(graph: GraphStandin, ledger: Ledger) -> None:
    send(graph, ledger, evs(35))
    posts = graph.posts
    summary = send(graph, ledger, evs(35))
    assert graph.posts == posts
    assert summary.skipped == 35 and summary.sent == 0 and summary.batches == 0
    skip = ledger_skip(ledger, DATASET)
    assert skip("Purchase", "o1") and not skip("Purchase", "nope")
    assert not ledger_skip(ledger, DATASET, resend=True)("Purchase", "o1")


def test_resend_sends_sent_events_again(graph: GraphStandin, ledger: Ledger) -> None:
    send(graph, ledger, evs(5))
    summary = send(graph, ledger, evs(5), replace(FAST, resend=True))
    assert summary.sent == 5 and summary.resent == 5
    assert all(n == 2 for n in graph.received.values())


def test_same_key_twice_in_one_run_is_sent_once(graph: GraphStandin, ledger: Ledger) -> None:
    events = [*evs(15), *evs(15)]
    summary = send(graph, ledger, events, replace(FAST, resend=True, resend_uncertain=True))
    assert summary.sent == 15 and summary.skipped == 15 and summary.duplicates == 15
    assert graph.duplicates() == {}


def test_wrong_token_stops_the_run_and_is_never_shown(graph: GraphStandin, ledger: Ledger) -> None:
    bad = "EAAG-bad-token-424242"
    graph.latency = 0.02
    summary = send(graph, ledger, evs(200), replace(FAST, concurrency=2), token=bad)
    assert summary.fatal is not None and summary.exit_code is ExitCode.SETUP
    assert "190" in str(summary.fatal) and "token" in str(summary.fatal)
    assert summary.requests <= 3 and summary.delivered_events < 200  # stopped reading too
    assert not graph.received
    text = repr(summary) + str(summary.fatal) + json.dumps(list(ledger.list_events()))
    assert bad not in text
    # nothing got lost: whatever was tried is failed (retried later), the rest was never begun
    assert set(states(ledger).values()) <= {"failed"}


def test_unknown_dataset_is_fatal(graph: GraphStandin, ledger: Ledger) -> None:
    with GraphClient(TOKEN, graph_url=graph.url, timeout=0.5) as client:
        summary = deliver(evs(5), ledger=ledger, client=client, dataset_id="777", options=FAST)
    assert summary.fatal is not None and "dataset" in str(summary.fatal)


def test_request_level_refusal_trips_the_breaker(ledger: Ledger) -> None:
    with GraphStandin(token=TOKEN, datasets={DATASET}, app_secret=APP_SECRET) as standin:
        with GraphClient(TOKEN, graph_url=standin.url, app_secret="wrong-secret", timeout=0.5) as client:
            summary = deliver(evs(100), ledger=ledger, client=client, dataset_id=DATASET,
                              options=replace(FAST, refusal_breaker=4, concurrency=1))
    assert summary.fatal is not None and "setup" in str(summary.fatal)
    assert summary.rejected == 4 and summary.requests < 20


def test_stop_settles_in_flight_and_a_rerun_completes(graph: GraphStandin, ledger: Ledger) -> None:
    graph.latency = 0.1
    stop = threading.Event()
    # SIGTERM arrives while the second request is at Meta
    graph.inject(Fault(TRANSIENT), on=lambda record: record.number == 2 and stop.set() is not None)
    summary = send(graph, ledger, evs(100), stop=stop)
    assert summary.interrupted and summary.exit_code is ExitCode.INTERRUPTED
    assert 20 <= summary.sent < 100 and summary.failed == 0
    assert "in_flight" not in states(ledger).values()
    again = send(graph, ledger, evs(100))
    assert again.sent == 100 - summary.sent and len(graph.received) == 100
    assert_exactly_once(graph, ledger)


def test_ctrl_c_in_the_reader_is_an_orderly_stop(graph: GraphStandin, ledger: Ledger) -> None:
    def source() -> Iterator[Ev]:
        yield from evs(25)
        raise KeyboardInterrupt

    summary = send(graph, ledger, source())
    # batches already begun finish; one handed to a worker that had not begun it yet is not sent
    assert summary.interrupted and summary.sent in (10, 20) and summary.sent + summary.unsent == 25
    assert set(states(ledger).values()) == {"sent"}


def test_dry_run_sends_nothing_and_writes_nothing(graph: GraphStandin, ledger: Ledger) -> None:
    send(graph, ledger, evs(5))
    written: list[dict[str, Any]] = []
    summary = deliver(iter(evs(25)), ledger=ledger, client=None, dataset_id=DATASET,
                      options=replace(FAST, dry_run=True), sink=written.extend)
    assert summary.dry_run and summary.sent == 20 and summary.skipped == 5 and summary.batches == 2
    assert [e["event_id"] for e in written] == [f"o{i}" for i in range(5, 25)]
    assert graph.posts == 1 and len(list(ledger.list_events())) == 5


def test_sink_gets_exactly_what_is_sent(graph: GraphStandin, ledger: Ledger) -> None:
    written: list[dict[str, Any]] = []
    send(graph, ledger, evs(12), sink=written.extend)
    sent = [e for r in graph.requests if r.body for e in r.body["data"]]
    assert sorted(written, key=lambda e: e["event_id"]) == sorted(sent, key=lambda e: e["event_id"])


def test_progress_is_reported(graph: GraphStandin, ledger: Ledger) -> None:
    seen = []
    send(graph, ledger, evs(30), progress=seen.append)
    assert seen and seen[-1].sent == 30 and seen[-1].events == 30 and seen[-1].in_flight == 0


def test_options_are_checked() -> None:
    from capi_cli.errors import UsageError

    for bad in (replace(FAST, batch_size=1001), replace(FAST, batch_size=0), replace(FAST, concurrency=0)):
        with pytest.raises(UsageError):
            deliver([], ledger=None, client=None, dataset_id=DATASET, options=replace(bad, dry_run=True))


_CHILD = """
import json, sys
from dataclasses import dataclass
from capi_cli.delivery.engine import DeliveryOptions, deliver
from capi_cli.delivery.graph import GraphClient
from capi_cli.ledger import Ledger

url, ledger_path, events_path, token, dataset = sys.argv[1:6]

@dataclass
class Ev:
    event_name: str
    event_id: str
    event_time: int
    payload: dict
    source: str | None = None
    line: int | None = None
    payload_hash: str | None = None

events = [Ev(p["event_name"], p["event_id"], p["event_time"], p) for p in json.load(open(events_path))]
with Ledger.open(ledger_path) as ledger, ledger.send_lock(), GraphClient(token, graph_url=url, timeout=5) as client:
    ledger.recover_in_flight()
    deliver(iter(events), ledger=ledger, client=client, dataset_id=dataset,
            options=DeliveryOptions(batch_size=10, concurrency=2))
"""


def test_killed_sender_leaves_a_ledger_the_next_run_handles(graph: GraphStandin, tmp_path: Path) -> None:
    import os
    import signal
    import subprocess
    import sys

    graph.latency = 0.15
    events = evs(100)
    events_path = tmp_path / "events.json"
    events_path.write_text(json.dumps([e.payload for e in events]))
    ledger_path = tmp_path / "ledger.sqlite3"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, graph.url, str(ledger_path), str(events_path), TOKEN, DATASET], env=env
    )
    deadline = time.monotonic() + 20
    while graph.posts < 5 and time.monotonic() < deadline and child.poll() is None:
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait()
    time.sleep(0.3)  # let the stand-in finish the requests the dead process left behind
    with Ledger.open(ledger_path) as ledger:
        with ledger.send_lock():
            recovered = ledger.recover_in_flight()
            assert recovered > 0
            summary = send(graph, ledger, events)
        final = states(ledger)
        assert_exactly_once(graph, ledger)
    assert summary.uncertain == recovered and summary.sent + summary.skipped + recovered == 100
    assert set(final.values()) <= {"sent", "uncertain"}
    uncertain = {k for k, v in final.items() if v == "uncertain"}
    assert {k for k, v in final.items() if v == "sent"} <= {event_id for (_, event_id) in graph.received}
    assert len(uncertain) == recovered


def test_unreachable_graph_fails_after_retries_and_nothing_is_uncertain(ledger: Ledger) -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with GraphClient(TOKEN, graph_url=f"http://127.0.0.1:{port}", timeout=0.5) as client:
        summary = deliver(evs(15), ledger=ledger, client=client, dataset_id=DATASET,
                          options=replace(FAST, max_retries=1))
    assert summary.failed == 15 and summary.requests == 4 and summary.exit_code is ExitCode.INCOMPLETE
    assert set(states(ledger).values()) == {"failed"}
