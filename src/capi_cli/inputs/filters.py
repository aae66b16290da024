"""`--where 'COLUMN=VALUE'` on the input's own column names (SPEC §4): all must hold; `a|b` are
alternatives, `!=` negates, an empty VALUE means a blank cell. Values compare trimmed, any case."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from capi_cli.errors import UsageError


@dataclass(frozen=True, slots=True)
class Condition:
    column: str  # lowercased, trimmed
    values: frozenset[str]
    negated: bool
    text: str  # as written, for messages

    def holds(self, value: str | None) -> bool:
        found = (value or "").strip().lower() in self.values
        return found != self.negated


def parse_where(text: str) -> Condition:
    column, op, value = text.partition("!=")
    negated = bool(op)
    if not op:
        column, op, value = text.partition("=")
    if not op or not column.strip():
        raise UsageError(f"--where {text!r}: write COLUMN=VALUE or COLUMN!=VALUE (e.g. 'Financial Status=paid')")
    values = frozenset(part.strip().lower() for part in value.split("|"))
    return Condition(column.strip().lower(), values, negated, text)


class RowFilter:
    """All the conditions of a run; `keeps(record)` on a record keyed by the input's column names."""

    def __init__(self, conditions: Sequence[Condition]) -> None:
        self.conditions = tuple(conditions)
        self._checked: set[tuple[str, ...]] = set()

    def check_columns(self, names: Sequence[str], source: str) -> None:
        """A condition on a column the input does not have is a usage error, not an empty result."""
        key = tuple(names)
        if key in self._checked:
            return
        lowered = {name.strip().lower() for name in names}
        for condition in self.conditions:
            if condition.column not in lowered:
                from capi_cli.inputs.suggest import did_you_mean

                hint = did_you_mean(condition.column, names)
                raise UsageError(f"--where {condition.text!r}: {source} has no column {condition.column!r}{hint}")
        self._checked.add(key)

    def keeps(self, record: Mapping[str, str | None]) -> bool:
        lowered = {str(name).strip().lower(): value for name, value in record.items()}
        return all(c.holds(None if (v := lowered.get(c.column)) is None else str(v)) for c in self.conditions)
