"""Validation codes, problems, and the validation report (SPEC §6)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from capi_cli.events.pipeline import BuiltEvent

ERROR = "error"
MAX_MESSAGE_CHARS = 300
WARNING = "warning"

# code -> what a user does about it (the human report prints this once per group).
CODES: dict[str, str] = {
    "unknown_event_name": "use one of Meta's 14 business-messaging events (Purchase, LeadSubmitted, ...)",
    "missing_field": "add the column, or --set KEY=VALUE, or the setting named in the message",
    "missing_identifier": "add the id column, or run `capi extract-referral` on your webhooks first",
    "event_too_old": "Meta refuses events older than 7 days; leave them out",
    "event_in_future": "check the time zone of your timestamps (CAPI_TIMEZONE)",
    "bad_timestamp": "use Unix seconds/milliseconds or ISO 8601",
    "invalid_email": "fix or remove the address",
    "invalid_phone": "write the number with its country code, or set CAPI_DEFAULT_COUNTRY",
    "invalid_country": "use an ISO 3166 country code such as 'us'",
    "invalid_currency": "use an ISO 4217 code such as USD",
    "invalid_value": "fix the value",
    "invalid_date": "write dates as YYYY-MM-DD",
    "duplicate_event_id": "give each event its own event_id / order_id",
    "unknown_column": "map it with --map, or ignore this warning",
    "malformed_record": "fix the row so that it can be read",
    "empty_input": "the file is empty (0 bytes): check the export that wrote it",
    "dropped_field": "the event is sent without this field; fix the value to send it (--strict-fields refuses)",
    "unattributed": "no click id and no stored referral: not from an ad, so not sent (--require-attribution refuses)",
    "conflicting_value": "rows of one group disagree on a field; the first row's value is sent",
    "unused_map_key": "a --map or preset key names no column of the input; check its spelling",
}
WARNING_CODES = frozenset({"unknown_column", "dropped_field", "unattributed", "unused_map_key", "conflicting_value"})
DROPPED_FIELD = "dropped_field"
CONFLICTING_VALUE = "conflicting_value"  # rows of one --group-by group disagree: the first is kept
UNATTRIBUTED = "unattributed"
# The customer fields an event can do without (SPEC §4 "Optional customer fields"): a bad value
# costs the field, not the conversion; Meta matches on the click id.
OPTIONAL_FIELDS = frozenset(("em", "ph", "fn", "ln", "ge", "db", "ct", "st", "zp", "country", "external_id"))
# A run this long in which no event has an ad to credit means the capture is probably not running.
ALL_UNATTRIBUTED_RUN = 20

Errors = list[tuple[str | None, str, str]]


def triage(
    errors: Errors, *, strict_fields: bool, require_attribution: bool
) -> tuple[Errors, Errors, tuple[str | None, str, str] | None]:
    """(errors, warnings, the unattributed note or None) of one event's problems: bad optional
    fields become `dropped_field` warnings, a missing ad identifier of an identified customer
    `unattributed`, unless the strict options make them errors again."""
    hard: Errors = []
    soft: Errors = []
    unattributed = None
    for key, code, message in errors:
        if code == UNATTRIBUTED:
            if require_attribution:
                hard.append((key, "missing_identifier", message))
            else:
                unattributed = (key, code, "no ctwa_clid and no stored referral for this customer: "
                                           "not from an ad, not sent")
        elif code == CONFLICTING_VALUE:
            soft.append((key, code, message))
        elif key in OPTIONAL_FIELDS and not strict_fields:
            soft.append((key, DROPPED_FIELD, f"{key} left out of the event: {message}"))
        else:
            hard.append((key, code, message))
    return hard, soft, unattributed


def all_unattributed_warning(built: int, unattributed: int) -> str | None:
    """SPEC §4: one warning when no event of a long enough run had an ad to credit."""
    if unattributed >= ALL_UNATTRIBUTED_RUN and built == 0:
        return (f"none of {unattributed} events has a click id or a stored referral: is the referral capture "
                "running? (`capi extract-referral` on your webhooks, or a ctwa_clid column)")
    return None


@dataclass(frozen=True, slots=True)
class Problem:
    source: str
    line: int
    record: int | None
    field: str | None
    code: str
    severity: str
    message: str

    def __post_init__(self) -> None:
        # Messages quote the offending value, which can be 8 KiB (a 5000-digit `value`); one
        # readable line on stderr matters more than the whole value.
        if len(self.message) > MAX_MESSAGE_CHARS:
            object.__setattr__(self, "message", self.message[: MAX_MESSAGE_CHARS - 3] + "...")

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "line": self.line,
            "record": self.record,
            "field": self.field,
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
        }

    @property
    def is_error(self) -> bool:
        return self.severity == ERROR


@dataclass
class Tally:
    """Counts of a run over the pipeline's output: records, valid, invalid, attributed."""

    valid: int = 0
    invalid: int = 0
    attributed: int = 0
    unattributed: int = 0
    filtered: int = 0  # rows --where left out (set from BuildOptions at the end of the run)
    _last_invalid: tuple[str, int | None] | None = None

    @property
    def records(self) -> int:
        return self.valid + self.invalid + self.unattributed

    def add(self, item: BuiltEvent | Problem) -> None:
        if isinstance(item, Problem):
            if item.code == UNATTRIBUTED and not item.is_error:
                self.unattributed += 1
            elif item.is_error:
                key = (item.source, item.record)
                # A record's problems come together, so a change of record means a new invalid one.
                if key != self._last_invalid:
                    self._last_invalid = key
                    self.invalid += 1
            return
        self.valid += 1
        if item.attributed:
            self.attributed += 1


@dataclass
class ValidationReport:
    tally: Tally = field(default_factory=Tally)
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.tally.invalid == 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "records": self.tally.records,
            "valid": self.tally.valid,
            "invalid": self.tally.invalid,
            "attributed": self.tally.attributed,
            "unattributed": self.tally.unattributed,
            "filtered": self.tally.filtered,
            "problems": [p.to_dict() for p in self.problems],
        }


def collect(items: Iterable[BuiltEvent | Problem]) -> ValidationReport:
    """Run the pipeline to its end, keeping problems and counts but not the events."""
    report = ValidationReport()
    for item in items:
        report.tally.add(item)
        if isinstance(item, Problem):
            report.problems.append(item)
    return report


def grouped(problems: Iterable[Problem]) -> Iterator[tuple[str, str, list[Problem]]]:
    """(code, what to do, problems) per code: errors first, then by how often the code occurs."""
    groups: dict[str, list[Problem]] = {}
    for problem in problems:
        groups.setdefault(problem.code, []).append(problem)
    order = sorted(groups, key=lambda c: (c in WARNING_CODES, -len(groups[c]), c))
    for code in order:
        yield code, CODES.get(code, ""), groups[code]
