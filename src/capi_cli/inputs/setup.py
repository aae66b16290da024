"""The input options of one run, worked out once: mapping, constants, filters, groups, locale."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from capi_cli.events.fields import load_map_spec, parse_sets, resolve_columns


class InputSetup:
    """--preset, --map, --set, --where, --group-by, --locale (setting) and --date-format of a run.

    Without any of them (the common case) nothing here costs a thing per row."""

    def __init__(self, options: Any, settings: Any) -> None:
        reshape = options.reshape
        self.locale: str | None = getattr(settings, "locale", None)
        self.date_format: str | None = None
        self._map_columns: dict[str, str] = {}  # lowercased --map key -> as written
        self.where: list[str] = []
        self.group_by: str | None = None
        if reshape is None and not options.map_file:
            self.mapping = None
            self.sets = parse_sets(options.sets) if options.sets else None
            return
        from capi_cli.inputs.reshape import check_date_format, combine, preset_spec

        mapped = load_map_spec(options.map_file) if options.map_file else None
        spec = combine(preset_spec(reshape), mapped, reshape)
        self.mapping = resolve_columns(spec.columns, f"--map {options.map_file}" if mapped else "--preset")
        if mapped is not None:
            self._map_columns = {str(k).strip().lower(): str(k) for k in mapped.columns}
        sets = {**parse_sets(spec.sets), **(parse_sets(options.sets) if options.sets else {})}
        self.sets = sets or None
        self.where = spec.where
        self.group_by = spec.group_by
        if reshape is not None and reshape.date_format:
            self.date_format = check_date_format(reshape.date_format)
        if self.where:
            from capi_cli.inputs.filters import parse_where

            for text in self.where:
                parse_where(text)  # a malformed condition is a usage error before anything is read

    def localizer(self) -> Any:
        if not self.locale:
            return None
        from capi_cli.inputs.reshape import Localizer

        return Localizer(self.locale)

    def plan(self, mapper: Any) -> Any:
        """The order-dependent part (inputs.reshape.InputPlan), or None when there is none."""
        if not (self.where or self.group_by):
            return None
        from capi_cli.inputs.reshape import InputPlan

        return InputPlan(self.where, self.group_by, mapper.resolve, self.locale)

    def unused_map_keys(self, path: str | Path) -> list[tuple[str, str]]:
        """(key, message) for each --map key that names no column of a CSV file's header."""
        if not self._map_columns or str(path) == "-":
            return []
        from capi_cli.events.readers import format_for

        if format_for(path) not in ("csv", "tsv"):
            return []
        import csv

        try:
            with open(path, encoding="utf-8-sig", newline="") as stream:
                header = next(csv.reader(stream, delimiter="\t" if format_for(path) == "tsv" else ","), [])
        except (OSError, UnicodeDecodeError, csv.Error):
            return []
        present = {name.strip().lower() for name in header}
        return [(original, f"--map key {original!r} matches no column of {Path(path).name}"
                           f"{_close(original, header)}")
                for lowered, original in self._map_columns.items() if lowered not in present]


def _close(name: str, header: list[str]) -> str:
    from capi_cli.inputs.suggest import did_you_mean

    return did_you_mean(name, header)


def suggestion(column: str) -> str:
    """'did you mean' for an unknown column among the canonical fields and their aliases."""
    from capi_cli.events.fields import ALIASES, CANONICAL_KEYS
    from capi_cli.inputs.suggest import did_you_mean

    return did_you_mean(column, [*CANONICAL_KEYS, *ALIASES])
