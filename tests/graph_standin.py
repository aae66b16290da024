"""A local stand-in for Meta's Graph API (Conversions API for business messaging), on 127.0.0.1.

It behaves as Meta documents (shared/reference/meta-facts.md): Bearer token, dataset ids, at most
1000 events, whole-batch refusal with code 100 and a 2804xxx subcode that never names the bad
event, rate-limit and transient errors, and faults a real network produces (resets before and
after processing, slow answers, 5xx without body). It records every accepted event so tests can
assert that nothing was counted twice.

As a library (tests):   with GraphStandin(token="t", datasets={"123"}) as graph: graph.url ...
As a process (bench):   python tests/graph_standin.py --port 0 --latency 0.3   (prints its URL)
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import re
import socket
import struct
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

# Meta's rules for business-messaging events (meta-facts.md, "Conversions API, business messaging").
EVENT_NAMES = frozenset(
    {
        "Purchase",
        "LeadSubmitted",
        "InitiateCheckout",
        "AddToCart",
        "ViewContent",
        "OrderCreated",
        "OrderShipped",
        "OrderDelivered",
        "OrderCanceled",
        "OrderReturned",
        "CartAbandoned",
        "QualifiedLead",
        "RatingProvided",
        "ReviewProvided",
    }
)
HASHED_FIELDS = ("em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country", "external_id")
MAX_AGE_SECONDS = 7 * 24 * 3600
MAX_EVENTS = 1000
_HEX64 = re.compile(r"[0-9a-f]{64}")

# Fault kinds understood by the stand-in.
TRANSIENT = "transient"  # HTTP 500 with a Graph error {code 2, is_transient: true}; nothing counted
THROTTLE = "throttle"  # HTTP 400 with code 4/17/80004 and Retry-After; nothing counted
NO_BODY_503 = "503"  # HTTP 503 with an empty body; nothing counted (the client cannot know that)
RESET_BEFORE = "reset_before"  # request read, connection reset, nothing counted
RESET_AFTER = "reset_after"  # events counted, then the connection is reset without an answer
SLOW = "slow"  # events counted, answer after `delay` seconds (longer than the client timeout)
WRONG_COUNT = "wrong_count"  # events counted, 200 with events_received off by one
FAULT_KINDS = (TRANSIENT, THROTTLE, NO_BODY_503, RESET_BEFORE, RESET_AFTER, SLOW, WRONG_COUNT)


@dataclass(frozen=True)
class Fault:
    kind: str
    code: int = 4  # for THROTTLE: 4, 17, 80004 ...
    retry_after: float | None = 0.0
    delay: float = 1.0  # for SLOW

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}")


@dataclass
class RequestRecord:
    number: int  # 1-based, counting POSTs to /events only (0 for other requests)
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: Any
    n_events: int
    status: int | None = None
    fault: str | None = None
    error_code: int | None = None
    error_subcode: int | None = None


FaultRule = Callable[[RequestRecord], "Fault | None"]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like graph.facebook.com
    server: _Server
    timeout = 30

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without this, Nagle + delayed ACK add ~40 ms.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:
        self.server.standin._handle(self, "GET")

    def do_POST(self) -> None:
        self.server.standin._handle(self, "POST")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    standin: GraphStandin


class _Reset(Exception):
    """Abort the connection without an answer."""


class GraphStandin:
    def __init__(
        self,
        *,
        token: str = "test-token",
        datasets: Iterable[str] = ("1234567890",),
        app_secret: str | None = None,
        latency: float = 0.0,
        port: int = 0,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.token = token
        self.datasets = set(datasets)
        self.app_secret = app_secret
        self.latency = latency
        self.now = now
        self.poison: set[str] = set()  # event ids whose presence makes Meta refuse the batch
        self.poison_subcode = 2804019
        self.faults: dict[int, Fault] = {}
        self.fault_rules: list[FaultRule] = []
        self.received: Counter[tuple[str, str]] = Counter()
        self.requests: list[RequestRecord] = []
        self.max_concurrent = 0
        self._concurrent = 0
        self._posts = 0
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", port), _Handler)
        self._server.standin = self
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        host = host.decode() if isinstance(host, bytes) else host
        return f"http://{host}:{port}"

    def start(self) -> GraphStandin:
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.daemon = True
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> GraphStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- test controls --------------------------------------------------------------------------

    def inject(self, fault: Fault | str, on: int | Iterable[int] | FaultRule) -> None:
        """Apply `fault` to the POSTs numbered `on` (1-based) or to those a predicate picks."""
        if isinstance(fault, str):
            fault = Fault(fault)
        if callable(on):
            rule = on
            self.fault_rules.append(lambda record: fault if rule(record) else None)
            return
        for number in [on] if isinstance(on, int) else on:
            self.faults[number] = fault

    @property
    def posts(self) -> int:
        return self._posts

    def duplicates(self) -> dict[tuple[str, str], int]:
        return {key: n for key, n in self.received.items() if n > 1}

    # -- request handling -----------------------------------------------------------------------

    def _handle(self, handler: _Handler, method: str) -> None:
        parts = urlsplit(handler.path)
        length = int(handler.headers.get("Content-Length") or 0)
        raw = handler.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in handler.headers.items()}
        record = RequestRecord(0, method, parts.path, parse_qs(parts.query), headers, None, 0)
        segments = [s for s in parts.path.split("/") if s]
        is_events = method == "POST" and len(segments) == 3 and segments[2] == "events"
        with self._lock:
            if is_events:
                self._posts += 1
                record.number = self._posts
                self._concurrent += 1
                self.max_concurrent = max(self.max_concurrent, self._concurrent)
            self.requests.append(record)
        started = time.monotonic()
        try:
            try:
                status, body, extra = self._answer(record, segments, raw, is_events)
            finally:
                # The answer (or the reset) comes `latency` after the request, its processing included.
                if self.latency:
                    time.sleep(max(0.0, self.latency - (time.monotonic() - started)))
            record.status = status
            self._write(handler, status, body, extra)
        except _Reset:
            _reset(handler)
        except (BrokenPipeError, ConnectionResetError):
            handler.close_connection = True
        finally:
            if is_events:
                with self._lock:
                    self._concurrent -= 1

    def _answer(
        self, record: RequestRecord, segments: list[str], raw: bytes, is_events: bool
    ) -> tuple[int, Any, dict[str, str]]:
        try:
            if record.headers.get("content-type", "").startswith("application/json"):
                record.body = json.loads(raw) if raw else {}
            else:
                record.body = {k: v[0] for k, v in parse_qs(raw.decode()).items()}
        except ValueError:
            return self._error(record, 400, 100, None, "Invalid JSON body")
        params = {k: v[0] for k, v in record.query.items()}
        if isinstance(record.body, dict):
            params.update({k: v for k, v in record.body.items() if k != "data"})

        auth = record.headers.get("authorization", "")
        token = auth[7:] if auth.startswith("Bearer ") else params.get("access_token")
        if token != self.token:
            return self._error(
                record, 401, 190, None, "Invalid OAuth access token - Cannot parse access token", "OAuthException"
            )
        if self.app_secret:
            expected = hmac.new(self.app_secret.encode(), self.token.encode(), hashlib.sha256).hexdigest()
            if params.get("appsecret_proof") != expected:
                return self._error(
                    record, 400, 100, None, "Invalid appsecret_proof provided in the API argument",
                    "GraphMethodException",
                )
        if not segments or segments[1:2] == [] or segments[1] not in self.datasets:
            return self._error(
                record, 400, 100, 33,
                f"Unsupported {record.method.lower()} request. Object with ID '{segments[1] if len(segments) > 1 else ''}' "
                "does not exist, cannot be loaded due to missing permissions, or does not support this operation",
                "GraphMethodException",
            )
        if not is_events:
            if record.method == "GET" and len(segments) == 2:
                return 200, {"id": segments[1], "name": f"Dataset {segments[1]}"}, {}
            return self._error(record, 400, 100, None, "Unsupported request", "GraphMethodException")

        data = record.body.get("data") if isinstance(record.body, dict) else None
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except ValueError:
                data = None
        if not isinstance(data, list):
            return self._error(record, 400, 100, None, "(#100) param data must be an array")
        record.n_events = len(data)
        if len(data) > MAX_EVENTS:
            return self._error(record, 400, 100, None, f"(#100) data must have at most {MAX_EVENTS} elements")

        fault = self.faults.get(record.number)
        for rule in self.fault_rules:
            fault = fault or rule(record)
        record.fault = fault.kind if fault else None
        if fault is not None and fault.kind in (TRANSIENT, THROTTLE, NO_BODY_503, RESET_BEFORE):
            return self._fault_before(record, fault)

        refusal = self._validate(data)
        if refusal is not None:
            subcode, title, message = refusal
            return self._error(record, 400, 100, subcode, "Invalid parameter", "OAuthException", title, message)

        with self._lock:
            for event in data:
                self.received[(event["event_name"], str(event.get("event_id")))] += 1
        n = len(data)
        if fault is not None:
            if fault.kind == RESET_AFTER:
                raise _Reset
            if fault.kind == SLOW:
                time.sleep(fault.delay)
            if fault.kind == WRONG_COUNT:
                n -= 1
        return 200, {"events_received": n, "messages": [], "fbtrace_id": _trace()}, {}

    def _fault_before(self, record: RequestRecord, fault: Fault) -> tuple[int, Any, dict[str, str]]:
        if fault.kind == RESET_BEFORE:
            raise _Reset
        if fault.kind == NO_BODY_503:
            return 503, None, {}
        if fault.kind == TRANSIENT:
            return 500, _error_body(2, None, "An unexpected error has occurred. Please retry your request later.",
                                    "OAuthException", transient=True), {}
        extra: dict[str, str] = {}
        if fault.retry_after is not None:
            extra["Retry-After"] = f"{fault.retry_after:g}"
        record.error_code = fault.code
        return 400, _error_body(fault.code, None, "(#4) Application request limit reached", "OAuthException",
                                transient=True), extra

    def _validate(self, data: list[Any]) -> tuple[int, str, str] | None:
        """Meta refuses the whole batch for one bad event, naming none (meta-facts.md)."""
        now = self.now()
        for event in data:
            if not isinstance(event, dict):
                return 2804019, "Invalid Parameter", "Each event must be an object."
            if str(event.get("event_id")) in self.poison:
                return self.poison_subcode, "Invalid Parameter", "The parameter value is not valid."
            if event.get("event_name") not in EVENT_NAMES:
                return (2804066, "Event Name Not Allowed",
                        "This event name is not supported for business messaging.")
            event_time = event.get("event_time")
            if not isinstance(event_time, int):
                return 2804019, "Invalid Parameter", "event_time must be a Unix timestamp in seconds."
            if event_time < now - MAX_AGE_SECONDS:
                return (2804003, "Event Timestamp Too Old",
                        "The timestamp for this event is too far in the past. Events need to be sent "
                        "within 7 days of when they occurred.")
            if event.get("action_source") != "business_messaging":
                return 2804019, "Invalid Parameter", "action_source must be business_messaging."
            user = event.get("user_data")
            if not isinstance(user, dict):
                return 2804050, "Not Enough Customer Information", "user_data is required."
            channel = event.get("messaging_channel")
            if channel == "whatsapp":
                ok = bool(user.get("ctwa_clid")) and bool(user.get("whatsapp_business_account_id"))
            elif channel == "messenger":
                ok = bool(user.get("page_id")) and bool(user.get("page_scoped_user_id"))
            elif channel == "instagram":
                ok = bool(user.get("ig_sid")) and bool(
                    user.get("ig_account_id") or user.get("instagram_business_account_id")
                )
            else:
                return 2804019, "Invalid Parameter", "messaging_channel is not valid."
            if not ok:
                return (2804050, "Not Enough Customer Information",
                        "The event does not have enough customer information to be attributed.")
            for name in HASHED_FIELDS:
                if name in user:
                    values = user[name]
                    if not isinstance(values, list) or not all(
                        isinstance(v, str) and _HEX64.fullmatch(v) for v in values
                    ):
                        return 2804019, "Invalid Parameter", f"The value of {name} must be SHA-256 hashed."
        return None

    def _error(
        self,
        record: RequestRecord,
        status: int,
        code: int,
        subcode: int | None,
        message: str,
        error_type: str = "OAuthException",
        title: str | None = None,
        user_message: str | None = None,
    ) -> tuple[int, Any, dict[str, str]]:
        record.error_code, record.error_subcode = code, subcode
        body = _error_body(code, subcode, message, error_type, title=title, user_message=user_message)
        extra = {"WWW-Authenticate": 'OAuth "Facebook Platform" "invalid_token"'} if code == 190 else {}
        return status, body, extra

    @staticmethod
    def _write(handler: _Handler, status: int, body: Any, extra: dict[str, str]) -> None:
        content = b"" if body is None else json.dumps(body).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json; charset=UTF-8")
        handler.send_header("Content-Length", str(len(content)))
        for name, value in extra.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(content)


def _error_body(
    code: int,
    subcode: int | None,
    message: str,
    error_type: str,
    *,
    transient: bool = False,
    title: str | None = None,
    user_message: str | None = None,
) -> dict[str, Any]:
    error: dict[str, Any] = {"message": message, "type": error_type, "code": code, "fbtrace_id": _trace()}
    if subcode is not None:
        error["error_subcode"] = subcode
    error["is_transient"] = transient
    if title:
        error["error_user_title"] = title
    if user_message:
        error["error_user_msg"] = user_message
    return {"error": error}


def _trace() -> str:
    return "A" + uuid.uuid4().hex[:22]


def _reset(handler: _Handler) -> None:
    """Close with RST, so the client sees the connection die without an answer."""
    handler.close_connection = True
    try:
        handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        handler.connection.close()
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Local stand-in for Meta's Graph API (Conversions API).")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--token", default="test-token")
    parser.add_argument("--dataset", action="append", default=None, help="known dataset id (repeatable)")
    parser.add_argument("--app-secret", default=None)
    parser.add_argument(
        "--fault", action="append", default=[], metavar="N:KIND",
        help=f"inject KIND ({', '.join(FAULT_KINDS)}) on the N-th events POST (repeatable)",
    )
    parser.add_argument("--poison", action="append", default=[], help="event id that makes a batch refused")
    parser.add_argument("--counts", default=None, help="on exit (SIGTERM/Ctrl-C), write received counts here")
    args = parser.parse_args(argv)
    standin = GraphStandin(
        token=args.token,
        datasets=args.dataset or ["1234567890"],
        app_secret=args.app_secret,
        latency=args.latency,
        port=args.port,
    )
    for spec in args.fault:
        number, _, kind = spec.partition(":")
        standin.inject(Fault(kind, delay=60.0), int(number))
    standin.poison.update(args.poison)
    import signal

    def _terminate(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    print(standin.url, flush=True)
    try:
        standin._server.serve_forever(poll_interval=0.05)
    except KeyboardInterrupt:
        pass
    finally:
        standin._server.server_close()
        if args.counts:
            with open(args.counts, "w", encoding="utf-8") as out:
                json.dump(
                    {"posts": standin.posts, "received": [[k[0], k[1], n] for k, n in standin.received.items()]},
                    out,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
