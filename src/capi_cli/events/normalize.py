"""Normalization and SHA-256 hashing of customer information, per Meta's rules (SPEC §5).

For canonical inputs (lowercase, trimmed, well-formed) the hashes equal those of Meta's Python SDK
(`facebook_business.adobjects.serverside.normalize.Normalize`); where the SDK is looser than Meta's
documented rules we follow the documented rules (tests/test_normalize_rules.py names each case).
"""

from __future__ import annotations

import hashlib
import re
import string
import unicodedata
from collections.abc import Callable
from datetime import date
from functools import lru_cache

from capi_cli.errors import DataError
from capi_cli.rules import COUNTRY_ALIASES, GENDER_WORDS, HASHED_FIELDS, LEAD_EXPORT_PREFIXES

# Only SHA-256 digests count as already hashed. The SDK also passes 32-hex (MD5) through, but Meta
# wants SHA-256, and a 32-hex external id is usually a plain id (a UUID without dashes).
_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.][^@\s]*")
_DATE_ISO = re.compile(r"(\d{4})[-/.](\d{1,2})[-/.](\d{1,2})(?:[T ].*)?")
_DATE_COMPACT = re.compile(r"(\d{4})(\d{2})(\d{2})")
_ZIP_US = re.compile(r"(\d{5})-?\d{4}")
_SUBDIVISION_CODE = re.compile(r"([a-z]{2})-([a-z0-9]{1,3})")


class FieldError(DataError):
    """A value that cannot be normalized; `code` is a validation code of SPEC §6."""

    def __init__(self, field: str, code: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.code = code


def sha256_hex(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def is_hashed(text: str) -> bool:
    return len(text) == 64 and _SHA256_HEX.fullmatch(text) is not None


_ASCII_NON_LETTERS = str.maketrans("", "", "".join(chr(i) for i in range(128) if not chr(i).isalpha()))
_ASCII_PUNCTUATION = str.maketrans("", "", string.punctuation)


def _letters(text: str) -> str:
    """Letters of any script (with their combining marks); no digits, spaces or punctuation."""
    if text.isascii():
        return text.translate(_ASCII_NON_LETTERS)
    return "".join(c for c in text if c.isalpha() or unicodedata.category(c).startswith("M"))


def _load_phones() -> Callable[[str, str | None], str | None]:
    """events.phones on first use: importing phonenumbers costs ~30 ms, which a command that
    builds no event (or builds them in worker processes) need not pay."""
    global _normalize_phone
    from capi_cli.events.phones import normalize_phone

    _normalize_phone = normalize_phone
    return normalize_phone


def _unprefixed(text: str) -> str:
    """A value without Meta's lead-export type prefix (`p:`, `e:`, `z:`), its digits in ASCII."""
    stripped = text.strip()
    if stripped[1:2] == ":" and stripped[:2].lower() in LEAD_EXPORT_PREFIXES:
        stripped = stripped[2:].strip()
    if not stripped.isascii():
        from capi_cli.inputs.locales import ascii_digits

        stripped = ascii_digits(stripped)
    return stripped


def _email(value: str, _: str | None) -> str:
    text = value.strip().lower()
    if text[1:2] == ":":
        text = _unprefixed(text)
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    if not _EMAIL.fullmatch(text):
        raise FieldError("em", "invalid_email", f"not an email address: {value!r}")
    return text


_normalize_phone: Callable[[str, str | None], str | None] | None = None


def _phone(value: str, default_country: str | None) -> str:
    normalize_phone = _normalize_phone or _load_phones()
    digits = normalize_phone(value, default_country)
    if digits is None and (cleaned := _unprefixed(value)) != value.strip():
        digits = normalize_phone(cleaned, default_country)  # `p:+62...`, Arabic-Indic or full-width digits
    if digits is None:
        hint = (
            f"not a valid number for {default_country} or internationally"
            if default_country
            else "write it with its country code (+CC ...) or set CAPI_DEFAULT_COUNTRY"
        )
        raise FieldError("ph", "invalid_phone", f"invalid phone number {value!r}: {hint}")
    return digits


def _name_for(field: str) -> Callable[[str, str | None], str]:
    def name(value: str, _: str | None) -> str:
        # Meta: lowercase, no punctuation, UTF-8. Letters of every script stay; NFC so that the same
        # name typed on two keyboards hashes the same.
        text = value.lower()
        if text.isascii():
            kept = text.translate(_ASCII_PUNCTUATION)
        else:
            text = unicodedata.normalize("NFC", text)
            kept = "".join(c for c in text if unicodedata.category(c)[0] not in "PS")
        kept = " ".join(kept.split())
        if not kept:
            raise FieldError(field, "invalid_value", f"no letters in {field} {value!r}")
        return kept

    return name


def _gender(value: str, _: str | None) -> str:
    text = value.strip().lower()
    found = GENDER_WORDS.get(text) or GENDER_WORDS.get(unicodedata.normalize("NFC", text).rstrip("."))
    if found is None:
        raise FieldError("ge", "invalid_value", f"gender {value!r}: use f or m (female/male)")
    return found


def _date_of_birth(value: str, _: str | None) -> str:
    text = value.strip()
    match = _DATE_ISO.fullmatch(text) or _DATE_COMPACT.fullmatch(text)
    if match is None:
        from capi_cli.inputs.dates import DateUnreadable, read_date

        try:  # `17/05/1990`: read when the day cannot be the month (a locale decides the rest earlier)
            born = read_date(text).date()
        except DateUnreadable:
            born = None
        if born is not None and len(text) >= 8:
            text = born.isoformat()
            match = _DATE_ISO.fullmatch(text)
    if match is None:
        raise FieldError(
            "db", "invalid_date", f"date of birth {value!r}: write it as YYYY-MM-DD or YYYYMMDD"
        )
    year, month, day = (int(g) for g in match.groups())
    try:
        born = date(year, month, day)
    except ValueError:
        raise FieldError("db", "invalid_date", f"date of birth {value!r} is not a calendar date") from None
    if not 1900 <= born.year <= date.today().year:
        raise FieldError("db", "invalid_date", f"date of birth {value!r}: year out of range")
    return f"{born.year:04d}{born.month:02d}{born.day:02d}"


def _city(value: str, _: str | None) -> str:
    text = _letters(unicodedata.normalize("NFC", value).lower())
    if not text:
        raise FieldError("ct", "invalid_value", f"city {value!r} has no letters")
    return text


@lru_cache(maxsize=1)
def _us_states() -> dict[str, str]:
    import pycountry

    states: dict[str, str] = {}
    for sub in pycountry.subdivisions.get(country_code="US") or ():
        code = sub.code.split("-", 1)[1].lower()
        states[_letters(sub.name.lower())] = code
        states[code] = code
    return states


@lru_cache(maxsize=4096)
def _state_cached(text: str, country: str | None) -> str:
    code = _SUBDIVISION_CODE.fullmatch(text)
    if code is not None:  # ISO 3166-2 written in full: "US-CA"
        text = code.group(2)
    letters = _letters(text)
    # Meta: 2-letter codes for US states; a full US state name is mapped unless the record says
    # it is in another country.
    if country in (None, "us"):
        return _us_states().get(letters, letters)
    return letters


def _state(value: str, country: str | None) -> str:
    found = _state_cached(unicodedata.normalize("NFC", value.strip().lower()), country)
    if not found:
        raise FieldError("st", "invalid_value", f"state {value!r} has no letters")
    return found


def _zip(value: str, country: str | None) -> str:
    text = value.strip().lower()
    if text[1:2] == ":":
        text = _unprefixed(text)
    if country in (None, "us"):
        us = _ZIP_US.fullmatch(text)
        if us is not None:  # ZIP+4: Meta wants the first 5 digits
            return us.group(1)
    text = "".join(text.split()).replace("-", "")
    if not text:
        raise FieldError("zp", "invalid_value", f"empty postal code {value!r}")
    return text


@lru_cache(maxsize=4096)
def country_code(value: str) -> str | None:
    """ISO 3166-1 alpha-2, lowercase, from a code, an alpha-3 code or a name; None if unknown."""
    import pycountry

    text = value.strip().lower()
    if len(text) == 2 and text.isalpha() and pycountry.countries.get(alpha_2=text.upper()) is not None:
        return text
    if len(text) == 3 and text.isalpha():
        found = pycountry.countries.get(alpha_3=text.upper())
        if found is not None:
            return str(found.alpha_2).lower()
    squeezed = _letters(text)
    if squeezed in COUNTRY_ALIASES:
        return COUNTRY_ALIASES[squeezed]
    try:
        return str(pycountry.countries.lookup(text).alpha_2).lower()
    except LookupError:
        return None


def _country(value: str, _: str | None) -> str:
    found = country_code(value)
    if found is None:
        raise FieldError("country", "invalid_country", f"unknown country {value!r}: use an ISO code like 'us'")
    return found


def _external_id(value: str, _: str | None) -> str:
    text = value.strip()
    if not text:
        raise FieldError("external_id", "invalid_value", "empty external_id")
    return text


@lru_cache(maxsize=512)
def currency_code(value: str) -> str | None:
    """ISO 4217 code, uppercase; None if unknown."""
    import pycountry

    text = value.strip().upper()
    if len(text) != 3 or not text.isalpha():
        return None
    return text if pycountry.currencies.get(alpha_3=text) is not None else None


# field -> normalizer(value, context). The context is the default country for `ph` and the
# record's country (or the default) for `st` and `zp`.
NORMALIZERS: dict[str, Callable[[str, str | None], str]] = {
    "em": _email,
    "ph": _phone,
    "fn": _name_for("fn"),
    "ln": _name_for("ln"),
    "ge": _gender,
    "db": _date_of_birth,
    "ct": _city,
    "st": _state,
    "zp": _zip,
    "country": _country,
    "external_id": _external_id,
}
assert tuple(NORMALIZERS) == HASHED_FIELDS


def normalize(field: str, value: str, default_country: str | None = None) -> str:
    """The value Meta hashes for `field`; raises FieldError (with a §6 code) when it is invalid.

    A value that already is a SHA-256 digest comes back lowercased. `default_country` (ISO
    alpha-2, any case) reads phones without country code and decides how states and zips read.
    """
    normalizer = NORMALIZERS.get(field)
    if normalizer is None:
        raise FieldError(field, "unknown_field", f"{field!r} is not a hashed field ({', '.join(HASHED_FIELDS)})")
    text = str(value).strip()
    if is_hashed(text):
        return text.lower()
    if not text:
        raise FieldError(field, "invalid_value", f"empty {field}")
    context = default_country
    if field != "ph" and context is not None:
        context = context.lower()
    return normalizer(text, context)


def hash_value(field: str, value: str, default_country: str | None = None) -> str:
    """SHA-256 hex of the normalized value; a value already hashed is passed through, never hashed twice."""
    normalized = normalize(field, value, default_country)
    return normalized if is_hashed(normalized) else sha256_hex(normalized)
