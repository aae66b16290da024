"""The fast path for international phone numbers agrees with the phonenumbers library."""

from __future__ import annotations

import phonenumbers
from hypothesis import given, settings
from hypothesis import strategies as st

from capi_cli.events.phones import fast_international, library_parse, normalize_phone

_REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)
_TYPES = [phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE,
          phonenumbers.PhoneNumberType.TOLL_FREE]


@st.composite
def near_valid_digits(draw: st.DrawFn) -> str:
    """Digits with country code: example numbers of every region with their tail changed."""
    region = draw(st.sampled_from(_REGIONS))
    example = phonenumbers.example_number_for_type(region, draw(st.sampled_from(_TYPES)))
    if example is None:
        example = phonenumbers.example_number(region)
    assert example is not None
    digits = phonenumbers.format_number(example, phonenumbers.PhoneNumberFormat.E164)[1:]
    cut = draw(st.integers(min_value=0, max_value=min(4, len(digits) - 2)))
    tail = draw(st.text("0123456789", min_size=cut, max_size=cut + 1))
    return digits[: len(digits) - cut] + tail


@given(near_valid_digits())
@settings(max_examples=400, deadline=None)
def test_fast_path_never_disagrees_with_the_library(digits: str) -> None:
    fast = fast_international(digits)
    if fast is not None:
        assert fast == library_parse.__wrapped__("+" + digits, None)


@given(st.text("0123456789", min_size=1, max_size=18))
@settings(max_examples=200, deadline=None)
def test_fast_path_on_arbitrary_digits(digits: str) -> None:
    fast = fast_international(digits)
    if fast is not None:
        assert fast == library_parse.__wrapped__("+" + digits, None)


def test_fast_path_covers_ordinary_international_numbers() -> None:
    for text in ("14155552671", "447911123456", "905321234567", "5511987654321", "919876543210"):
        assert fast_international(text) == text


def test_leading_zero_numbers_go_to_the_library() -> None:
    # Italian fixed lines keep their leading zero after the country code.
    assert fast_international("390612345678") is None
    assert normalize_phone("+39 06 1234 5678", None) == "390612345678"


def test_default_country_reads_national_numbers() -> None:
    assert normalize_phone("030 1234567", "DE") == "49301234567"
    assert normalize_phone("030 1234567", None) is None
