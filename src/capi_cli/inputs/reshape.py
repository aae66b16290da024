"""What `--preset`, `--map`, `--set`, `--where`, `--group-by`, `--locale` and `--date-format` make of
the input before events are built (SPEC §4, in its order: fill-down within a group, `--where` on the
input's own columns, mapping by preset then --map then --set, then grouping).

`InputPlan.records` is the part that depends on row order (filters count rows, groups join
adjacent rows): it runs in the reading process. `Localizer` reads amounts and dates record by
record and runs wherever the record is built, worker processes included.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from capi_cli.errors import UsageError
from capi_cli.inputs.filters import RowFilter, parse_where
from capi_cli.inputs.grouping import Grouper
from capi_cli.inputs.presets import MapSpec, load_preset


@dataclass
class Reshape:
    """The input options of `validate` and `send` beyond --map and --set."""

    preset: str | None = None
    where: Sequence[str] = ()
    group_by: str | None = None
    date_format: str | None = None


def check_date_format(fmt: str) -> str:
    sample = datetime(2026, 1, 31, 13, 45, 30)
    try:
        if "%" not in fmt or datetime.strptime(sample.strftime(fmt), fmt) is None:
            raise ValueError
    except ValueError:
        raise UsageError(f"--date-format {fmt!r}: not a strptime format (e.g. '%d/%m/%Y %H:%M')") from None
    return fmt


def combine(preset: MapSpec | None, mapped: MapSpec | None, reshape: Reshape | None) -> MapSpec:
    """Preset, then --map on top; --group-by and --where given on the command line win."""
    spec = MapSpec()
    for layer in (preset, mapped):
        if layer is None:
            continue
        spec.columns.update(layer.columns)
        spec.sets.update(layer.sets)
        spec.group_by = layer.group_by or spec.group_by
        if layer.where:
            spec.where = list(layer.where)
    if reshape is not None:
        spec.group_by = reshape.group_by or spec.group_by
        if reshape.where:
            spec.where = list(reshape.where)  # the preset's filters are defaults
    return spec


def preset_spec(reshape: Reshape | None) -> MapSpec | None:
    return load_preset(reshape.preset) if reshape is not None and reshape.preset else None


class InputPlan:
    """The order-dependent reshaping of one run: filters and groups. `filtered` counts rows left out."""

    def __init__(self, where: Sequence[str], group_by: str | None, resolve: Any, locale: str | None) -> None:
        self.row_filter = RowFilter([parse_where(text) for text in where]) if where else None
        amounts = None
        if locale:
            from capi_cli.inputs.locales import AmountReader

            amounts = AmountReader(locale)
        self.grouper = Grouper(group_by, resolve, amounts) if group_by else None
        self.filtered = 0

    @property
    def active(self) -> bool:
        return self.row_filter is not None or self.grouper is not None

    def records(self, items: Iterable[tuple[int, Any]], source: str) -> Iterator[tuple[int, Any]]:
        from capi_cli.events.readers import Malformed

        grouper, row_filter = self.grouper, self.row_filter
        group: list[tuple[int, dict[str, Any]]] = []
        first: dict[str, Any] | None = None
        key: tuple[str, str] | None = None
        layout = None
        first_record = True
        header: Any = None  # the reader gives every row of a file the same header list
        for line, raw in items:
            if isinstance(raw, Malformed) or not isinstance(raw, tuple | Mapping):
                if group and layout is not None and grouper is not None:
                    yield group[0][0], grouper.merge(layout, group)
                group, first, key = [], None, None
                yield line, raw
                continue
            row = dict(zip(raw[0], raw[1], strict=False)) if type(raw) is tuple else dict(raw)
            # A CSV header must have the columns named; a JSON record may just leave a key out
            # (read as blank), so only the first record is checked.
            if (type(raw) is tuple and raw[0] is not header) or first_record:
                header = raw[0] if type(raw) is tuple else None
                names = list(raw[0]) if type(raw) is tuple else [str(n) for n in row]
                if row_filter is not None:
                    row_filter.check_columns(names, source)
                if grouper is not None:
                    layout = grouper.layout(names, source)
                first_record = False
            if grouper is not None and layout is not None:
                row_key = grouper.key(layout, row, first)
                if row_key != key:
                    if group:
                        yield group[0][0], grouper.merge(layout, group)
                    group, first, key = [], row, row_key
                else:
                    grouper.fill_down(layout, row, first)  # type: ignore[arg-type]
            if row_filter is not None and not row_filter.keeps(row):
                self.filtered += 1
                continue
            if grouper is None:
                yield line, row
            else:
                group.append((line, row))
        if group and layout is not None and grouper is not None:
            yield group[0][0], grouper.merge(layout, group)


class Localizer:
    """Amounts and the date of birth of one mapped record the locale's way (`--locale`); the
    event time is read by the builder (events.times), which knows `--date-format` too."""

    def __init__(self, locale: str) -> None:
        from capi_cli.inputs.locales import AmountReader, day_first

        self.amounts = AmountReader(locale)
        self.day_first = day_first(locale)

    def __call__(self, record: dict[str, Any], errors: list[tuple[str | None, str, str]]) -> None:
        from capi_cli.inputs.dates import DateUnreadable, read_date

        for key in ("value", "predicted_ltv"):
            raw = record.get(key)
            if type(raw) is not str:
                continue
            try:
                amount, currency = self.amounts.read(raw)
            except ValueError as exc:
                errors.append((key, "invalid_value", str(exc)))
                del record[key]
                continue
            record[key] = amount
            if currency is not None:
                self._currency(record, currency, raw, errors)
        born = record.get("db")
        if type(born) is str and not born.strip()[:4].isdigit():
            try:
                record["db"] = read_date(born, self.day_first).date().isoformat()
            except DateUnreadable:
                pass  # the normalizer says what is wrong with it

    @staticmethod
    def _currency(record: dict[str, Any], currency: str, raw: str, errors: list[tuple[str | None, str, str]]) -> None:
        given = record.get("currency")
        if given is None:
            record["currency"] = currency
        elif str(given).strip().upper() != currency:
            errors.append(("currency", "invalid_currency", f"the amount {raw!r} is in {currency}, the currency column says {given!r}"))
