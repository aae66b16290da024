"""Envelopes of WhatsApp providers and cloud relays that carry Meta's referral in their own shape.

Each is turned into the WhatsApp Cloud API shape the extractor reads, so every rule (ad or not,
click id, user ids) is written once. What is recognised, from the providers' public documentation
(see tests/fixtures/webhooks/real/README.md for the example each test uses):

| envelope | looks like | source |
|---|---|---|
| AWS End User Messaging Social (SNS `Message` or EventBridge `detail`) | `{context, whatsAppWebhookEntry: "<JSON string of one Meta entry>", message_timestamp}` | AWS EUM Social user guide, "Message and event destinations" |
| Gupshup v2 | `{app, timestamp (ms), version: 2, type: "message", payload: {id, source, sender{phone, name}, referral?}}` | docs.gupshup.io, "Understanding Inbound Message" |
| edna Pulse | `{subscriber{identifier}, messageContent{referral{sourceId, sourceType, ...}}, receivedAt}` | docs.edna.io, release notes 2024-08-08 |

Not listed because they already post Meta's own payload, read as it is: 360dialog (Cloud API and
On-Premises shapes), Gupshup v3 (`gs_app_id` beside Meta's `object`/`entry`), Twilio (own module),
and any relay that logs Meta's body unchanged.
"""

from __future__ import annotations

import json
from typing import Any

from capi_cli.webhooks.shapes import WHATSAPP_OBJECT, as_dict, text

# Meta's referral keys as providers spell them in camelCase.
_CAMEL_REFERRAL_KEYS = {
    "sourceUrl": "source_url",
    "sourceId": "source_id",
    "sourceType": "source_type",
    "mediaType": "media_type",
    "imageUrl": "image_url",
    "videoUrl": "video_url",
    "thumbnailUrl": "thumbnail_url",
    "ctwaClid": "ctwa_clid",
    "welcomeMessage": "welcome_message",
}
# Gupshup v2 event types that never carry a referral (message-event: statuses of sent messages).
_GUPSHUP_OTHER_TYPES = frozenset({"message-event", "user-event", "template-event", "account-event", "billing-event"})


def unwrap_provider(d: dict[str, Any]) -> dict[str, Any] | None:
    """The Meta-shaped payload inside a provider envelope, or None when `d` is none of them."""
    if "whatsAppWebhookEntry" in d:
        return _aws_eum(d)
    if "app" in d and isinstance(d.get("payload"), dict) and d.get("version") in (2, "2"):
        return _gupshup_v2(d)
    if isinstance(d.get("messageContent"), dict) and isinstance(d.get("subscriber"), dict):
        return _edna(d)
    return None


def referral_of(raw: Any) -> dict[str, Any] | None:
    """A referral object with Meta's snake_case keys, whichever spelling the provider used."""
    if not isinstance(raw, dict) or not raw:
        return None
    return {(_CAMEL_REFERRAL_KEYS.get(k) or k): v for k, v in raw.items()}


def _aws_eum(d: dict[str, Any]) -> dict[str, Any] | None:
    entry = d["whatsAppWebhookEntry"]
    if isinstance(entry, str):
        try:
            entry = json.loads(entry)
        except (ValueError, RecursionError):
            return None
    if not isinstance(entry, dict):
        return None
    return {"object": WHATSAPP_OBJECT, "entry": [entry]}


def _whatsapp_value(
    message: dict[str, Any], phone: Any, name: Any, phone_number_id: Any = None
) -> dict[str, Any]:
    value: dict[str, Any] = {"messaging_product": "whatsapp", "messages": [message]}
    if phone is not None or name is not None:
        value["contacts"] = [{"profile": {"name": name}, "wa_id": phone}]
    if phone_number_id is not None:
        value["metadata"] = {"phone_number_id": phone_number_id}
    return value


def _gupshup_v2(d: dict[str, Any]) -> dict[str, Any] | None:
    payload = d["payload"]
    kind = d.get("type")
    if kind in _GUPSHUP_OTHER_TYPES:
        return {"messaging_product": "whatsapp"}  # a Gupshup event with no message: nothing to read
    if kind != "message":
        return None
    sender = as_dict(payload.get("sender"))
    phone = sender.get("phone") or payload.get("source")
    message: dict[str, Any] = {"from": phone, "id": payload.get("id"), "type": payload.get("type")}
    # The envelope's `timestamp` is in milliseconds; the message's own, when present, wins.
    message["timestamp"] = payload.get("timestamp") or d.get("timestamp")
    referral = referral_of(payload.get("referral")) or referral_of(as_dict(payload.get("payload")).get("referral"))
    if referral:
        message["referral"] = referral
    return _whatsapp_value(message, phone, sender.get("name"))


def _edna(d: dict[str, Any]) -> dict[str, Any] | None:
    content = d["messageContent"]
    phone = as_dict(d.get("subscriber")).get("identifier")
    message: dict[str, Any] = {"from": phone, "id": text(d.get("id")), "timestamp": None}
    referral = referral_of(content.get("referral"))
    if referral:
        message["referral"] = referral
    # No message time: the envelope's `receivedAt` is read as the delivery's time.
    return _whatsapp_value(message, phone, as_dict(d.get("userInfo")).get("userName"))
