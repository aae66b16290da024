"""Twilio WhatsApp deliveries: the form fields Twilio adds for click-to-WhatsApp ads.

Fields from Twilio's "WhatsApp referral" webhook parameters; a JSON dump of the same fields
reads the same, and so does an Event Streams `com.twilio.messaging.inbound-message.received`
event's `data` (the same names in camelCase, with a `timestamp`). A webhook gives neither the WABA
id nor a time: the time comes from what logged it (see extraction).
"""

from __future__ import annotations

from typing import Any

from capi_cli.webhooks.model import Referral
from capi_cli.webhooks.shapes import digits, logged_time, text

CHANNEL = "whatsapp"
_REFERRAL_FIELDS = ("ReferralCtwaClid", "ReferralSourceId", "ReferralSourceUrl", "ReferralSourceType")


def extract(payload: dict[str, Any], origin: str) -> tuple[list[Referral], int]:
    """The referral of one inbound message (at most one), and the message count (one)."""
    if "messageSid" in payload or "accountSid" in payload:  # Event Streams: camelCase names
        payload = {k[:1].upper() + k[1:]: v for k, v in payload.items()}
    fields = {k: _first(v) for k, v in payload.items()}
    if not any(fields.get(k) for k in _REFERRAL_FIELDS):
        return [], 1
    wa_id = digits(fields.get("WaId")) or digits(fields.get("From"))
    source_type = fields.get("ReferralSourceType")
    clid = fields.get("ReferralCtwaClid")
    # Twilio forwards Meta's referral: an ad (or a boosted post) by its source type or click id.
    is_ad = bool(clid) or (source_type or "").lower() in ("ad", "post")
    return [
        Referral(
            channel=CHANNEL,
            ctwa_clid=clid,
            ad_id=fields.get("ReferralSourceId") if source_type and source_type.lower() == "ad" else None,
            source_type=source_type,
            source_url=fields.get("ReferralSourceUrl"),
            headline=fields.get("ReferralHeadline"),
            body=fields.get("ReferralBody"),
            media_type=fields.get("ReferralMediaContentType"),
            user_id=wa_id,
            wa_id=wa_id,
            profile_name=fields.get("ProfileName"),
            message_id=fields.get("MessageSid") or fields.get("SmsMessageSid") or fields.get("SmsSid"),
            timestamp=logged_time(fields.get("Timestamp")),
            kind="message",
            origin=origin,
            is_ad=is_ad,
        )
    ], 1


def _first(value: Any) -> str | None:
    """A form field as text: parsers of repeated fields give lists."""
    if isinstance(value, list):
        value = value[0] if value else None
    return text(value)
