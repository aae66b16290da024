"""Property-based fuzzing of normalize.normalize / hash_value for every hashed field (SPEC §5): any
text ends in a normalized value or a FieldError (a CapiError with a §6 code), never another
exception; hashes are 64 lowercase hex; a hash is never hashed twice; normalizing is idempotent
where Meta's rules make it so. CAPI_FUZZ=long scales the examples up (see test_fuzz_readers.py).
"""

from __future__ import annotations

import os
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capi_cli.errors import CapiError
from capi_cli.events.normalize import FieldError, hash_value, is_hashed, normalize
from capi_cli.events.validate import CODES
from capi_cli.rules import HASHED_FIELDS

LONG = os.environ.get("CAPI_FUZZ") == "long"
FUZZ = settings(max_examples=(50 if LONG else 1) * 150, deadline=None if LONG else 2000,
                suppress_health_check=[HealthCheck.too_slow])
HEX64 = re.compile(r"[0-9a-f]{64}")

# Text a hostile export holds in customer fields: any script, control characters, digits in every
# script, hashes of the wrong length or case, very long values, vanity phone numbers.
HOSTILE = st.one_of(
    st.text(max_size=40),
    st.text(st.characters(codec="utf-8"), max_size=40),
    st.from_regex(r"[+0(]?[0-9 ()\-.]{0,20}[A-Za-z]{0,4}", fullmatch=True),
    st.from_regex(r"[ A-Za-z0-9._%+\-]{0,12}@[ A-Za-z0-9.\-]{0,12}", fullmatch=True),
    st.from_regex(r"[0-9a-fA-F]{62,66}", fullmatch=True),
    st.sampled_from([
        "", " ", "\x00", "\u200b", "\ufeff", "\u202e", "NaN", "inf", "-1", "9" * 5000, "a" * 9000,
        "٠١٢٣٤٥٦٧٨٩", "+٩٠٥٣٢١٢٣٤٥٦٧", "1900-02-29", "2100-01-01", "0000-00-00", "19700101", "US-CA", "u.s.",
        "Ελλάδα", "ǅ", "ﬀ", "İstanbul", "ß", "\u0301", "e\u0301", "+1 800 FLOWERS", "00 00", "+", "whatsapp:+",
    ]),
)
COUNTRIES = st.sampled_from([None, "US", "IN", "GB", "TR", "BR", "us", "ZZ", "XK", "001"])


def _normalized(field: str, value: str, country: str | None) -> str | None:
    try:
        result = normalize(field, value, country)
    except FieldError as exc:
        assert exc.field == field or field == "ph"
        assert exc.code in CODES
        assert exc.message and "\n" not in exc.message
        return None
    except CapiError:  # any other of the project's own errors is allowed too
        return None
    assert isinstance(result, str) and result == result.strip() and result
    return result


@FUZZ
@given(field=st.sampled_from(HASHED_FIELDS), value=HOSTILE, country=COUNTRIES)
def test_normalize_any_text(field: str, value: str, country: str | None) -> None:
    result = _normalized(field, value, country)
    if result is None:
        return
    digest = hash_value(field, value, country)
    assert HEX64.fullmatch(digest)
    # A digest is passed through (lowercased), never hashed a second time.
    assert hash_value(field, digest, country) == digest
    assert hash_value(field, digest.upper(), country) == digest
    if field == "ph" and not is_hashed(value.strip()):
        assert result.isascii() and result.isdigit() and not result.startswith("0")
    if field in ("em", "fn", "ln", "ct", "st", "zp", "country", "ge"):
        assert result == result.lower() or is_hashed(result)


@FUZZ
@given(field=st.sampled_from(["em", "ph", "ge", "db", "ct", "st", "zp", "country", "external_id"]),
       value=HOSTILE, country=COUNTRIES)
def test_normalize_is_idempotent(field: str, value: str, country: str | None) -> None:
    """What capi sends, read again, is sent the same: hashing a normalized value is stable."""
    first = _normalized(field, value, country)
    if first is None:
        return
    if field == "ph":
        country = None  # normalized phones carry their country code
    assert _normalized(field, first, country) == first


@FUZZ
@given(value=st.from_regex(r"[0-9a-fA-F]{64}", fullmatch=True), field=st.sampled_from(HASHED_FIELDS))
def test_sha256_input_passes_through_lowercased(value: str, field: str) -> None:
    assert hash_value(field, f"  {value} ") == value.lower()


@FUZZ
@given(value=st.from_regex(r"[0-9a-fA-F]{63}|[0-9a-fA-F]{65}", fullmatch=True), field=st.sampled_from(HASHED_FIELDS))
def test_wrong_length_hex_is_not_taken_for_a_hash(value: str, field: str) -> None:
    result = _normalized(field, value, None)
    if result is not None:
        assert hash_value(field, value) != value.lower()
