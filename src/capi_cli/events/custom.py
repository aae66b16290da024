"""custom_data and the passed-through event fields of one record (SPEC §4)."""

from __future__ import annotations

import json
import math
from typing import Any

from capi_cli.events.fields import CUSTOM_PROPERTIES, first_value
from capi_cli.events.normalize import currency_code
from capi_cli.rules import DELIVERY_CATEGORIES, VALUE_REQUIRED_EVENTS

Errors = list[tuple[str | None, str, str]]
_TRUE = frozenset({"true", "1", "yes", "y"})
_FALSE = frozenset({"false", "0", "no", "n"})


def custom_data(
    record: dict[str, Any], name: str | None, default_currency: str | None, errors: Errors
) -> dict[str, Any]:
    """custom_data of one record (SPEC §4): value, currency (ISO 4217, uppercase), the standard
    fields, and custom properties."""
    custom: dict[str, Any] = {}
    raw_value = record.get("value")
    if raw_value is not None:
        value = _number(raw_value)
        if value is None or value < 0:
            errors.append(("value", "invalid_value", f"value {raw_value!r} is not a non-negative number"))
        else:
            custom["value"] = value
    elif name in VALUE_REQUIRED_EVENTS:
        errors.append(("value", "invalid_value", f"{name} needs a value (add a value column)"))

    raw_currency = record.get("currency")
    if raw_currency is None and (raw_value is not None or name in VALUE_REQUIRED_EVENTS):
        raw_currency = default_currency
    if raw_currency is not None:
        currency = currency_code(str(raw_currency))
        if currency is None:
            errors.append(("currency", "invalid_currency", f"currency {raw_currency!r} is not an ISO 4217 code"))
        else:
            custom["currency"] = currency
    elif raw_value is not None or name in VALUE_REQUIRED_EVENTS:
        needs = "a value" if raw_value is not None else name
        errors.append(("currency", "missing_field", f"{needs} needs a currency: add the column or set CAPI_CURRENCY"))

    for key in ("order_id", "content_type", "content_name", "content_category"):
        if key in record:
            text = first_value(record[key])
            if text is not None:
                custom[key] = text
    if (ids := record.get("content_ids")) is not None:
        custom["content_ids"] = _json_list(ids) if isinstance(ids, str) else [str(i) for i in _values(ids)]
    contents = record.get("contents")
    if contents is None and "item_id" in record:
        contents = _line_item(record, errors)
    if contents is not None:
        parsed = _contents(contents)
        if parsed is None:
            errors.append(("contents", "invalid_value", "contents: give a JSON list of {id, quantity, item_price}"))
        else:
            custom["contents"] = parsed
    if (items := record.get("num_items")) is not None:
        count = _number(items)
        if count is None or count < 0 or count != int(count):
            errors.append(("num_items", "invalid_value", f"num_items {items!r} is not a whole number"))
        else:
            custom["num_items"] = int(count)
    if (ltv := record.get("predicted_ltv")) is not None:
        number = _number(ltv)
        if number is None:
            errors.append(("predicted_ltv", "invalid_value", f"predicted_ltv {ltv!r} is not a number"))
        else:
            custom["predicted_ltv"] = number
    if (delivery := record.get("delivery_category")) is not None:
        category = str(delivery).strip().lower()
        if category not in DELIVERY_CATEGORIES:
            errors.append(
                ("delivery_category", "invalid_value",
                 f"delivery_category {delivery!r}: use {', '.join(sorted(DELIVERY_CATEGORIES))}")
            )
        else:
            custom["delivery_category"] = category
    properties = record.get(CUSTOM_PROPERTIES)
    if properties:
        custom.update(properties)
    return custom


def passthrough(record: dict[str, Any], payload: dict[str, Any], errors: Errors) -> None:
    """Top-level fields passed through: opt_out, data_processing_options (+ country, state)."""
    if (opt_out := record.get("opt_out")) is not None:
        flag = _flag(opt_out)
        if flag is None:
            errors.append(("opt_out", "invalid_value", f"opt_out {opt_out!r}: use true or false"))
        else:
            payload["opt_out"] = flag
    if (options := record.get("data_processing_options")) is not None:
        payload["data_processing_options"] = (
            _json_list(options) if isinstance(options, str) and options.strip() != "[]" else
            [] if isinstance(options, str) else [str(o) for o in _values(options)]
        )
    for key in ("data_processing_options_country", "data_processing_options_state"):
        if (raw := record.get(key)) is not None:
            number = _number(raw)
            if number is None or number != int(number):
                errors.append((key, "invalid_value", f"{key} {raw!r} is not a whole number"))
            else:
                payload[key] = int(number)


def _number(raw: Any) -> float | int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    try:
        number = float(raw) if isinstance(raw, float) else float(str(raw).strip())
    except ValueError:
        return None
    if not math.isfinite(number):
        return None
    return int(number) if number.is_integer() and abs(number) < 1e15 else number


def _flag(raw: Any) -> bool | None:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    return True if text in _TRUE else False if text in _FALSE else None


def _json_list(text: str) -> list[Any]:
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            value = json.loads(stripped)
        except ValueError:
            value = None
        if isinstance(value, list):
            return value
    return [part.strip() for part in stripped.split("|") if part.strip()]


def _line_item(record: dict[str, Any], errors: Errors) -> list[dict[str, Any]] | None:
    """A row that is one line item (item_id, item_quantity, item_price) without --group-by."""
    item: dict[str, Any] = {"id": first_value(record["item_id"])}
    quantity = _number(record.get("item_quantity", 1))
    if quantity is None or quantity < 0 or quantity != int(quantity):
        errors.append(("item_quantity", "invalid_value", f"item_quantity {record.get('item_quantity')!r} is not a whole number"))
        return None
    item["quantity"] = int(quantity)
    if (raw_price := record.get("item_price")) is not None:
        price = _number(raw_price)
        if price is None:
            errors.append(("item_price", "invalid_value", f"item_price {raw_price!r} is not a number"))
            return None
        item["item_price"] = price
    return [item]


def _contents(raw: Any) -> list[dict[str, Any]] | None:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return None
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list) or not all(isinstance(item, dict) and item.get("id") is not None for item in raw):
        return None
    return raw


def _values(value: Any) -> list[str]:
    if isinstance(value, list | tuple):
        return [str(v) for v in value if v is not None and str(v).strip()]
    return [part for part in str(value).split("|") if part.strip()]
