"""Messenger and Instagram deliveries: referrals of click-to-Messenger / click-to-Instagram-Direct ads.

Shapes (Meta's Messenger Platform webhooks reference): `{object: page|instagram,
entry[{id, messaging[...]}]}` (also `standby[...]` under the handover protocol), and the
`entry[].changes[{field, value}]` shape that the App Dashboard's test button sends. The referral
sits at the item level (`messaging_referrals`, an existing thread or an ig.me link), inside
`postback` (Get Started of a new thread) or inside `message` (first message after the ad).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from capi_cli.webhooks.model import Referral
from capi_cli.webhooks.shapes import INSTAGRAM_OBJECT, as_dict, dicts, is_messaging_item, iso_timestamp, text

MESSENGER = "messenger"
INSTAGRAM = "instagram"


def extract(
    payload: dict[str, Any], origin: str, channel_hint: str | None = None
) -> tuple[list[Referral], int]:
    """Referrals of one delivery, and how many messages, postbacks and referral events it held."""
    if payload.get("object") == INSTAGRAM_OBJECT:
        channel = INSTAGRAM
    elif payload.get("object") is None and channel_hint == INSTAGRAM:
        channel = INSTAGRAM
    else:
        channel = MESSENGER
    found: list[Referral] = []
    events = 0
    for account_id, item in _items(payload):
        message = as_dict(item.get("message"))
        if message.get("is_echo") is True:
            continue  # the business's own message
        postback = as_dict(item.get("postback"))
        if not (message or postback or "referral" in item):
            continue  # reads, deliveries, reactions
        events += 1
        located = _referral_of(item, message, postback)
        if located is None:
            continue
        referral, kind, message_id = located
        context = as_dict(referral.get("ads_context_data"))
        sender = as_dict(item.get("sender"))
        found.append(
            Referral(
                channel=channel,
                ad_id=text(referral.get("ad_id")),
                source_type=text(referral.get("source")),
                headline=text(context.get("ad_title")),
                media_type=_media_type(context),
                ref=text(referral.get("ref")),
                user_id=text(sender.get("id")) or text(sender.get("user_ref")),
                business_id=account_id or text(as_dict(item.get("recipient")).get("id")),
                message_id=message_id,
                timestamp=iso_timestamp(item.get("timestamp")),
                kind=kind,
                origin=origin,
            )
        )
    return found, events


def _items(payload: dict[str, Any]) -> Iterator[tuple[str | None, dict[str, Any]]]:
    """(page / Instagram account id from the entry, messaging item) for every item of the delivery."""
    entries = payload.get("entry")
    if isinstance(entries, list):
        for entry in dicts(entries):
            entry_id = text(entry.get("id"))
            # The dashboard's test payloads use entry id "0"; the recipient is the real account then.
            account_id = entry_id if entry_id and entry_id != "0" else None
            for key in ("messaging", "standby"):
                for item in dicts(entry.get(key)):
                    yield account_id, item
            for change in dicts(entry.get("changes")):
                value = change.get("value")
                if isinstance(value, dict) and is_messaging_item(value):
                    yield account_id, value
    elif isinstance(payload.get("value"), dict):
        yield None, payload["value"]
    else:
        yield None, payload


def _referral_of(
    item: dict[str, Any], message: dict[str, Any], postback: dict[str, Any]
) -> tuple[dict[str, Any], str, str | None] | None:
    """(referral, kind, message id) wherever the referral sits in the item."""
    message_id = text(message.get("mid")) or text(postback.get("mid"))
    if isinstance(message.get("referral"), dict) and message["referral"]:
        return message["referral"], "message", message_id
    if isinstance(postback.get("referral"), dict) and postback["referral"]:
        return postback["referral"], "postback", message_id
    if isinstance(item.get("referral"), dict) and item["referral"]:
        # Beside a message it is that message's referral; alone it is a messaging_referrals event.
        kind = "message" if message else ("postback" if postback else "referral")
        return item["referral"], kind, message_id
    return None


def _media_type(context: dict[str, Any]) -> str | None:
    if text(context.get("video_url")):
        return "video"
    if text(context.get("photo_url")):
        return "image"
    return None
