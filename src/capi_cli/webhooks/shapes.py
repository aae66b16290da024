"""Recognising which webhook a JSON object is, and reading its fields without trusting their types.

Dumps come from anywhere (request logs, queues, exports), so any field may be missing, null, a
number instead of a string, or a list instead of an object; readers here never raise on that.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

# `object` values of Meta's webhook envelopes (Meta webhooks reference).
WHATSAPP_OBJECT = "whatsapp_business_account"
MESSENGER_OBJECT = "page"
INSTAGRAM_OBJECT = "instagram"

# Keys that only a WhatsApp Cloud API change value (or the legacy On-Premises body) carries.
_WHATSAPP_VALUE_KEYS = (
    "messaging_product",
    "metadata",
    "contacts",
    "messages",
    "statuses",
    "automatic_events",
)
# Twilio's inbound-message form fields (Twilio Messaging webhook reference).
_TWILIO_KEYS = ("MessageSid", "SmsMessageSid", "SmsSid", "AccountSid", "WaId")
# Twilio Event Streams (`com.twilio.messaging.inbound-message.received`) spell them in camelCase.
_TWILIO_EVENT_KEYS = ("messageSid", "accountSid")

_MAX_UNIX_SECONDS = 253402300799  # 9999-12-31T23:59:59Z
_MS_THRESHOLD = 100_000_000_000  # above this a Unix time is in milliseconds (year 5138 in seconds)


def as_dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def text(value: Any) -> str | None:
    """A non-empty string (numbers accepted as ids), or None; safe to encode as UTF-8."""
    if isinstance(value, str):
        if not value:
            return None
        if not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:  # lone surrogates from a \ud800 escape
                return value.encode("utf-8", "replace").decode("utf-8")
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def digits(value: Any) -> str | None:
    """Phone digits of `905321234567`, `+90 532 123 45 67` or `whatsapp:+905321234567`."""
    raw = text(value)
    if raw is None:
        return None
    if raw.startswith("whatsapp:"):
        raw = raw[len("whatsapp:") :]
    found = "".join(c for c in raw if c.isascii() and c.isdigit())
    return found or None


def iso_timestamp(value: Any) -> str | None:
    """ISO 8601 UTC with Z from Unix seconds or milliseconds (number or digit string)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = value.strip()
        # 20 digits is far past any date; int() of a string over 4300 digits raises ValueError.
        if not value.isascii() or not value.isdigit() or len(value) > 20:
            return None
        number = int(value)
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and value == value and abs(value) < 1e20:
        number = int(value)
    else:
        return None
    if number > _MS_THRESHOLD:
        number //= 1000
    if not 0 < number <= _MAX_UNIX_SECONDS:
        return None
    return datetime.fromtimestamp(number, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ISO 8601 as loggers write it: `2026-01-05T10:00:00Z`, `...00.123+03:00`, `2026-01-05 10:00:00`.
_ISO = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?", re.IGNORECASE)
# API Gateway's `requestContext.requestTime` (REST APIs): `09/Apr/2015:12:34:56 +0000`.
_CLF = "%d/%b/%Y:%H:%M:%S %z"


def logged_time(value: Any) -> str | None:
    """ISO 8601 UTC with Z from a time a logger wrote: Unix seconds or ms, ISO 8601 (naive is UTC),
    an HTTP `Date` header (RFC 7231), API Gateway's request time. None when it is none of these."""
    found = iso_timestamp(value)
    if found or not isinstance(value, str):
        return found
    raw = value.strip()
    try:
        if _ISO.fullmatch(raw):
            parsed = datetime.fromisoformat(raw.replace("z", "Z").replace("Z", "+00:00"))
        elif "/" in raw:
            parsed = datetime.strptime(raw, _CLF)
        else:
            parsed = parsedate_to_datetime(raw)
    except (ValueError, TypeError, IndexError, OverflowError):
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    if not 1 <= parsed.year <= 9999:
        return None
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def is_whatsapp_value(d: dict[str, Any]) -> bool:
    """A change value, or the legacy On-Premises body (top-level `contacts`/`messages`)."""
    if d.get("messaging_product") == "whatsapp" or "phone_number_id" in as_dict(d.get("metadata")):
        return True
    if any(("from" in m or "from_user_id" in m) and "id" in m for m in dicts(d.get("messages"))):
        return True
    if any("wa_id" in c or "user_id" in c for c in dicts(d.get("contacts"))):
        return True
    if any("recipient_id" in s or "status" in s for s in dicts(d.get("statuses"))):
        return True
    return bool(dicts(d.get("automatic_events")))


def is_messaging_item(d: dict[str, Any]) -> bool:
    return isinstance(d.get("sender"), dict) and any(
        k in d for k in ("message", "postback", "referral", "read", "delivery", "reaction", "recipient")
    )


def is_twilio(d: dict[str, Any]) -> bool:
    if "From" in d or "WaId" in d:
        return any(k in d for k in _TWILIO_KEYS)
    return ("from" in d or "waId" in d) and any(k in d for k in _TWILIO_EVENT_KEYS)


def shape_of(d: dict[str, Any]) -> str | None:
    """`whatsapp`, `messenger`, `instagram`, `page_or_ig` (Messenger-like without `object`),
    `twilio`, `meta_other` (a Meta webhook of another product: no referral), or None when the
    object is not a webhook payload (maybe a wrapper)."""
    obj = d.get("object")
    if obj == WHATSAPP_OBJECT:
        return "whatsapp"
    if obj == MESSENGER_OBJECT:
        return "messenger"
    if obj == INSTAGRAM_OBJECT:
        return "instagram"
    entries = dicts(d.get("entry"))
    if isinstance(obj, str) and entries:
        return "meta_other"  # `user`, `permissions`, `application`...: Meta's other webhooks
    if entries:
        for entry in entries:
            if "messaging" in entry or "standby" in entry:
                return "page_or_ig"
            for change in dicts(entry.get("changes")):
                value = as_dict(change.get("value"))
                if is_whatsapp_value(value) or change.get("field") == "automatic_events":
                    return "whatsapp"
                if is_messaging_item(value):
                    return "page_or_ig"
        return None
    if "field" in d and isinstance(d.get("value"), dict):
        value = d["value"]
        if is_whatsapp_value(value) or d.get("field") == "automatic_events":
            return "whatsapp"
        if is_messaging_item(value):
            return "page_or_ig"
        return None
    if is_whatsapp_value(d):
        return "whatsapp"
    if is_twilio(d):
        return "twilio"
    if is_messaging_item(d):
        return "page_or_ig"
    return None
