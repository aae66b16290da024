"""Every canonical input field, as `capi fields` shows it (SPEC §4): aliases, which channel needs
it, whether it is hashed, how it is normalised, an example. Rules from Meta's customer-information
parameters page (developers.facebook.com/docs/marketing-api/conversions-api/parameters/customer-information-parameters)
and the Conversions API for Business Messaging page."""

from __future__ import annotations

from typing import Any

from capi_cli.events.fields import ALIASES, CANONICAL_KEYS
from capi_cli.rules import HASHED_FIELDS

# field -> (channels that require it, rule, example)
_ABOUT: dict[str, tuple[tuple[str, ...], str, str]] = {
    "event_name": (("whatsapp", "messenger", "instagram"), "one of the 14 business-messaging events, any case", "Purchase"),
    "event_time": ((), "Unix seconds or ms, ISO 8601, or a day/month date (--locale, --date-format); absent: now",
                   "2026-11-28T14:05:00+05:30"),
    "event_id": ((), "absent: derived from event_name + order_id (or customer + time)", "order-1001"),
    "messaging_channel": ((), "whatsapp, messenger or instagram; absent: inferred from the ids", "whatsapp"),
    "action_source": ((), "always business_messaging", "business_messaging"),
    "ctwa_clid": (("whatsapp",), "as given; absent: the stored referral of the customer (else unattributed)",
                  "ARAkLkA8rmlFeiCktEJQ-QTwRiyY"),
    "whatsapp_business_account_id": (("whatsapp",), "digits; default from config", "104123456789012"),
    "page_id": (("messenger",), "digits; default from config", "110123456789012"),
    "page_scoped_user_id": (("messenger",), "digits", "5421123456789012"),
    "ig_account_id": (("instagram",), "digits; default from config", "17841400000000000"),
    "ig_sid": (("instagram",), "digits", "6521123456789012"),
    "wa_id": ((), "the customer's WhatsApp number: finds the stored referral, hashed as ph unless ph is given",
              "919820012345"),
    "bsuid": ((), "business-scoped user id: finds the stored referral", "1234567890"),
    "em": ((), "trimmed, lowercase; must look like an address", "ana@example.com"),
    "ph": ((), "digits with country code; without one, the row's country then the default country",
           "+91 98200 12345"),
    "fn": ((), "lowercase, no punctuation, any script", "Ana"),
    "ln": ((), "lowercase, no punctuation, any script", "Souza"),
    "ge": ((), "f or m (female/male and the target markets' words)", "perempuan"),
    "db": ((), "YYYYMMDD from ISO dates, YYYYMMDD, or an unambiguous day/month date", "1990-05-17"),
    "ct": ((), "lowercase letters only", "São Paulo"),
    "st": ((), "US states as 2-letter codes, others lowercase letters", "California"),
    "zp": ((), "lowercase, no spaces or dashes; US zips cut to 5 digits", "94103-1234"),
    "country": ((), "ISO 3166-1 alpha-2, lowercase (names and alpha-3 mapped)", "India"),
    "external_id": ((), "trimmed", "cust-8812"),
    "value": ((), "a non-negative number; required with currency for Purchase; `R$ 39,99` with --locale", "39.99"),
    "currency": ((), "ISO 4217, sent uppercase; also set by a symbol in the amount", "BRL"),
    "order_id": ((), "as given; gives the event id", "#1001"),
    "contents": ((), "JSON list of {id, quantity, item_price}; built by --group-by", '[{"id":"SKU-1","quantity":2}]'),
    "num_items": ((), "a whole number; the sum of quantities with --group-by", "3"),
    "full_name": ((), "split into fn (first word) and ln (last word)", "Ana Beatriz Souza"),
    "item_id": ((), "a line item's id: contents (with --group-by, one per row)", "SKU-1"),
    "item_quantity": ((), "a line item's quantity (default 1)", "2"),
    "item_price": ((), "a line item's unit price", "1499.00"),
}
_DEFAULT = ((), "passed through as given", "")


def catalogue() -> list[dict[str, Any]]:
    """One entry per canonical field, in CANONICAL_KEYS order: the `capi fields --format json` array."""
    aliases: dict[str, list[str]] = {}
    for alias, key in ALIASES.items():
        aliases.setdefault(key, []).append(alias)
    entries = []
    for name in CANONICAL_KEYS:
        required_for, rule, example = _ABOUT.get(name, _DEFAULT)
        entries.append({
            "name": name,
            "aliases": aliases.get(name, []),
            "required_for": list(required_for),
            "hashed": name in HASHED_FIELDS,
            "rule": rule,
            "example": example,
        })
    return entries
