"""Parity with Meta's official Python SDK for canonical inputs (SPEC §5).

For inputs that are already canonical (lowercase, trimmed, well-formed) our hash must equal
`facebook_business.adobjects.serverside.normalize.Normalize.normalize_field`.
"""

from __future__ import annotations

import phonenumbers
import pycountry
import pytest
from facebook_business.adobjects.serverside.normalize import Normalize
from hypothesis import given, settings
from hypothesis import strategies as st

from capi_cli.events.normalize import hash_value

LOWER = "abcdefghijklmnopqrstuvwxyz"
DIGITS = "0123456789"
# Lowercase letters of several scripts, all NFC and unchanged by .lower(): canonical names.
NAME_LETTERS = LOWER + "éüñçøåöäàèìòùαβγδεжзийклمحدعليशर"

emails = st.builds(
    lambda local, domain, tld: f"{local}@{domain}.{tld}",
    st.text(LOWER + DIGITS + "._%+-", min_size=1, max_size=20),
    st.text(LOWER + DIGITS + "-", min_size=1, max_size=15),
    st.text(LOWER, min_size=2, max_size=6),
)
names = st.text(NAME_LETTERS, min_size=1, max_size=20)
cities = st.text(LOWER, min_size=1, max_size=20)
states = st.text(LOWER, min_size=2, max_size=2)
zips = st.one_of(st.text(DIGITS, min_size=5, max_size=5), st.text(LOWER + DIGITS, min_size=3, max_size=8))
countries = st.sampled_from(sorted(c.alpha_2.lower() for c in pycountry.countries))

_REGIONS = sorted(r for r in phonenumbers.SUPPORTED_REGIONS if phonenumbers.example_number(r) is not None)


@st.composite
def phones(draw: st.DrawFn) -> str:
    """Valid numbers as digits with country code, the canonical form."""
    region = draw(st.sampled_from(_REGIONS))
    example = phonenumbers.example_number(region)
    assert example is not None
    nsn = phonenumbers.national_significant_number(example)
    tail = draw(st.text(DIGITS, min_size=2, max_size=2))
    candidate: phonenumbers.PhoneNumber = phonenumbers.parse(f"+{example.country_code}{nsn[:-2]}{tail}", None)
    if not phonenumbers.is_valid_number(candidate):
        candidate = example
    return phonenumbers.format_number(candidate, phonenumbers.PhoneNumberFormat.E164)[1:]


CASES = {"em": emails, "ph": phones(), "fn": names, "ln": names, "ct": cities, "st": states, "zp": zips,
         "country": countries}


@pytest.mark.parametrize("field", list(CASES))
def test_hash_equals_sdk_for_canonical_input(field: str) -> None:
    @settings(max_examples=60, deadline=None)
    @given(CASES[field])
    def check(value: str) -> None:
        assert hash_value(field, value) == Normalize.normalize_field(field, value)

    check()


@given(st.text("0123456789abcdef", min_size=64, max_size=64), st.sampled_from(list(CASES)))
@settings(max_examples=30, deadline=None)
def test_sha256_values_pass_through_like_the_sdk(digest: str, field: str) -> None:
    assert hash_value(field, digest) == Normalize.normalize_field(field, digest) == digest


def test_sdk_example_country_us() -> None:
    # The SDK's own test vector (meta-facts.md).
    assert hash_value("country", "us") == "79adb2a2fce5c6ba215fe5f27f532d4e7edbac4b6a5e09e1ef3a08084a904621"
