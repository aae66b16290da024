"""Finding webhook payloads inside whatever logged them: request logs, queue jobs, exports.

A wrapper keeps the body as an object, a JSON string or a form-encoded string, often with the
request headers beside it. When the body survives as a string it is the raw body Meta signed,
so it is kept for the signature check.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from typing import Any

from capi_cli.webhooks import shapes
from capi_cli.webhooks.model import Delivery, Document, Unreadable
from capi_cli.webhooks.providers import unwrap_provider
from capi_cli.webhooks.reader import form_fields, looks_like_form

# Where loggers put the body, most faithful first: a raw string beats a re-serialized object.
# (`content`: webhook.site exports; `log.entries[].request.postData.text`: HAR; `body_params`: form logs; `data`/`payload`: queues.)
BODY_KEYS = (
    "raw_body",
    "rawBody",
    "raw",
    "body",
    "content",
    "body_params",
    "bodyParams",
    "postData",
    "text",
    "payload",
    "json",
    "form",
    "params",
    "data",
    "request",
    "requests",
    "records",
    "items",
    "events",
    "webhook",
    "log",
    "entries",
    "Message",  # an SNS notification: the published message as a JSON string
    "detail",  # an EventBridge event
)
# Where loggers and relays put the time a delivery arrived, most specific first: the delivery's
# time when the payload has none (Twilio, edna). `requestContext`: API Gateway; `Timestamp`: SNS.
RECEIVED_KEYS = (
    "received_at",
    "receivedAt",
    "received",
    "message_timestamp",
    "created_at",
    "createdAt",
    "createTime",
    "timestamp",
    "Timestamp",
    "time",
    "@timestamp",
    "date",
)
HEADER_KEYS = ("headers", "request_headers", "requestHeaders", "Headers", "http_headers")
SIGNATURE_HEADER = "x-hub-signature-256"

_MAX_DEPTH = 12


class _BrokenBody:
    """A logged body that starts like a JSON object but does not parse: a delivery cut short."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def deliveries(doc: Document) -> Iterator[Delivery | Unreadable]:
    """Every webhook payload inside one document (none when it is not a webhook dump); a body
    that is broken JSON comes as an Unreadable, so a truncated delivery is not skipped silently."""
    for found in _walk(doc.value, None, None, (), 0):
        if isinstance(found, _BrokenBody):
            yield Unreadable(doc.source, doc.line, found.reason)
            continue
        payload, raw, signature, wrappers = found
        yield Delivery(payload, doc.source, doc.line, raw, signature, wrappers or None)


_Found = tuple[dict[str, Any], bytes | None, str | None, tuple[dict[str, Any], ...]]


def _walk(
    value: Any, raw: bytes | None, signature: str | None, wrappers: tuple[dict[str, Any], ...], depth: int
) -> Iterator[_Found | _BrokenBody]:
    if depth > _MAX_DEPTH:
        return
    if isinstance(value, str):
        parsed = _parse_body(value)
        if parsed is not None:
            yield from _walk(parsed, value.encode("utf-8", "surrogatepass"), signature, wrappers, depth + 1)
        elif value.lstrip().startswith("{"):
            yield _BrokenBody(_broken_reason(value))
        return
    if isinstance(value, list):
        for item in value:
            yield from _walk(item, None, signature, wrappers, depth + 1)
        return
    if not isinstance(value, dict):
        return
    if shapes.shape_of(value) is not None:
        yield value, raw, signature, wrappers
        return
    # Kept (not read) so the delivery's time can be looked up only if the payload has none.
    wrappers = (value, *wrappers)
    inner = unwrap_provider(value)
    if inner is not None:
        # A provider re-shaped Meta's payload: its raw body is not what Meta signed.
        yield inner, None, None, wrappers
        return
    named = [v for v in value.values() if type(v) is dict and "object" in v] if len(value) > 1 else ()
    named = [v for v in named if shapes.shape_of(v)]
    if len(named) >= 2:
        # A file of named example payloads (`{"text": {...}, "image": {...}}`, full envelopes with
        # `object`): each is a delivery.
        for payload in named:
            yield payload, None, None, wrappers
        return
    signature = _signature_header(value) or signature
    base64_body = value.get("isBase64Encoded") is True
    for key in BODY_KEYS:
        if key not in value:
            continue
        body = value[key]
        if base64_body and isinstance(body, str):
            body = _from_base64(body)
        found = list(_walk(body, None, signature, wrappers, depth + 1))
        if found:
            yield from found
            return


def received_time(wrappers: tuple[dict[str, Any], ...] | None) -> str | None:
    """The time the innermost wrapper that logged one says the delivery arrived (ISO Z)."""
    for wrapper in wrappers or ():
        for key in RECEIVED_KEYS:
            found = shapes.logged_time(wrapper.get(key))
            if found:
                return found
        context = shapes.as_dict(wrapper.get("requestContext"))
        for key in ("timeEpoch", "requestTimeEpoch", "requestTime"):
            found = shapes.logged_time(context.get(key))
            if found:
                return found
        for key in HEADER_KEYS:
            found = shapes.logged_time(_header(wrapper.get(key), "date"))
            if found:
                return found
    return None


def _parse_body(body: str) -> Any:
    """A body string as JSON or form fields; None when it is neither."""
    stripped = body.strip()
    if not stripped:
        return None
    if stripped[0] in '{["':
        try:
            return json.loads(stripped)
        except (ValueError, RecursionError):
            return None
    if looks_like_form(stripped):
        try:
            return form_fields(stripped)
        except ValueError:  # %-escapes that are not UTF-8
            return None
    return None


def _broken_reason(body: str) -> str:
    try:
        json.loads(body)
    except json.JSONDecodeError as exc:
        if exc.pos >= len(body.rstrip()) or exc.msg.startswith("Unterminated string"):
            return "logged body is truncated JSON: the delivery was cut short"
        return f"logged body is not valid JSON: {exc.msg} (column {exc.colno})"
    except (ValueError, RecursionError):
        pass
    return "logged body is not valid JSON"


def _from_base64(body: str) -> str | None:
    try:
        return base64.b64decode(body, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return None


def _signature_header(wrapper: dict[str, Any]) -> str | None:
    for key in HEADER_KEYS:
        found = _header_value(wrapper.get(key))
        if found:
            return found
    return _header_value(wrapper)


def _header_value(headers: Any) -> str | None:
    return _header(headers, SIGNATURE_HEADER)


def _header(headers: Any, wanted: str) -> str | None:
    """A header (lowercase name) from a dict (any case, value or list of values) or a list of pairs."""
    if isinstance(headers, dict):
        for name, value in headers.items():
            if isinstance(name, str) and name.lower() == wanted:
                return _first_text(value)
    elif isinstance(headers, list):
        for pair in headers:
            if isinstance(pair, dict):
                name, value = pair.get("name", pair.get("key")), pair.get("value")
            elif isinstance(pair, list) and len(pair) == 2:
                name, value = pair
            else:
                continue
            if isinstance(name, str) and name.lower() == wanted:
                return _first_text(value)
    return None


def _first_text(value: Any) -> str | None:
    if isinstance(value, list):
        value = value[0] if value else None
    return shapes.text(value)
