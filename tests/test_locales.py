"""inputs.locales and inputs.dates: amounts and dates as each locale writes them (properties)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pytest
from babel.numbers import format_currency, format_decimal
from hypothesis import given
from hypothesis import strategies as st

from capi_cli.inputs.dates import DateUnreadable, read_date
from capi_cli.inputs.locales import AmountReader

LOCALES = {"pt_BR": "BRL", "en_IN": "INR", "tr_TR": "TRY", "id_ID": "IDR", "en_US": "USD", "de_DE": "EUR"}
amounts = st.decimals(min_value=0, max_value=Decimal("99999999.99"), places=2, allow_nan=False, allow_infinity=False)


@pytest.mark.parametrize("locale", sorted(LOCALES))
@given(amount=amounts)
def test_an_amount_written_by_the_locale_reads_back(locale: str, amount: Decimal) -> None:
    reader = AmountReader(locale)
    plain = format_decimal(amount, format="#,##0.00", locale=locale)
    assert Decimal(reader.read(plain)[0]) == amount
    written = format_currency(amount, LOCALES[locale], locale=locale, currency_digits=False)
    value, currency = reader.read(written)
    assert (Decimal(value), currency) == (amount, LOCALES[locale])


@given(amount=st.decimals(min_value=Decimal("0.01"), max_value=Decimal("999.99"), places=2))
def test_the_other_convention_is_refused_not_guessed(amount: Decimal) -> None:
    # 39.99 in pt_BR (where "." groups thousands) must not read as 3999.
    text = f"{amount:.2f}"
    with pytest.raises(ValueError):
        AmountReader("pt_BR").read(text)


@given(moment=st.datetimes(min_value=datetime(1950, 1, 1), max_value=datetime(2060, 12, 31)))
def test_dates_read_when_unambiguous_and_by_the_locales_order_otherwise(moment: datetime) -> None:
    moment = moment.replace(second=0, microsecond=0)
    text = f"{moment:%d/%m/%Y %H:%M}"
    if moment.day > 12 or moment.day == moment.month:
        assert read_date(text) == moment
    else:
        with pytest.raises(DateUnreadable):
            read_date(text)
    assert read_date(text, day_first=True) == moment
    assert read_date(f"{moment:%m/%d/%Y %H:%M}", day_first=False) == moment
