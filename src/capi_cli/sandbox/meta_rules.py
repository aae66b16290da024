"""What Meta's Graph API accepts and how it refuses, as the sandbox answers it.

Source: /work/shared/reference/meta-facts.md ("Conversions API, business messaging"), from
developers.facebook.com/docs/marketing-api/conversions-api/business-messaging and the Graph API
error reference. Kept apart from capi's own rules (capi_cli.events) on purpose: the sandbox
checks what capi sends, so it must not share capi's mistakes.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

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

# The permission each channel's dataset edge needs (meta-facts.md, "Permissions").
PERMISSION_BY_ASSET_KIND = {
    "whatsapp": "whatsapp_business_management",
    "messenger": "page_events",
    "instagram": "instagram_manage_events",
}

Refusal = tuple[int, str, str]  # (subcode, error_user_title, error_user_msg)


def refusal_of(data: list[Any], now: float) -> Refusal | None:
    """Meta refuses the whole batch for one bad event, naming none (meta-facts.md)."""
    for event in data:
        refusal = _refusal_of_event(event, now)
        if refusal is not None:
            return refusal
    return None


def _refusal_of_event(event: Any, now: float) -> Refusal | None:
    if not isinstance(event, dict):
        return 2804019, "Invalid Parameter", "Each event must be an object."
    if event.get("event_name") not in EVENT_NAMES:
        return 2804066, "Event Name Not Allowed", "This event name is not supported for business messaging."
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
        ok = bool(user.get("ig_sid")) and bool(user.get("ig_account_id") or user.get("instagram_business_account_id"))
    else:
        return 2804019, "Invalid Parameter", "messaging_channel is not valid."
    if not ok:
        return (2804050, "Not Enough Customer Information",
                "The event does not have enough customer information to be attributed.")
    for name in HASHED_FIELDS:
        if name in user:
            values = user[name]
            if not isinstance(values, list) or not all(isinstance(v, str) and _HEX64.fullmatch(v) for v in values):
                return 2804019, "Invalid Parameter", f"The value of {name} must be SHA-256 hashed."
    return None


def error_body(
    code: int,
    subcode: int | None,
    message: str,
    error_type: str,
    *,
    transient: bool = False,
    title: str | None = None,
    user_message: str | None = None,
) -> dict[str, Any]:
    """A Graph API error document, keys as Meta sends them."""
    error: dict[str, Any] = {"message": message, "type": error_type, "code": code, "fbtrace_id": trace_id()}
    if subcode is not None:
        error["error_subcode"] = subcode
    error["is_transient"] = transient
    if title:
        error["error_user_title"] = title
    if user_message:
        error["error_user_msg"] = user_message
    return {"error": error}


def trace_id() -> str:
    return "A" + uuid.uuid4().hex[:22]
