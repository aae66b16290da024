"""WhatsApp Cloud API (and legacy On-Premises) deliveries: referrals of click-to-WhatsApp ads.

Shapes (Meta's WhatsApp webhooks reference, `messages` and `automatic_events` fields):
the full envelope `{object, entry[{id: WABA, changes[{field, value}]}]}`, a bare `{field, value}`
change, a bare `value`, and the On-Premises body with top-level `contacts`/`messages`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from capi_cli.webhooks.model import Referral
from capi_cli.webhooks.shapes import as_dict, dicts, digits, is_whatsapp_value, iso_timestamp, text

CHANNEL = "whatsapp"
# `messages[].referral.source_type` values of ads (WhatsApp Cloud API webhooks reference, messages object).
AD_SOURCE_TYPES = frozenset({"ad", "post"})


def extract(payload: dict[str, Any], origin: str) -> tuple[list[Referral], int]:
    """Referrals of one delivery, and how many messages and automatic events it held."""
    found: list[Referral] = []
    messages = 0
    for business_id, field, value in _values(payload):
        phone_number_id = text(as_dict(value.get("metadata")).get("phone_number_id"))
        contacts = dicts(value.get("contacts"))
        for message in dicts(value.get("messages")):
            messages += 1
            referral = message.get("referral")
            if isinstance(referral, dict) and referral:
                found.append(_from_message(message, referral, contacts, business_id, phone_number_id, origin))
        events = dicts(value.get("automatic_events"))
        if not events and field == "automatic_events" and "event_name" in value:
            events = [value]
        for event in events:
            messages += 1
            clid = text(event.get("ctwa_clid"))
            if clid:
                found.append(
                    Referral(
                        channel=CHANNEL,
                        ctwa_clid=clid,
                        business_id=business_id,
                        phone_number_id=phone_number_id,
                        message_id=text(event.get("id")),
                        timestamp=iso_timestamp(event.get("timestamp")),
                        kind="automatic_event",
                        origin=origin,
                    )
                )
    return found, messages


def _values(payload: dict[str, Any]) -> Iterator[tuple[str | None, str | None, dict[str, Any]]]:
    """(WABA id, change field, change value) for every change of the delivery."""
    entries = payload.get("entry")
    if isinstance(entries, list):
        for entry in dicts(entries):
            business_id = text(entry.get("id"))
            for change in dicts(entry.get("changes")):
                value = change.get("value")
                if isinstance(value, dict):
                    yield business_id, text(change.get("field")), value
    elif "field" in payload and isinstance(payload.get("value"), dict):
        yield None, text(payload.get("field")), payload["value"]
    elif is_whatsapp_value(payload):
        yield None, None, payload


def _from_message(
    message: dict[str, Any],
    referral: dict[str, Any],
    contacts: list[dict[str, Any]],
    business_id: str | None,
    phone_number_id: str | None,
    origin: str,
) -> Referral:
    contact = _contact_of(message, contacts)
    profile = as_dict(contact.get("profile"))
    wa_id = digits(message.get("from")) or digits(contact.get("wa_id"))
    bsuid = text(message.get("from_user_id")) or text(contact.get("user_id"))
    source_type = text(referral.get("source_type"))
    source_id = text(referral.get("source_id"))
    # An empty click id (seen on some deliveries) means none.
    clid = text(referral.get("ctwa_clid"))
    kind_of_source = (source_type or "").lower()
    is_ad = bool(clid) or kind_of_source in AD_SOURCE_TYPES
    return Referral(
        channel=CHANNEL,
        ctwa_clid=clid,
        ad_id=source_id if kind_of_source == "ad" else None,
        source_type=source_type or (None if is_ad else "unknown"),
        source_url=text(referral.get("source_url")),
        headline=text(referral.get("headline")),
        body=text(referral.get("body")),
        media_type=text(referral.get("media_type")),
        user_id=wa_id or bsuid,
        wa_id=wa_id,
        bsuid=bsuid,
        username=text(profile.get("username")),
        profile_name=text(profile.get("name")),
        business_id=business_id,
        phone_number_id=phone_number_id,
        message_id=text(message.get("id")),
        timestamp=iso_timestamp(message.get("timestamp")),
        kind="message",
        origin=origin,
        # Meta sends a referral only for a click-to-WhatsApp ad: `source_type` ad, or post (a
        # boosted post run as an ad); a click id says so too. Anything else is no ad.
        is_ad=is_ad,
    )


def _contact_of(message: dict[str, Any], contacts: list[dict[str, Any]]) -> dict[str, Any]:
    """The contact of a message: same phone or same business-scoped user id.

    A lone contact that contradicts neither id is taken too (usernames hide the phone).
    """
    phone = digits(message.get("from"))
    bsuid = text(message.get("from_user_id"))
    for contact in contacts:
        if phone and digits(contact.get("wa_id")) == phone:
            return contact
        if bsuid and text(contact.get("user_id")) == bsuid:
            return contact
    if len(contacts) == 1:
        contact = contacts[0]
        contact_phone, contact_bsuid = digits(contact.get("wa_id")), text(contact.get("user_id"))
        if not (phone and contact_phone and phone != contact_phone) and not (
            bsuid and contact_bsuid and bsuid != contact_bsuid
        ):
            return contact
    return {}
