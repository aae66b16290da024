"""Every answer Meta can give, classified into an Outcome; Meta's error codes as data.

Exactly-once delivery rests on telling apart three kinds of failure: Meta definitely did not
count the batch and will not (REFUSED: split it to find the bad event), Meta definitely did not
count it but may later (RETRYABLE), and nobody can know (AMBIGUOUS: never resend on our own).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from capi_cli.errors import SetupError

if TYPE_CHECKING:
    import httpx


class OutcomeKind(StrEnum):
    SUCCESS = "success"  # 2xx and events_received == batch size
    REFUSED = "refused"  # definite rejection of the whole request; nothing was counted
    RETRYABLE = "retryable"  # definitely not counted; the same request may succeed later
    FATAL = "fatal"  # setup problem (token, permission, dataset): stop the run
    AMBIGUOUS = "ambiguous"  # may or may not have been counted: never resent automatically


class ErrorAction(StrEnum):
    RETRY = "retry"
    FATAL = "fatal"
    REFUSE = "refuse"


# Meta's Graph API error codes and what a sender does about each.
# Source: shared/reference/meta-facts.md, "Errors" (Meta's error-handling and rate-limiting docs).
# A change at Meta is a one-line change here.
ERROR_CODES: dict[int, tuple[ErrorAction, str]] = {
    1: (ErrorAction.RETRY, "unknown error at Meta (temporary)"),
    2: (ErrorAction.RETRY, "service error at Meta (temporary)"),
    4: (ErrorAction.RETRY, "application request limit reached"),
    17: (ErrorAction.RETRY, "user request limit reached"),
    32: (ErrorAction.RETRY, "page request limit reached"),
    341: (ErrorAction.RETRY, "application limit reached"),
    613: (ErrorAction.RETRY, "custom rate limit reached"),
    **{code: (ErrorAction.RETRY, "business use case rate limit reached") for code in range(80000, 80015)},
    10: (ErrorAction.FATAL, "the token lacks a permission; grant the channel's events permission"),
    **{
        code: (ErrorAction.FATAL, "the token lacks a permission; grant the channel's events permission")
        for code in range(200, 300)
    },
    190: (ErrorAction.FATAL, "access token refused (invalid or expired); set a new CAPI_ACCESS_TOKEN"),
    368: (ErrorAction.FATAL, "temporarily blocked by Meta for policy reasons; check Business Support"),
    100: (ErrorAction.REFUSE, "invalid parameter"),
}

# (code, subcode) pairs whose meaning differs from their code's. Same source.
ERROR_SUBCODES: dict[tuple[int, int], tuple[ErrorAction, str]] = {
    (100, 33): (
        ErrorAction.FATAL,
        "the dataset does not exist or the token cannot access it; check CAPI_DATASET_ID and permissions",
    ),
}

# Subcodes of code 100 seen in integrations (Meta publishes no list); used to explain a refusal.
REFUSAL_SUBCODES: dict[int, str] = {
    2804003: "event older than 7 days",
    2804019: "invalid parameter value (e.g. click id or hashed field)",
    2804050: "not enough customer information (messaging ids missing)",
    2804066: "event name not allowed for business messaging",
    2804081: "currency missing",
    2804131: "no Page/WhatsApp Business Account associated with the dataset",
}

# X-App-Usage reports percentages of the hourly budget; at 100 % calls are throttled for a while
# that Meta does not state, so wait this long (still subject to the caller's cap).
APP_USAGE_FULL_WAIT = 60.0


@dataclass(frozen=True)
class Outcome:
    """What one request achieved. Messages are free of secrets."""

    kind: OutcomeKind
    status: int | None = None
    events_received: int | None = None
    code: int | None = None
    subcode: int | None = None
    message: str = ""
    fbtrace_id: str | None = None
    retry_after: float | None = None  # seconds Meta asked us to wait (uncapped), if it said

    @property
    def ok(self) -> bool:
        return self.kind is OutcomeKind.SUCCESS

    def describe(self) -> str:
        parts = []
        if self.code is not None:
            parts.append(f"code {self.code}" + (f"/{self.subcode}" if self.subcode is not None else ""))
        elif self.status is not None:
            parts.append(f"HTTP {self.status}")
        if self.message:
            parts.append(self.message)
        return ": ".join(parts) if parts else self.kind.value

    def setup_error(self) -> SetupError:
        return SetupError(f"Graph API: {self.describe()}")


@dataclass(frozen=True)
class DatasetCheck:
    """Result of `check_dataset`: ok, or the SetupError that says what to fix."""

    dataset_id: str
    ok: bool
    name: str | None = None
    error: SetupError | None = None


# -- classification (pure functions, tested directly and through the stand-in) ----------------------


def _graph_error(body: Any) -> Mapping[str, Any] | None:
    if isinstance(body, Mapping) and isinstance(body.get("error"), Mapping):
        return body["error"]
    return None


def _as_int(value: Any) -> int | None:
    try:
        return int(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None


def retry_hint(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait according to Retry-After and Meta's usage headers (None: no advice)."""
    waits: list[float] = []
    retry_after = headers.get("retry-after")
    if retry_after:
        text = retry_after.strip()
        try:
            waits.append(max(0.0, float(text)))
        except ValueError:
            try:
                when = parsedate_to_datetime(text).timestamp()
                waits.append(max(0.0, when - (time.time() if now is None else now)))
            except (TypeError, ValueError, IndexError):
                pass
    buc = headers.get("x-business-use-case-usage")
    if buc:
        try:
            usage = json.loads(buc)
            for entries in usage.values() if isinstance(usage, dict) else ():
                for entry in entries if isinstance(entries, list) else [entries]:
                    minutes = (
                        entry.get("estimated_time_to_regain_access") if isinstance(entry, dict) else None
                    )
                    if isinstance(minutes, int | float) and minutes > 0:
                        waits.append(float(minutes) * 60.0)
        except (ValueError, AttributeError):
            pass
    for header in ("x-app-usage", "x-ad-account-usage"):
        raw = headers.get(header)
        if not raw:
            continue
        try:
            usage = json.loads(raw)
        except ValueError:
            continue
        if isinstance(usage, dict):
            percents = [v for v in usage.values() if isinstance(v, int | float)]
            if percents and max(percents) >= 100:
                waits.append(APP_USAGE_FULL_WAIT)
    return max(waits) if waits else None


def classify_response(
    status: int,
    headers: Mapping[str, str],
    content: bytes,
    expected: int | None,
) -> Outcome:
    """Classify an HTTP answer to a POST of `expected` events (None: not an events request)."""
    try:
        body: Any = json.loads(content) if content else None
    except (ValueError, UnicodeDecodeError):
        body = None
    hint = retry_hint(headers)
    fbtrace = body.get("fbtrace_id") if isinstance(body, dict) else None

    if 200 <= status < 300:
        if not isinstance(body, dict):
            return Outcome(OutcomeKind.AMBIGUOUS, status, message="unreadable success answer")
        received = _as_int(body.get("events_received"))
        if expected is not None and received != expected:
            # Meta counted something, but not what we sent: resending could double-count.
            return Outcome(
                OutcomeKind.AMBIGUOUS,
                status,
                events_received=received,
                fbtrace_id=fbtrace,
                message=f"Meta acknowledged {received} of {expected} events",
            )
        return Outcome(OutcomeKind.SUCCESS, status, events_received=received, fbtrace_id=fbtrace)

    error = _graph_error(body)
    if error is None:
        if status == 429:
            return Outcome(OutcomeKind.RETRYABLE, status, message="too many requests", retry_after=hint)
        if status == 408:
            return Outcome(OutcomeKind.RETRYABLE, status, message="request timeout at the server")
        if status >= 500:
            return Outcome(OutcomeKind.AMBIGUOUS, status, message=f"HTTP {status} without a Graph error")
        if status in (401, 403, 404, 405) or 300 <= status < 400:
            # Not Meta's Graph answer about our events: a wrong graph_url, proxy or version.
            return Outcome(
                OutcomeKind.FATAL,
                status,
                message=f"HTTP {status} without a Graph error; check graph_url and api_version",
            )
        if 400 <= status < 500:
            return Outcome(OutcomeKind.REFUSED, status, message=f"HTTP {status} without a Graph error")
        return Outcome(OutcomeKind.AMBIGUOUS, status, message=f"unexpected HTTP {status}")

    code = _as_int(error.get("code"))
    subcode = _as_int(error.get("error_subcode"))
    meta_message = str(error.get("error_user_msg") or error.get("message") or "").strip()
    fbtrace = error.get("fbtrace_id") or fbtrace
    rule = ERROR_SUBCODES.get((code, subcode)) if code is not None and subcode is not None else None
    if rule is None and code is not None:
        rule = ERROR_CODES.get(code)
    action = rule[0] if rule else None
    explanation = rule[1] if rule else ""

    def outcome(kind: OutcomeKind, message: str) -> Outcome:
        return Outcome(
            kind, status, code=code, subcode=subcode, message=message, fbtrace_id=fbtrace, retry_after=hint
        )

    if action is ErrorAction.FATAL:
        return outcome(OutcomeKind.FATAL, f"{explanation} ({meta_message})" if meta_message else explanation)
    if action is ErrorAction.RETRY or error.get("is_transient") is True or status == 429:
        return outcome(OutcomeKind.RETRYABLE, meta_message or explanation)
    if status >= 500:
        return outcome(OutcomeKind.AMBIGUOUS, meta_message or f"HTTP {status}")
    if subcode is not None and subcode in REFUSAL_SUBCODES and not meta_message:
        meta_message = REFUSAL_SUBCODES[subcode]
    return outcome(OutcomeKind.REFUSED, meta_message or explanation or f"HTTP {status}")


def classify_exception(exc: httpx.HTTPError) -> Outcome:
    """A request that got no answer: did it leave (ambiguous) or not (retryable)?"""
    import httpx

    name = type(exc).__name__
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout | httpx.ProxyError):
        return Outcome(OutcomeKind.RETRYABLE, message=f"request did not leave ({name})")
    if isinstance(exc, httpx.WriteError | httpx.WriteTimeout):
        # The body was not fully written, so the server cannot hold a complete request to act on.
        return Outcome(OutcomeKind.RETRYABLE, message=f"request not fully sent ({name})")
    if isinstance(exc, httpx.UnsupportedProtocol | httpx.InvalidURL):
        return Outcome(OutcomeKind.FATAL, message="invalid Graph API URL; check graph_url")
    # Read timeout, reset or disconnection after the request was sent: Meta may have counted it.
    return Outcome(OutcomeKind.AMBIGUOUS, message=f"no answer after the request was sent ({name})")
