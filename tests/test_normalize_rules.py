"""Where capi deliberately goes beyond Meta's Python SDK, each case with the rule it follows.

Meta's customer-information rules (SPEC §5, meta-facts.md) are the reference; the SDK is looser.
"""

from __future__ import annotations

import hashlib
import unicodedata

import pytest
from facebook_business.adobjects.serverside.normalize import Normalize

from capi_cli.events.normalize import FieldError, currency_code, hash_value, normalize


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def sdk(field: str, value: str) -> str | None:
    try:
        return Normalize.normalize_field(field, value)
    except (TypeError, ValueError):
        return None


# -- phones: digits with country code, validated by phonenumbers ------------------------------------


@pytest.mark.parametrize(
    ("value", "country", "expected"),
    [
        ("(415) 555-2671", "US", "14155552671"),  # rule: without + or 00 the default country decides
        ("0532 123 45 67", "TR", "905321234567"),  # national trunk prefix dropped
        ("07911 123456", "GB", "447911123456"),
        ("+44 (0)7911 123456", None, "447911123456"),  # national prefix written after the country code
        ("0044 7911 123456", None, "447911123456"),  # rule: 00 means international
        ("+1 415 555 2671", "DE", "14155552671"),  # + always wins over the default country
        ("14155552671", None, "14155552671"),  # no default: digits must start with a country code
        ("whatsapp:+14155552671", None, "14155552671"),  # as Twilio writes it
    ],
)
def test_phone_rules(value: str, country: str | None, expected: str) -> None:
    assert normalize("ph", value, country) == expected
    assert hash_value("ph", value, country) == sha(expected)


def test_phone_without_country_code_differs_from_sdk() -> None:
    # The SDK keeps "4155552671" as if 415 were a country code; Meta would never match it.
    assert sdk("ph", "(415) 555-2671") == sha("4155552671")
    assert hash_value("ph", "(415) 555-2671", "US") == sha("14155552671")


@pytest.mark.parametrize("value", ["12345678", "+1 555 0100", "4155552671", "not a phone", "+44 7911 12", "1-800-FLOWERS"])
def test_invalid_or_impossible_phones_are_errors_not_sent(value: str) -> None:
    # rule: invalid or impossible numbers are validation errors (the SDK accepts e.g. "12345678")
    with pytest.raises(FieldError) as caught:
        normalize("ph", value)
    assert caught.value.code == "invalid_phone"


# -- names: lowercase, no punctuation, any script, NFC ----------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("O'Brien", "obrien"),
        ("Jean-Luc", "jeanluc"),
        ("  Mary  Ann ", "mary ann"),
        ("Dr. Smith!", "dr smith"),
        ("José", "josé"),
        ("Çağrı", "çağrı"),
        ("محمد", "محمد"),
    ],
)
def test_name_rules(value: str, expected: str) -> None:
    assert normalize("fn", value) == expected
    assert hash_value("ln", value) == sha(expected)


def test_names_in_decomposed_unicode_hash_like_composed() -> None:
    decomposed = unicodedata.normalize("NFD", "José")
    assert decomposed != "José"
    assert hash_value("fn", decomposed) == hash_value("fn", "José")


def test_name_punctuation_differs_from_sdk() -> None:
    assert sdk("fn", "o'brien") == sha("o'brien")
    assert hash_value("fn", "o'brien") == sha("obrien")


# -- city, state, zip, country ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "context", "expected"),
    [
        ("ct", "San Francisco", None, "sanfrancisco"),
        ("ct", "St. Louis 2", None, "stlouis"),
        ("ct", "İstanbul", None, "i̇stanbul"),
        ("st", "California", None, "ca"),  # rule: US state names mapped to their 2-letter codes
        ("st", "new york", None, "ny"),
        ("st", "US-TX", None, "tx"),
        ("st", "CA", None, "ca"),
        ("st", "Ontario", "ca", "ontario"),  # other countries: lowercase letters only
        ("st", "Georgia", "ge", "georgia"),  # the country Georgia, not the US state
        ("zp", "94103-1234", None, "94103"),  # rule: US zips cut to 5 digits
        ("zp", "941031234", "us", "94103"),
        ("zp", "SW1A 1AA", "gb", "sw1a1aa"),
        ("zp", "00-950", "pl", "00950"),  # rule: no dashes (the SDK cuts at the dash: "00")
        ("country", "United States", None, "us"),  # rule: names and alpha-3 codes mapped
        ("country", "DEU", None, "de"),
        ("country", "UK", None, "gb"),
        ("country", " TR ", None, "tr"),
    ],
)
def test_location_rules(field: str, value: str, context: str | None, expected: str) -> None:
    assert normalize(field, value, context) == expected


def test_state_name_differs_from_sdk() -> None:
    assert sdk("st", "california") == sha("california")
    assert hash_value("st", "california") == sha("ca")


def test_unknown_country_is_an_error() -> None:
    with pytest.raises(FieldError) as caught:
        normalize("country", "Atlantis")
    assert caught.value.code == "invalid_country"


# -- dates of birth, gender -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1990-05-17", "19900517"), ("1990/5/7", "19900507"), ("19900517", "19900517"), ("1990-05-17T00:00:00", "19900517"),
     # day/month or month/day when only one reading is a date (SPEC §4: unambiguous dates are read)
     ("17/05/1990", "19900517"), ("05/17/1990", "19900517"), ("١٧/٠٥/١٩٩٠", "19900517")],
)
def test_date_formats(value: str, expected: str) -> None:
    assert normalize("db", value) == expected


@pytest.mark.parametrize("value", ["05/06/1990", "31/02/1990", "1990-13-01", "19900230", "May 17 1990", "1850-01-01"])
def test_ambiguous_or_impossible_dates_are_errors(value: str) -> None:
    # rule: YYYYMMDD from ISO dates or YYYYMMDD; anything ambiguous is an error (the SDK hashes as given)
    with pytest.raises(FieldError) as caught:
        normalize("db", value)
    assert caught.value.code == "invalid_date"


@pytest.mark.parametrize(("value", "expected"), [("Female", "f"), ("M", "m"), ("male", "m"), ("woman", "f"), (" F ", "f")])
def test_gender_words(value: str, expected: str) -> None:
    assert normalize("ge", value) == expected


def test_unknown_gender_is_an_error() -> None:
    with pytest.raises(FieldError):
        normalize("ge", "x")


# -- email, external_id, currency, hashed input -----------------------------------------------------------


def test_email_trimmed_and_lowercased() -> None:
    assert normalize("em", "  John.Doe@Example.COM ") == "john.doe@example.com"


@pytest.mark.parametrize("value", ["bad", "a@b", "@example.com", "a b@example.com"])
def test_invalid_email(value: str) -> None:
    with pytest.raises(FieldError) as caught:
        normalize("em", value)
    assert caught.value.code == "invalid_email"


def test_external_id_is_trimmed_and_hashed() -> None:
    # rule: Meta recommends hashing external_id; the SDK sends it in clear. Case is kept.
    assert hash_value("external_id", " Cust-42 ") == sha("Cust-42")
    assert sdk("external_id", "cust-42") is not None


def test_currency_is_uppercase_iso_4217() -> None:
    # rule: ISO 4217 sent uppercase (the SDK sends lowercase)
    assert currency_code("usd") == "USD"
    assert currency_code(" eur ") == "EUR"
    assert currency_code("XYZ") is None
    assert currency_code("dollars") is None


def test_sha256_passes_through_lowercased_and_is_never_hashed_twice() -> None:
    digest = sha("john@example.com")
    assert hash_value("em", digest.upper()) == digest
    assert hash_value("em", hash_value("em", "John@Example.com")) == digest


def test_md5_looking_values_are_not_taken_as_hashed() -> None:
    # Decision: only 64-hex counts as hashed (the SDK also passes 32-hex through). A 32-hex
    # external_id is usually a plain id and gets hashed; a 32-hex "email" is not an email.
    md5 = "0123456789abcdef0123456789abcdef"
    assert hash_value("external_id", md5) == sha(md5)
    assert sdk("external_id", md5) == md5
    with pytest.raises(FieldError):
        normalize("em", md5)


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("ph", "p:+62 812-3456-7890", "6281234567890"),  # Meta's lead-export prefix
    ("ph", "+٩٠ ٥٣٢ ١٢٣ ٤٥ ٦٧", "905321234567"),  # Arabic-Indic digits
    ("ph", "+۹۸ ۹۱۲ ۳۴۵ ۶۷۸۹", "989123456789"),  # Persian digits
    ("ph", "＋９０ ５３２ １２３ ４５ ６７", "905321234567"),  # full-width
    ("em", "e:Ana@Example.com", "ana@example.com"),
    ("zp", "z:400050", "400050"),
    ("ge", "perempuan", "f"), ("ge", "Laki-laki", "m"), ("ge", "E", "m"), ("ge", "K", "f"),
    ("ge", "Kadın", "f"), ("ge", "महिला", "f"), ("ge", "feminino", "f"),
])
def test_values_as_real_exports_write_them(field: str, value: str, expected: str) -> None:
    assert normalize(field, value) == expected
