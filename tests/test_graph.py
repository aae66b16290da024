# ruff: noqa: F811  (pytest fixtures imported from support.graph)
"""The Graph client against a real HTTP stand-in on 127.0.0.1: every kind of answer is classified."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import time

import pytest

from capi_cli.delivery.graph import (
    ERROR_CODES,
    GraphClient,
    OutcomeKind,
    classify_response,
    retry_hint,
)
from capi_cli.sandbox.server import (
    NO_BODY_503,
    RESET_AFTER,
    RESET_BEFORE,
    SLOW,
    TRANSIENT,
    WRONG_COUNT,
    Fault,
    GraphStandin,
)
from support.graph import APP_SECRET, DATASET, TOKEN, graph, make_client, payload  # noqa: F401


def events(n: int, prefix: str = "e") -> list[dict]:
    return [payload(f"{prefix}{i}") for i in range(n)]


def test_success_counts_events_and_sends_token_only_in_header(graph: GraphStandin, make_client) -> None:
    client = make_client(partner_agent="capi-cli", test_event_code="TEST123")
    outcome = client.send_events(DATASET, events(3))
    assert outcome.kind is OutcomeKind.SUCCESS
    assert outcome.events_received == 3 and outcome.fbtrace_id
    (request,) = graph.requests
    assert request.path == f"/v26.0/{DATASET}/events"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.query == {}
    assert TOKEN not in json.dumps(request.body)
    assert request.body["test_event_code"] == "TEST123"
    assert request.body["partner_agent"] == "capi-cli"
    assert "appsecret_proof" not in request.body
    assert len(graph.received) == 3


def test_appsecret_proof_is_hmac_of_token(make_client) -> None:
    with GraphStandin(token=TOKEN, datasets={DATASET}, app_secret=APP_SECRET) as standin:
        good = make_client(graph_url=standin.url, app_secret=APP_SECRET)
        assert good.send_events(DATASET, events(1)).ok
        expected = hmac.new(APP_SECRET.encode(), TOKEN.encode(), hashlib.sha256).hexdigest()
        assert standin.requests[0].body["appsecret_proof"] == expected
        bad = make_client(graph_url=standin.url, app_secret="wrong")
        outcome = bad.send_events(DATASET, events(1))
        assert outcome.kind is OutcomeKind.REFUSED and outcome.code == 100
        assert good.check_dataset(DATASET).ok


def test_wrong_token_is_fatal_and_never_echoed(make_client) -> None:
    client = make_client(token="EAAG-wrong-token-999")
    outcome = client.send_events(DATASET, events(2))
    assert outcome.kind is OutcomeKind.FATAL and outcome.code == 190 and outcome.status == 401
    assert "token" in outcome.message
    assert "EAAG-wrong-token-999" not in repr(client) + repr(outcome) + str(outcome.setup_error())


def test_unknown_dataset_is_fatal(make_client) -> None:
    outcome = make_client().send_events("999", events(1))
    assert outcome.kind is OutcomeKind.FATAL and (outcome.code, outcome.subcode) == (100, 33)


@pytest.mark.parametrize(
    ("event", "subcode"),
    [
        (payload("a", event_name="Lead"), 2804066),
        (payload("a", event_time=int(time.time()) - 8 * 86400), 2804003),
        ({**payload("a"), "user_data": {"whatsapp_business_account_id": "1"}}, 2804050),
        ({**payload("a", channel="messenger"), "user_data": {"page_id": "1"}}, 2804050),
        ({**payload("a", channel="instagram"), "user_data": {"ig_sid": "1"}}, 2804050),
        ({**payload("a"), "user_data": {**payload("a")["user_data"], "em": ["a@b.c"]}}, 2804019),
        ({**payload("a"), "user_data": {**payload("a")["user_data"], "ph": "f" * 64}}, 2804019),
        ({**payload("a"), "action_source": "website"}, 2804019),
    ],
)
def test_invalid_event_refuses_whole_batch(make_client, graph: GraphStandin, event: dict, subcode: int) -> None:
    outcome = make_client().send_events(DATASET, [*events(3), event])
    assert outcome.kind is OutcomeKind.REFUSED
    assert (outcome.code, outcome.subcode) == (100, subcode)
    assert outcome.message and "e0" not in outcome.message
    assert not graph.received


def test_instagram_accepts_either_account_id_name(make_client) -> None:
    event = payload("ig", channel="instagram")
    event["user_data"]["instagram_business_account_id"] = event["user_data"].pop("ig_account_id")
    assert make_client().send_events(DATASET, [event, payload("ig2", channel="instagram")]).ok


def test_more_than_1000_events_is_refused_by_the_standin(graph: GraphStandin) -> None:
    import httpx

    body = {"data": events(1001)}
    response = httpx.post(f"{graph.url}/v26.0/{DATASET}/events", json=body, headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 400 and response.json()["error"]["code"] == 100
    with pytest.raises(ValueError):
        GraphClient(TOKEN, graph_url=graph.url).send_events(DATASET, events(1001))


@pytest.mark.parametrize(
    ("fault", "kind", "counted"),
    [
        (Fault(TRANSIENT), OutcomeKind.RETRYABLE, False),
        (Fault("throttle", code=4), OutcomeKind.RETRYABLE, False),
        (Fault("throttle", code=17), OutcomeKind.RETRYABLE, False),
        (Fault("throttle", code=80004), OutcomeKind.RETRYABLE, False),
        (Fault(NO_BODY_503), OutcomeKind.AMBIGUOUS, False),
        (Fault(RESET_BEFORE), OutcomeKind.AMBIGUOUS, False),
        (Fault(RESET_AFTER), OutcomeKind.AMBIGUOUS, True),
        (Fault(SLOW, delay=1.0), OutcomeKind.AMBIGUOUS, True),
        (Fault(WRONG_COUNT), OutcomeKind.AMBIGUOUS, True),
    ],
)
def test_faults_are_classified(make_client, graph: GraphStandin, fault: Fault, kind: OutcomeKind,
                               counted: bool) -> None:
    graph.inject(fault, on=1)
    outcome = make_client().send_events(DATASET, events(2))
    assert outcome.kind is kind, outcome
    assert bool(graph.received) is counted
    # the client is still usable on the next request
    assert make_client().send_events(DATASET, events(2, "next")).ok


def test_throttle_retry_after_is_reported(make_client, graph: GraphStandin) -> None:
    graph.inject(Fault("throttle", code=4, retry_after=7), on=1)
    outcome = make_client().send_events(DATASET, events(1))
    assert outcome.kind is OutcomeKind.RETRYABLE and outcome.retry_after == 7 and outcome.code == 4


def test_connection_refused_is_retryable(make_client) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    outcome = make_client(graph_url=f"http://127.0.0.1:{port}").send_events(DATASET, events(1))
    assert outcome.kind is OutcomeKind.RETRYABLE


def test_check_dataset(make_client) -> None:
    client = make_client()
    check = client.check_dataset(DATASET)
    assert check.ok and check.name
    missing = client.check_dataset("42")
    assert not missing.ok and missing.error is not None and "42" in str(missing.error)
    denied = make_client(token="nope-token").check_dataset(DATASET)
    assert not denied.ok and "nope-token" not in str(denied.error)
    assert "token" in str(denied.error)


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (200, {"events_received": 2}, OutcomeKind.SUCCESS),
        (200, {"events_received": 1}, OutcomeKind.AMBIGUOUS),
        (200, {"messages": []}, OutcomeKind.AMBIGUOUS),
        (200, b"<html>", OutcomeKind.AMBIGUOUS),
        (429, None, OutcomeKind.RETRYABLE),
        (502, b"bad gateway", OutcomeKind.AMBIGUOUS),
        (500, {"error": {"code": 1, "message": "unknown"}}, OutcomeKind.RETRYABLE),
        (500, {"error": {"code": 2, "message": "service"}}, OutcomeKind.RETRYABLE),
        (500, {"error": {"code": 100, "message": "x"}}, OutcomeKind.AMBIGUOUS),
        (400, {"error": {"code": 100, "is_transient": True}}, OutcomeKind.RETRYABLE),
        (400, {"error": {"code": 613}}, OutcomeKind.RETRYABLE),
        (400, {"error": {"code": 80014}}, OutcomeKind.RETRYABLE),
        (400, {"error": {"code": 80015}}, OutcomeKind.REFUSED),
        (400, {"error": {"code": 368}}, OutcomeKind.FATAL),
        (403, {"error": {"code": 10}}, OutcomeKind.FATAL),
        (403, {"error": {"code": 200}}, OutcomeKind.FATAL),
        (403, {"error": {"code": 299}}, OutcomeKind.FATAL),
        (400, {"error": {"code": 100, "error_subcode": 2804050}}, OutcomeKind.REFUSED),
        (404, b"not found", OutcomeKind.FATAL),
        (413, b"too large", OutcomeKind.REFUSED),
    ],
)
def test_classify_response_table(status: int, body: object, kind: OutcomeKind) -> None:
    content = body if isinstance(body, bytes) else (b"" if body is None else json.dumps(body).encode())
    assert classify_response(status, {}, content, 2).kind is kind


def test_codes_live_in_one_table() -> None:
    assert ERROR_CODES[190][0] == "fatal" and ERROR_CODES[4][0] == "retry"
    assert all(ERROR_CODES[c][0] == "retry" for c in range(80000, 80015))


def test_retry_hint_from_usage_headers() -> None:
    buc = json.dumps({"123": [{"type": "ads_management", "call_count": 100, "estimated_time_to_regain_access": 2}]})
    assert retry_hint({"x-business-use-case-usage": buc}) == 120.0
    assert retry_hint({"x-app-usage": json.dumps({"call_count": 100, "total_time": 3})}) == 60.0
    assert retry_hint({"x-app-usage": json.dumps({"call_count": 40})}) is None
    assert retry_hint({"retry-after": "3"}) == 3.0
    assert retry_hint({"retry-after": "garbage"}) is None
