"""A local stand-in for Meta's Graph API (Conversions API for business messaging), on 127.0.0.1.

`capi sandbox` runs it for users, and the test suite uses this same server, so what users rehearse
against is what the tests check. It behaves as Meta documents (meta_rules.py): Bearer token, dataset ids, at most
1000 events, whole-batch refusal with code 100 and a 2804xxx subcode that never names the bad
event, rate-limit and transient errors, and faults a real network produces (resets before and
after processing, slow answers, 5xx without body). It records every accepted event so tests can
assert that nothing was counted twice.

As a library (tests):   with GraphStandin(token="t", datasets={"123"}) as graph: graph.url ...
As a process (users, bench):   capi sandbox --port 0 --latency 0.3   (prints its CAPI_GRAPH_URL)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import IO, Any
from urllib.parse import parse_qs, urlsplit

from capi_cli.sandbox.faults import (  # noqa: F401 - the names tests import from here
    FAULT_KINDS,
    NO_BODY_503,
    RESET_AFTER,
    RESET_BEFORE,
    SLOW,
    THROTTLE,
    TRANSIENT,
    WRONG_COUNT,
    Fault,
    parse_fail,
)
from capi_cli.sandbox.meta_rules import MAX_EVENTS, Refusal, error_body, refusal_of, trace_id


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
        token: str | None = "test-token",
        datasets: Iterable[str] = ("1234567890",),
        app_secret: str | None = None,
        latency: float = 0.0,
        port: int = 0,
        now: Callable[[], float] = time.time,
        log: Callable[[str], None] | None = None,
        accepted: IO[str] | None = None,
        keep_requests: bool = True,
    ) -> None:
        self.token = token
        self.log = log  # one line per request (`capi sandbox` prints them on stderr)
        self.accepted = accepted  # every accepted event, one JSON document a line
        self.linked_datasets: dict[str, str] = {}  # asset id (WABA, Page, IG account) -> dataset id
        self.assets: set[str] | None = None  # assets the token may manage (None: any)
        self.datasets = set(datasets)
        self.app_secret = app_secret
        self.latency = latency
        self.now = now
        self.poison: set[str] = set()  # event ids whose presence makes Meta refuse the batch
        self.poison_subcode = 2804019
        self.faults: dict[int, Fault] = {}
        self.fault_rules: list[FaultRule] = []
        self.received: Counter[tuple[str, str]] = Counter()
        # Every request, its parsed body included, for tests to inspect. `capi sandbox` keeps none:
        # a long-running server would hold every event it was ever sent (2.7 GB for a 400,000-event
        # backfill) and its garbage collector would slow each answer down more and more.
        self.keep_requests = keep_requests
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

    def serve(self) -> None:
        """Answer requests in this thread until interrupted (`capi sandbox`)."""
        self._server.serve_forever(poll_interval=0.05)

    def close(self) -> None:
        self._server.server_close()

    def __enter__(self) -> GraphStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- test controls --------------------------------------------------------------------------

    def inject(self, fault: Fault | str, on: int | Iterable[int] | Callable[[RequestRecord], Any]) -> None:
        """Apply `fault` to the POSTs numbered `on` (1-based) or to those a predicate picks."""
        if isinstance(fault, str):
            fault = Fault(fault)
        if callable(on):
            rule = on
            self.fault_rules.append(lambda record: fault if rule(record) else None)
            return
        for number in [on] if isinstance(on, int) else on:
            self.faults[number] = fault

    def link_dataset(self, asset_id: str) -> str:
        """`POST /{asset_id}/dataset`: Meta creates the asset's dataset once and returns the same
        id after (meta-facts.md); the new dataset then takes events."""
        with self._lock:
            dataset_id = self.linked_datasets.get(asset_id)
            if dataset_id is None:
                # Dataset ids are 15-16 digit numbers; derived from the asset so runs agree.
                digest = hashlib.sha256(asset_id.encode()).hexdigest()
                dataset_id = str(800_000_000_000_000 + int(digest[:12], 16) % 10**14)
                self.linked_datasets[asset_id] = dataset_id
                self.datasets.add(dataset_id)
            return dataset_id

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
            if self.keep_requests:
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
            self._log(record, status, body)
        except _Reset:
            self._log(record, None, None)
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
        if not token or (self.token is not None and token != self.token):
            return self._error(
                record, 401, 190, None, "Invalid OAuth access token - Cannot parse access token", "OAuthException"
            )
        if self.app_secret:
            expected = hmac.new(self.app_secret.encode(), token.encode(), hashlib.sha256).hexdigest()
            if params.get("appsecret_proof") != expected:
                return self._error(
                    record, 400, 100, None, "Invalid appsecret_proof provided in the API argument",
                    "GraphMethodException",
                )
        if record.method == "POST" and len(segments) == 3 and segments[2] == "dataset":
            if self.assets is not None and segments[1] not in self.assets:
                # What Meta answers for an asset the token has no permission on (Graph API errors).
                return self._error(record, 403, 200, None, "(#200) Permissions error", "OAuthException")
            return 200, {"id": self.link_dataset(segments[1])}, {}
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

        refusal = self._poisoned(data) or refusal_of(data, self.now())
        if refusal is not None:
            subcode, title, message = refusal
            return self._error(record, 400, 100, subcode, "Invalid parameter", "OAuthException", title, message)

        with self._lock:
            for event in data:
                self.received[(event["event_name"], str(event.get("event_id")))] += 1
            if self.accepted is not None:
                self.accepted.writelines(json.dumps(event, separators=(",", ":")) + "\n" for event in data)
                self.accepted.flush()
        n = len(data)
        if fault is not None:
            if fault.kind == RESET_AFTER:
                raise _Reset
            if fault.kind == SLOW:
                time.sleep(fault.delay)
            if fault.kind == WRONG_COUNT:
                n -= 1
        return 200, {"events_received": n, "messages": [], "fbtrace_id": trace_id()}, {}

    def _fault_before(self, record: RequestRecord, fault: Fault) -> tuple[int, Any, dict[str, str]]:
        if fault.kind == RESET_BEFORE:
            raise _Reset
        if fault.kind == NO_BODY_503:
            return 503, None, {}
        if fault.kind == TRANSIENT:
            return 500, error_body(2, None, "An unexpected error has occurred. Please retry your request later.",
                                    "OAuthException", transient=True), {}
        extra: dict[str, str] = {}
        if fault.retry_after is not None:
            extra["Retry-After"] = f"{fault.retry_after:g}"
        record.error_code = fault.code
        return 400, error_body(fault.code, None, "(#4) Application request limit reached", "OAuthException",
                                transient=True), extra

    def _poisoned(self, data: list[Any]) -> Refusal | None:
        if self.poison and any(isinstance(e, dict) and str(e.get("event_id")) in self.poison for e in data):
            return self.poison_subcode, "Invalid Parameter", "The parameter value is not valid."
        return None

    def _log(self, record: RequestRecord, status: int | None, body: Any) -> None:
        if self.log is None:
            return
        if status is None:
            outcome = f"connection reset ({record.fault})"
        elif isinstance(body, dict) and isinstance(body.get("error"), dict):
            error = body["error"]
            subcode = f" subcode {error['error_subcode']}" if "error_subcode" in error else ""
            outcome = f"{status} error code {error.get('code')}{subcode}: {error.get('message')}"
        elif isinstance(body, dict) and "events_received" in body:
            outcome = f"{status} events_received {body['events_received']}"
        else:
            outcome = str(status)
        events = f" ({record.n_events} events)" if record.n_events else ""
        fault = f" [fault {record.fault}]" if record.fault and status is not None else ""
        self.log(f"{record.method} {record.path}{events} -> {outcome}{fault}")

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
        body = error_body(code, subcode, message, error_type, title=title, user_message=user_message)
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


def _reset(handler: _Handler) -> None:
    """Close with RST, so the client sees the connection die without an answer."""
    handler.close_connection = True
    try:
        handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        handler.connection.close()
    except OSError:
        pass


def add_fails(standin: GraphStandin, specs: Iterable[str]) -> None:
    for spec in specs:
        fault, number = parse_fail(spec)
        if number is None:
            standin.inject(fault, lambda record: True)
        else:
            standin.inject(fault, number)
