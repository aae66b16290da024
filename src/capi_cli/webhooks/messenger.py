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

# `referral.source` values that say the referral came from an ad (Messenger Platform reference,
# messaging_referrals / postback referral: "ADS"); every other documented source (SHORTLINK,
# MESSENGER_CODE, DISCOVER_TAB, CUSTOMER_CHAT_PLUGIN, IGME-SOURCE-LINK, ...) is not an ad.
AD_SOURCES = frozenset({"ADS"})
# Sources only one of the two products sends (Messenger Platform and Instagram messaging references).
_MESSENGER_ONLY_SOURCES = frozenset({"SHORTLINK", "MESSENGER_CODE", "DISCOVER_TAB", "CUSTOMER_CHAT_PLUGIN"})
_INSTAGRAM_SOURCE_PREFIX = "IGME"
# Instagram professional account ids (entry id / recipient of an IG delivery) start with this;
# Page ids never do (seen in Meta's Instagram webhook examples and integrations' fixtures).
_IG_ACCOUNT_PREFIX = "17841"
UNDECIDED = "undecided"


def extract(
    payload: dict[str, Any], origin: str, channel_hint: str | None = None
) -> tuple[list[Referral], int, bool]:
    """Referrals of one delivery, how many messages, postbacks and referral events it held, and
    whether the channel had to be guessed (no `object`, no evidence, no --channel)."""
    channel = _channel_of(payload, channel_hint)
    guessed = channel == UNDECIDED
    if guessed:
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
        ad_id = text(referral.get("ad_id"))
        source = text(referral.get("source"))
        # `ads_context_data` is sent only for a referral from an ad, even when `ad_id` is missing.
        is_ad = ad_id is not None or (source or "").upper() in AD_SOURCES or bool(context)
        found.append(
            Referral(
                channel=channel,
                ad_id=ad_id if is_ad else None,
                source_type=source or _kind_of_non_ad(referral),
                headline=text(context.get("ad_title")),
                media_type=_media_type(context),
                ref=text(referral.get("ref")),
                # `sender.user_ref` (chat plugin, checkbox) is a one-time reference, never a PSID.
                user_id=text(sender.get("id")),
                business_id=account_id or text(as_dict(item.get("recipient")).get("id")),
                message_id=message_id,
                timestamp=iso_timestamp(item.get("timestamp")) or _entry_time(payload, account_id),
                kind=kind,
                origin=origin,
                is_ad=is_ad,
            )
        )
    return found, events, guessed and bool(found)


def _kind_of_non_ad(referral: dict[str, Any]) -> str:
    """What a referral without `source` is: a Shops product page (`{product: {id}}`) or unknown."""
    return "PRODUCT" if isinstance(referral.get("product"), dict) else "UNKNOWN"


def _channel_of(payload: dict[str, Any], hint: str | None) -> str:
    """Messenger or Instagram from what the payload says; UNDECIDED when it says nothing."""
    obj = payload.get("object")
    if obj == INSTAGRAM_OBJECT:
        return INSTAGRAM
    if obj is not None:
        return MESSENGER
    if hint in (MESSENGER, INSTAGRAM):
        return hint
    for account_id, item in _items(payload):
        ids = (account_id, text(as_dict(item.get("recipient")).get("id")))
        if any(i and i.startswith(_IG_ACCOUNT_PREFIX) for i in ids):
            return INSTAGRAM
        if "user_ref" in as_dict(item.get("sender")):
            return MESSENGER  # the chat and checkbox plugins are Messenger's
        for referral in (
            item.get("referral"),
            as_dict(item.get("message")).get("referral"),
            as_dict(item.get("postback")).get("referral"),
        ):
            source = (text(as_dict(referral).get("source")) or "").upper()
            if source.startswith(_INSTAGRAM_SOURCE_PREFIX):
                return INSTAGRAM
            if source in _MESSENGER_ONLY_SOURCES:
                return MESSENGER
    return UNDECIDED


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


def _entry_time(payload: dict[str, Any], account_id: str | None) -> str | None:
    """The `time` (ms) of the item's entry: the delivery's time for an item that carries none."""
    for entry in dicts(payload.get("entry")):
        entry_id = text(entry.get("id"))
        if (entry_id if entry_id != "0" else None) == account_id:
            return iso_timestamp(entry.get("time"))
    return None


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
