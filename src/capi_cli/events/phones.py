"""Phone numbers to Meta's `ph` form: digits with country code, no `+`, no leading zeros.

The `phonenumbers` library decides what a valid number is. Its parser costs ~25 µs a number,
more than everything else a row needs together, so numbers written internationally take a fast
path that applies the same metadata (country code, national prefix, the regions' validity
patterns) without the parser; anything the fast path is not sure about goes to the library.
tests/test_normalize_phones.py checks that both paths agree.
"""

from __future__ import annotations

import re
from functools import cache, lru_cache

import phonenumbers
from phonenumbers import PhoneMetadata
from phonenumbers.phonenumberutil import COUNTRY_CODE_TO_REGION_CODE, NumberParseException

# Characters people put inside phone numbers: spaces, dashes, dots, brackets, slashes.
_FORMATTING = str.maketrans("", "", " -().\t/\u00a0\u2010\u2011\u2012\u2013\u2014\u2212")
_PREFIXES = ("whatsapp:", "tel:")
_NON_GEO = "001"
_CALLING_CODES = {str(cc): cc for cc in COUNTRY_CODE_TO_REGION_CODE}

_Desc = tuple[frozenset[int] | None, re.Pattern[str]]


def _desc(desc: object) -> _Desc | None:
    pattern = getattr(desc, "national_number_pattern", None)
    if desc is None or not pattern:
        return None
    lengths = getattr(desc, "possible_length", None) or ()
    return (frozenset(lengths) if lengths else None, re.compile(pattern))


def _matches(desc: _Desc | None, nsn: str) -> bool:
    # phonenumbers' _is_number_matching_desc: possible lengths first, then a full match.
    if desc is None:
        return False
    lengths, pattern = desc
    if lengths is not None and len(nsn) not in lengths:
        return False
    return pattern.fullmatch(nsn) is not None


_TYPES = ("premium_rate", "toll_free", "shared_cost", "voip", "personal_number", "pager", "uan", "voicemail",
          "fixed_line", "mobile")


class _Region:
    __slots__ = ("leading", "general", "by_length", "any_length")

    def __init__(self, metadata: PhoneMetadata) -> None:
        self.leading = re.compile(metadata.leading_digits) if metadata.leading_digits else None
        self.general = _desc(metadata.general_desc)
        types = [d for d in (_desc(getattr(metadata, n, None)) for n in _TYPES) if d is not None]
        # One alternation per number length of all the type patterns allowed at that length: the
        # same answer as trying each type in turn, in one regex call.
        lengths = set().union(*(t[0] for t in types if t[0] is not None)) if types else set()
        self.by_length = {
            length: re.compile("|".join(f"(?:{t[1].pattern})" for t in types if t[0] is None or length in t[0]))
            for length in lengths
        }
        unbounded = [t for t in types if t[0] is None]
        self.any_length = re.compile("|".join(f"(?:{t[1].pattern})" for t in unbounded)) if unbounded else None

    def valid(self, nsn: str) -> bool:
        # A number is valid when its type is known (phonenumbers' _number_type_helper != UNKNOWN).
        if not _matches(self.general, nsn):
            return False
        combined = self.by_length.get(len(nsn), self.any_length)
        return combined is not None and combined.fullmatch(nsn) is not None


class _CallingCode:
    __slots__ = ("national_prefix", "regions")

    def __init__(self, regions: list[_Region], national_prefix: re.Pattern[str] | None) -> None:
        self.regions = regions
        self.national_prefix = national_prefix


@cache
def _calling_code(cc: int) -> _CallingCode | None:
    region_codes = COUNTRY_CODE_TO_REGION_CODE.get(cc)
    if not region_codes or _NON_GEO in region_codes:
        return None
    regions = []
    for code in region_codes:
        metadata = PhoneMetadata.metadata_for_region(code, None)
        if metadata is None:
            return None
        regions.append(_Region(metadata))
    main = PhoneMetadata.metadata_for_region(region_codes[0], None)
    prefix = main.national_prefix_for_parsing if main is not None else None
    return _CallingCode(regions, re.compile(prefix) if prefix else None)


def fast_international(digits: str) -> str | None:
    """`digits` (after a `+`) when they are surely a valid number as phonenumbers sees it, else None."""
    if not digits or digits[0] == "0":
        return None
    for size in (1, 2, 3):
        cc = _CALLING_CODES.get(digits[:size])
        if cc is not None:
            break
    else:
        return None
    nsn = digits[size:]
    # A leading zero (Italy) or a national prefix written after the country code ("+44 0...")
    # needs the library's rules.
    if not nsn or nsn[0] == "0":
        return None
    code = _calling_code(cc)
    if code is None:
        return None
    if code.national_prefix is not None and code.national_prefix.match(nsn):
        return None
    regions = code.regions
    if len(regions) == 1:
        return digits if regions[0].valid(nsn) else None
    # phonenumbers' region_code_for_number: the first region whose leading digits match, or that
    # validates the number; the number is then valid only for that region.
    for region in regions:
        if region.leading is not None:
            if region.leading.match(nsn):
                return digits if region.valid(nsn) else None
        elif region.valid(nsn):
            return digits
    return None


@lru_cache(maxsize=1 << 12)
def library_parse(text: str, region: str | None) -> str | None:
    """The number as phonenumbers parses it, as digits with country code; None if not valid."""
    try:
        number = phonenumbers.parse(text, region)
    except NumberParseException:
        return None
    if not phonenumbers.is_valid_number(number):
        return None
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)[1:]


def normalize_phone(value: str, default_country: str | None) -> str | None:
    """Digits with country code, or None when the number is invalid or impossible.

    `+` or `00` means international. Otherwise the default country decides; a number that is not
    valid there but is valid read as international (a CRM that stored "447911123456") is taken
    that way. Without a default country the digits must start with a country code.
    """
    # Not cached: most phones are one per customer. The slow path (library_parse) is.
    text = value.strip()
    if text[:1].isalpha():
        lowered = text[:9].lower()
        for prefix in _PREFIXES:
            if lowered.startswith(prefix):
                text = text[len(prefix):].strip()
                break
    text = text.translate(_FORMATTING)
    if text.startswith("+"):
        international, digits = True, text[1:]
    elif text.startswith("00"):
        international, digits = True, text[2:]
    else:
        international, digits = False, text
    if not (digits.isascii() and digits.isdigit()):
        return None
    if not international and default_country:
        national = library_parse(digits, default_country.upper())
        if national is not None:
            return national
    return fast_international(digits) or library_parse("+" + digits, None)
