"""Amounts and dates written the way a locale writes them (SPEC §4 `--locale`).

The separators, currency symbols and the order of day and month come from Babel (the Unicode
CLDR data), not from rules of our own; what is ours is only how cautious the reading is: an
amount whose grouping does not fit the locale (`39.99` in pt_BR) is an error, never a guess.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

# Digits of other scripts people type in phones, amounts and dates: Arabic-Indic, Persian
# (Extended Arabic-Indic), Devanagari, Bengali and full-width forms, to ASCII.
_DIGIT_BLOCKS = (0x0660, 0x06F0, 0x0966, 0x09E6, 0xFF10)
DIGITS = str.maketrans({**{chr(block + n): str(n) for block in _DIGIT_BLOCKS for n in range(10)}, "\uff0b": "+"})

# Currency spellings that CLDR does not give as a symbol but shops write (Turkish lira "TL",
# Indian rupee "Rs"/"Rs.").
EXTRA_SYMBOLS = {"TL": "TRY", "RS": "INR", "RS.": "INR"}

_AMOUNT = re.compile(r"([^\d+\-,]*?)\s*([+-]?\d[\d.,'\s\u00a0\u202f]*)\s*(\D*?)")


def ascii_digits(text: str) -> str:
    return text if text.isascii() else text.translate(DIGITS)


def check_locale(text: str) -> str:
    """A locale name as Babel knows it (`pt_BR`); ValueError naming the problem."""
    from babel import Locale, UnknownLocaleError

    try:
        return str(Locale.parse(text.strip().replace("-", "_")))
    except (UnknownLocaleError, ValueError, TypeError):
        raise ValueError(f"unknown locale {text!r} (use a code like en_IN, pt_BR, tr_TR or id_ID)") from None


@lru_cache(maxsize=8)
def day_first(locale: str) -> bool:
    """Whether the locale writes the day before the month (`dd/MM/y`), from its short date pattern."""
    from babel.dates import get_date_format

    pattern = get_date_format("short", locale=locale).pattern
    return pattern.find("d") < pattern.find("M")


class AmountReader:
    """Reads `R$ 39,99`, `1.499,00`, `₹1,49,900.00`, `Rp 350.000`, `2.499,90 TL` in one locale."""

    def __init__(self, locale: str) -> None:
        from babel import Locale
        from babel.numbers import (
            get_decimal_symbol,
            get_group_symbol,
            get_territory_currencies,
            list_currencies,
        )

        loc = Locale.parse(locale)
        self.locale = str(loc)
        self.decimal = get_decimal_symbol(loc)
        group = get_group_symbol(loc)
        # CLDR writes some groups with a (narrow) no-break space; people type a plain space.
        self.groups = {group, " ", "\u00a0", "\u202f"} if group.isspace() else {group}
        self.codes = {code.upper() for code in list_currencies()}
        own = get_territory_currencies(loc.territory) if loc.territory else []
        symbols: dict[str, str] = {}
        for code, symbol in loc.currency_symbols.items():
            symbols.setdefault(symbol.upper(), code)
        for code in own[:1]:  # the locale's own currency wins an ambiguous symbol ("$" in es_MX)
            symbols[loc.currency_symbols.get(code, code).upper()] = code
            from babel.numbers import get_currency_symbol

            symbols[get_currency_symbol(code, locale=loc).upper()] = code
        self.symbols = {**symbols, **EXTRA_SYMBOLS}

    def read(self, raw: Any) -> tuple[str, str | None]:
        """(the amount as a plain decimal string, the currency its symbol names or None);
        ValueError with the reason when it does not read as an amount of this locale."""
        if not isinstance(raw, str):
            return str(raw), None
        text = ascii_digits(raw.strip())
        match = _AMOUNT.fullmatch(text)
        if match is None:
            raise ValueError(f"{raw!r} is not an amount")
        before, number, after = match.group(1).strip(), match.group(2).strip(), match.group(3).strip()
        if before and after:
            raise ValueError(f"{raw!r} is not an amount")
        currency = None
        if before or after:
            symbol = (before or after).upper()
            currency = symbol if symbol in self.codes else self.symbols.get(symbol)
            if currency is None:
                raise ValueError(f"{raw!r}: unknown currency symbol {before or after!r}")
        return self._number(number, raw), currency

    def _number(self, number: str, raw: str) -> str:
        sign = ""
        if number[0] in "+-":
            sign, number = ("-" if number[0] == "-" else ""), number[1:]
        whole, fraction = number, ""
        if self.decimal in number:
            whole, _, fraction = number.rpartition(self.decimal)
            if not fraction.isdigit():
                raise ValueError(f"{raw!r} does not read as an amount in {self.locale}")
        chunks = [whole]
        for group in self.groups:
            if group in whole:
                chunks = whole.split(group)
                break
        # Groups of 3 digits (or 2 before the last 3, as India writes lakhs): anything else means
        # the amount was written in another convention, and reading it anyway would be a guess.
        if len(chunks) > 1 and (len(chunks[-1]) != 3 or any(len(c) not in (2, 3) for c in chunks[1:-1])
                                or not 1 <= len(chunks[0]) <= 3):
            raise ValueError(f"{raw!r} does not read as an amount in {self.locale} "
                             f"(decimal {self.decimal!r}, groups {sorted(self.groups)[0]!r})")
        digits = "".join(chunks)
        if not digits.isdigit():
            raise ValueError(f"{raw!r} does not read as an amount in {self.locale}")
        try:
            value = Decimal(f"{sign}{digits}.{fraction or '0'}")
        except InvalidOperation:
            raise ValueError(f"{raw!r} is not an amount") from None
        return format(value.normalize(), "f") if fraction.strip("0") else f"{sign}{int(digits)}"
