"""The questions `capi config init` asks, and each answer checked as it is typed.

An answer is read the way events read the same field (a country name maps to its ISO code, as in
an export's `country` column), then checked with the same rules as the config file, so a profile
written from answers always loads. A refused answer comes back with the accepted forms and, for a
timezone, the IANA names it probably meant.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from capi_cli.settings import check_value


@dataclass(frozen=True)
class Question:
    key: str
    prompt: str
    hint: str  # the accepted forms, shown with the question and again after a refused answer


QUESTIONS = (
    Question("dataset_id", "Dataset id", "digits, from Events Manager; empty if you have none yet (`capi dataset --create`)"),
    Question("whatsapp_business_account_id", "WhatsApp Business Account id", "digits; empty without WhatsApp"),
    Question("page_id", "Facebook Page id", "digits; empty without Messenger"),
    Question("ig_account_id", "Instagram account id", "digits; empty without Instagram Direct"),
    Question("default_country", "Default country for phones without +code", "a name or ISO code: India, IN, IND"),
    Question("currency", "Default currency", "an ISO 4217 code: INR, TRY, BRL, IDR, USD"),
    Question("timezone", "Timezone of times without an offset", "an IANA name: Asia/Kolkata, Europe/Istanbul"),
)
# Without a terminal, `config init` writes only what its options say: at least one of these.
REQUIRED_ONE_OF = ("dataset_id", "whatsapp_business_account_id", "page_id", "ig_account_id")

# Abbreviations people type for a timezone; they are ambiguous (IST is India, Israel and Ireland),
# so they are suggestions, never accepted silently.
_ABBREVIATIONS = {
    "IST": ("Asia/Kolkata", "Asia/Jerusalem", "Europe/Dublin"),
    "WIB": ("Asia/Jakarta",),
    "WITA": ("Asia/Makassar",),
    "BRT": ("America/Sao_Paulo",),
    "TRT": ("Europe/Istanbul",),
    "PKT": ("Asia/Karachi",),
    "GST": ("Asia/Dubai",),
    "CET": ("Europe/Berlin", "Europe/Paris"),
    "EST": ("America/New_York",),
    "CST": ("America/Chicago", "America/Mexico_City", "Asia/Shanghai"),
    "PST": ("America/Los_Angeles",),
    "WAT": ("Africa/Lagos",),
    "EAT": ("Africa/Nairobi",),
}


class BadAnswer(ValueError):
    """What is wrong with an answer, and the accepted forms."""


def check_answer(key: str, text: str) -> str | None:
    """The value to store for `key` (None for an empty answer), or BadAnswer."""
    text = text.strip()
    if not text:
        return None
    if key == "default_country":
        from capi_cli.events.normalize import country_code

        code = country_code(text)
        if code is None:
            raise BadAnswer(f"unknown country {text!r}")
        return code.upper()
    if key == "currency":
        from capi_cli.events.normalize import currency_code

        found = currency_code(text)
        if found is None:
            raise BadAnswer(f"{text!r} is not an ISO 4217 currency code")
        return found
    if key == "timezone":
        return _timezone(text)
    try:
        return str(check_value(key, text))
    except ValueError as exc:
        raise BadAnswer(str(exc)) from None


def _timezone(text: str) -> str:
    from zoneinfo import available_timezones

    zones = available_timezones()
    by_lower = {zone.lower(): zone for zone in zones}
    if text.upper() == "UTC":
        return "UTC"
    if "/" in by_lower.get(text.lower(), ""):
        return by_lower[text.lower()]
    # A city alone ("Kolkata", "sao paulo") names one zone when exactly one ends with it.
    city = text.replace(" ", "_").lower()
    matches = [zone for zone in zones if zone.lower().endswith("/" + city)]
    if len(matches) == 1:
        return matches[0]
    suggestions = list(_ABBREVIATIONS.get(text.upper(), ()))
    if not suggestions:
        suggestions = difflib.get_close_matches(text, sorted(z for z in zones if "/" in z), n=3, cutoff=0.6)
    if not suggestions:
        suggestions = difflib.get_close_matches(
            city, sorted({z.rsplit("/", 1)[-1].lower(): z for z in zones}), n=3, cutoff=0.6)
        suggestions = [z for z in sorted(zones) if z.rsplit("/", 1)[-1].lower() in suggestions][:3]
    meant = f"; did you mean {' or '.join(suggestions)}?" if suggestions else ""
    raise BadAnswer(f"{text!r} is not an IANA timezone{meant}")
