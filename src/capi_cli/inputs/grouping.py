"""`--group-by COLUMN` (SPEC §4): adjacent rows of one order (same event name, same COLUMN value)
become one event with `contents`, `num_items` and, when no row gives the order total, a value
summed from the line items.

Exports write an order's rows together, so only the open group is held: memory stays flat with
the file. Shopify writes order-level columns (`Financial Status`, `Total`, `Cancelled at`, ...) on
an order's first row only; a continuation row's blank cells take the first row's values (fill-down)
before `--where` looks at it, so a filter keeps or drops whole orders.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

from capi_cli.errors import UsageError
from capi_cli.inputs.locales import AmountReader, ascii_digits
from capi_cli.inputs.suggest import did_you_mean

ITEM_KEYS = ("item_id", "item_quantity", "item_price")
CONFLICT = "conflicting_value"
Note = tuple[str | None, str, str]


class GroupedRecord(dict[str, Any]):
    """One group's record, keyed by the input's column names, with what merging found (notes are
    (field, code, message): conflicts are warnings, unreadable line items errors)."""

    notes: list[Note]


class _Layout:
    """Which columns of one header play which part."""

    def __init__(self, names: Sequence[str], column: str, resolve: Callable[[str], str | None], source: str) -> None:
        wanted = column.strip().lower()
        canonical = resolve(column)
        by_name = [n for n in names if n.strip().lower() == wanted]
        by_key = [n for n in names if canonical is not None and resolve(n) == canonical]
        if not (by_name or by_key):
            raise UsageError(f"--group-by {column!r}: {source} has no column {column!r}{did_you_mean(column, names)}")
        self.group = (by_name or by_key)[0]
        self.keys = {name: resolve(name) for name in names}
        self.event = next((n for n, k in self.keys.items() if k == "event_name"), None)
        self.items = {key: next((n for n, k in self.keys.items() if k == key), None) for key in ITEM_KEYS}
        self.values = [n for n, k in self.keys.items() if k == "value"]
        item_columns = {n for n in self.items.values() if n is not None}
        self.order_level = [n for n in names if n not in item_columns]


class Grouper:
    def __init__(self, column: str, resolve: Callable[[str], str | None], amounts: AmountReader | None) -> None:
        self.column = column
        self.resolve = resolve
        self.amounts = amounts
        self._layout: _Layout | None = None
        self._names: Sequence[str] | None = None

    def layout(self, names: Sequence[str], source: str) -> _Layout:
        if self._layout is None or names != self._names:
            self._layout = _Layout(names, self.column, self.resolve, source)
            self._names = list(names)
        return self._layout

    @staticmethod
    def key(layout: _Layout, row: dict[str, Any], first: dict[str, Any] | None) -> tuple[str, str]:
        event = _text(row.get(layout.event)) if layout.event else ""
        if not event and first is not None and layout.event:
            event = _text(first.get(layout.event))
        return event, _text(row.get(layout.group))

    @staticmethod
    def fill_down(layout: _Layout, row: dict[str, Any], first: dict[str, Any]) -> None:
        for name in layout.order_level:
            if not _text(row.get(name)) and _text(first.get(name)):
                row[name] = first[name]

    def merge(self, layout: _Layout, rows: list[tuple[int, dict[str, Any]]]) -> GroupedRecord:
        merged = GroupedRecord()
        notes: list[Note] = []
        first_line, first = rows[0]
        group_value = _text(first.get(layout.group))
        for name in layout.order_level:
            kept = None
            for line, row in rows:
                value = _text(row.get(name))
                if not value:
                    continue
                if kept is None:
                    kept = value
                    merged[name] = row[name]
                elif layout.keys.get(name) is None:
                    break  # an ignored or unknown column: nothing of it is sent, so no conflict
                elif value != kept:
                    notes.append((layout.keys.get(name) or name, CONFLICT,
                                  f"order {group_value}: {name} is {kept!r} on line {first_line} and {value!r} "
                                  f"on line {line}; the first is kept"))
                    break
        contents: list[dict[str, Any]] = []
        quantity_total = 0
        price_total: Decimal | None = Decimal(0)
        id_column, quantity_column, price_column = (layout.items[k] for k in ITEM_KEYS)
        for line, row in rows:
            item_id = _text(row.get(id_column)) if id_column else ""
            quantity_text = _text(row.get(quantity_column)) if quantity_column else ""
            price_text = _text(row.get(price_column)) if price_column else ""
            if not (item_id or quantity_text or price_text):
                continue
            try:
                quantity = int(Decimal(ascii_digits(quantity_text))) if quantity_text else 1
            except InvalidOperation:
                notes.append(("item_quantity", "invalid_value", f"line {line}: quantity {quantity_text!r} is not a number"))
                continue
            item: dict[str, Any] = {"id": item_id} if item_id else {}
            item["quantity"] = quantity
            quantity_total += quantity
            if price_text:
                price = self._amount(price_text)
                if price is None:
                    notes.append(("item_price", "invalid_value", f"line {line}: item price {price_text!r} is not an amount"))
                    price_total = None
                    continue
                item["item_price"] = float(price)
                if price_total is not None:
                    price_total += price * quantity
            else:
                price_total = None
            if item_id:
                contents.append(item)
        if contents:
            merged["contents"] = contents
        if quantity_total:
            merged["num_items"] = quantity_total
        if not any(_text(merged.get(name)) for name in layout.values) and price_total is not None and contents:
            # A number, not text: --locale reads the export's text, not this sum.
            merged[layout.values[0] if layout.values else "value"] = price_total
        merged.notes = notes
        return merged

    def _amount(self, text: str) -> Decimal | None:
        try:
            if self.amounts is not None:
                return Decimal(self.amounts.read(text)[0])
            return Decimal(ascii_digits(text))
        except (ValueError, InvalidOperation):
            return None


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()
