"""Column names to canonical keys (SPEC §4): aliases, `--map FILE.yaml`, `--set KEY=VALUE`.

A record comes out as a flat dict of canonical keys: Meta's own keys (`em`, `ctwa_clid`, `value`,
...), plus `wa_id`/`bsuid` (used for the referral join) and `custom_data.<name>` for custom
properties. Records already in Meta's shape (`user_data`, `custom_data`) are flattened the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from capi_cli.errors import UsageError
from capi_cli.rules import (
    CUSTOM_DATA_FIELDS,
    HASHED_FIELDS,
    MESSAGING_ID_FIELDS,
    PASSTHROUGH_EVENT_FIELDS,
    UNHASHED_USER_DATA,
)

# A single value longer than this is an error, not a memory problem (no real field comes close).
MAX_VALUE_CHARS = 8192
CUSTOM_PREFIX = "custom_data."
# Where a mapped record keeps its custom properties: {name: value}.
CUSTOM_PROPERTIES = "custom_data"

CANONICAL_KEYS: tuple[str, ...] = (
    "event_name",
    "event_time",
    "event_id",
    "messaging_channel",
    "action_source",
    *MESSAGING_ID_FIELDS,
    "wa_id",
    "bsuid",
    *HASHED_FIELDS,
    *UNHASHED_USER_DATA,
    *CUSTOM_DATA_FIELDS,
    *PASSTHROUGH_EVENT_FIELDS,
    # Not Meta's keys: a full name split into fn/ln, and line items that --group-by (or a single
    # row) turns into `contents`.
    "full_name",
    "item_id",
    "item_quantity",
    "item_price",
)

# Common names for the canonical keys (SPEC §4 table, plus a few spellings seen in exports).
ALIASES: dict[str, str] = {
    "event": "event_name",
    "channel": "messaging_channel",
    "click_id": "ctwa_clid",
    "waba_id": "whatsapp_business_account_id",
    "psid": "page_scoped_user_id",
    "instagram_business_account_id": "ig_account_id",
    "igsid": "ig_sid",
    "whatsapp_id": "wa_id",
    "business_scoped_user_id": "bsuid",
    "email": "em",
    "email_address": "em",
    "phone": "ph",
    "phone_number": "ph",
    "first_name": "fn",
    "firstname": "fn",
    "last_name": "ln",
    "lastname": "ln",
    "gender": "ge",
    "date_of_birth": "db",
    "dob": "db",
    "birthdate": "db",
    "city": "ct",
    "state": "st",
    "zip": "zp",
    "zip_code": "zp",
    "postal_code": "zp",
    "postcode": "zp",
    "country_code": "country",
    "name": "full_name",
    "customer_name": "full_name",
    "sku": "item_id",
    "product_id": "item_id",
    "content_id": "item_id",
    "quantity": "item_quantity",
    "qty": "item_quantity",
    "unit_price": "item_price",
}

# Keys that may hold several values (`|` in CSV, lists in YAML/JSON).
MULTI_VALUE_KEYS = frozenset(HASHED_FIELDS)

# What names an event outright (EventBuilder.key): a re-run reads only these to skip sent events.
KEY_FIELDS = frozenset(("event_name", "event_id", "order_id"))
# A header's plan: (header, [(column, key)] put directly, [(column, key)] merged (repeated keys,
# custom properties), unknown column names).
Plan = tuple[list[str], list[tuple[int, str]], list[tuple[int, str]], list[str]]

_NESTED = ("user_data", "custom_data")
_NESTED_EXAMPLES = {"user_data": '{"em": ..., "ph": ...}', "custom_data": '{"value": ..., "currency": ...}'}
_NONE: list[Any] = []  # shared empty result; never appended to
_CANONICAL_SET = frozenset(CANONICAL_KEYS)


def _squeeze(name: str) -> str:
    return name.strip().lower().replace(" ", "_").replace("-", "_")


def resolve_name(name: str) -> str | None:
    """The canonical key of a column or field name (aliases, any case), or None."""
    key = _squeeze(name)
    if key in _CANONICAL_SET:
        return key
    if key in ALIASES:
        return ALIASES[key]
    for prefix in ("user_data.", CUSTOM_PREFIX):
        if key.startswith(prefix):
            inner = key[len(prefix):]
            inner_key = inner if inner in _CANONICAL_SET else ALIASES.get(inner)
            if inner_key is not None:
                return inner_key
            if prefix == CUSTOM_PREFIX and inner:
                # A custom property keeps its own spelling (only the prefix is matched loosely).
                return CUSTOM_PREFIX + name.strip()[len(prefix):]
    return None


def first_value(value: Any) -> str | None:
    """A field's value as one trimmed string (the first of several), or None when empty."""
    if value is None:  # an absent field, asked for often: answered first
        return None
    if type(value) is str:
        value = value.strip()
        return value or None
    if isinstance(value, list | tuple):
        value = value[0] if value else None
    if value is None or isinstance(value, dict | list | tuple):
        # A mapping or nested list where one id belongs (YAML/JSON `ctwa_clid: {a: 1}`) is no value:
        # str() would send Python's repr to Meta as the click id / order id.
        return None
    text = str(value).strip()
    return text or None


def split_full_name(record: dict[str, Any]) -> None:
    """A full name (`name`, `full_name`, `customer_name`) gives fn (first word) and ln (last word)
    where the record has no first/last name of its own (SPEC §4)."""
    words = (first_value(record["full_name"]) or "").split()
    if words:
        record.setdefault("fn", words[0])
        if len(words) > 1:
            record.setdefault("ln", words[-1])


def load_map_spec(path: str | Path) -> Any:
    """A --map file as an inputs.presets.MapSpec: flat `{their column: field}` or with sections."""
    import yaml

    from capi_cli.inputs.presets import parse_spec

    try:
        text = Path(path).read_text(encoding="utf-8-sig")
        data = yaml.safe_load(text)
    except OSError as exc:
        raise UsageError(f"--map {path}: cannot read: {exc.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise UsageError(f"--map {path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    return parse_spec(data, f"--map {path}")


def resolve_columns(columns: Mapping[str, str | None], where: str) -> dict[str, str | None]:
    """`{their column: field name}` to `{lowercased column: canonical key or None (ignored)}`."""
    mapping: dict[str, str | None] = {}
    for column, target in columns.items():
        if target is None:
            mapping[str(column).strip().lower()] = None
            continue
        resolved = resolve_name(str(target))
        if resolved is None:
            from capi_cli.inputs.suggest import did_you_mean

            raise UsageError(
                f"{where}: {column!r} maps to {target!r}, which is not a known field "
                f"(e.g. em, ph, value, currency, order_id, custom_data.NAME; `capi fields` lists them)"
                f"{did_you_mean(str(target), [*CANONICAL_KEYS, *ALIASES])}"
            )
        mapping[str(column).strip().lower()] = resolved
    return mapping


def load_map(path: str | Path) -> dict[str, str | None]:
    """A --map file: `{their column name: canonical key or alias (or null to ignore it)}`."""
    return resolve_columns(load_map_spec(path).columns, f"--map {path}")


def parse_sets(pairs: Iterable[str] | Mapping[str, Any]) -> dict[str, Any]:
    """--set KEY=VALUE pairs, keys resolved like column names."""
    items = pairs.items() if isinstance(pairs, Mapping) else (_split_pair(p) for p in pairs)
    sets: dict[str, Any] = {}
    for key, value in items:
        resolved = resolve_name(str(key))
        if resolved is None:
            from capi_cli.inputs.suggest import did_you_mean

            raise UsageError(f"--set {key}={value}: {key!r} is not a known field (e.g. event_name, currency, channel)"
                             f"{did_you_mean(str(key), [*CANONICAL_KEYS, *ALIASES])}")
        sets[resolved] = value
    return sets


def _split_pair(pair: str) -> tuple[str, str]:
    key, eq, value = pair.partition("=")
    if not eq or not key.strip():
        raise UsageError(f"--set {pair!r}: write KEY=VALUE, e.g. --set currency=EUR")
    return key.strip(), value


class FieldMapper:
    """Maps one raw record to canonical keys; remembers each column name's resolution."""

    def __init__(self, mapping: Mapping[str, str | None] | None = None, sets: Mapping[str, Any] | None = None):
        self._mapping = dict(mapping or {})
        self._sets = dict(sets or {})
        self._cache: dict[str, str | None] = {}
        self._ignored: set[str] = set()
        self._plan: Plan | None = None
        self._key_plan: Plan | None = None
        self._key_sets = {key: value for key, value in self._sets.items() if key in KEY_FIELDS}

    def resolve(self, name: str) -> str | None:
        """The canonical key of a column name, or None when it is unknown (or ignored by the map)."""
        try:
            return self._cache[name]
        except KeyError:
            pass
        lowered = name.strip().lower()
        if lowered in self._mapping:
            found = self._mapping[lowered]
            if found is None:
                self._ignored.add(name)
        else:
            found = resolve_name(name)
        self._cache[name] = found
        return found

    def map_record(self, raw: Mapping[str, Any]) -> tuple[dict[str, Any], list[str], list[tuple[str, str]]]:
        """(record, unknown column names, (key, message) of each value that cannot be read: too
        long, or a user_data/custom_data that is not an object)."""
        record: dict[str, Any] = {}
        unknown: list[str] = []
        invalid: list[tuple[str, str]] = []
        cache = self._cache
        for name, value in raw.items():
            if value is None:
                continue
            if type(value) is str:
                if not value or value.isspace():
                    continue
                if len(value) > MAX_VALUE_CHARS:
                    invalid.append(_oversized(self.resolve(name) or name))
                    continue
            if name in _NESTED:
                if isinstance(value, Mapping):
                    self._flatten(name, value, record, unknown, invalid)
                else:
                    # Meta's shape nests the fields; text or a list here is no field of ours, and
                    # calling it an unknown column would hide that the customer data is lost.
                    invalid.append((name, f"{name} must be an object of fields "
                                          f"({_NESTED_EXAMPLES[name]}), found {_kind(value)}"))
                continue
            key = cache[name] if name in cache else self.resolve(name)
            if key is None:
                if name not in self._ignored:
                    unknown.append(name)
                continue
            _put(record, key, value)
        if self._sets:
            _fill(record, self._sets)
        return record, unknown, invalid

    def map_row(self, header: list[str], row: list[str]) -> tuple[dict[str, Any], list[str], list[tuple[str, str]]]:
        """Like map_record for a CSV row; the header's resolution is worked out once per file.

        No length check here: the csv module already refuses fields over its limit (128 KiB).
        """
        plan = self._plan
        if plan is None or plan[0] is not header:
            plan = self._plan = self._make_plan(header)
        return _apply(plan, row, self._sets), plan[3], _NONE

    def map_row_keys(self, header: list[str], row: list[str]) -> tuple[dict[str, Any], list[str]]:
        """The KEY_FIELDS of map_row's record and its unknown columns, by the same plan cut down to
        those keys: equal to map_row's record restricted to them, for a fraction of the work."""
        plan = self._key_plan
        if plan is None or plan[0] is not header:
            _, simple, merged, unknown = self._make_plan(header)
            plan = self._key_plan = (
                header,
                [(index, key) for index, key in simple if key in KEY_FIELDS],
                [(index, key) for index, key in merged if key in KEY_FIELDS],
                unknown,
            )
        return _apply(plan, row, self._key_sets), plan[3]

    def _make_plan(self, header: list[str]) -> Plan:
        simple: list[tuple[int, str]] = []
        merged: list[tuple[int, str]] = []
        unknown: list[str] = []
        counts: dict[str, int] = {}
        keys = [self.resolve(name) for name in header]
        for key in keys:
            if key is not None:
                counts[key] = counts.get(key, 0) + 1
        for index, (name, key) in enumerate(zip(header, keys, strict=True)):
            if key is None:
                if name and name not in self._ignored:
                    unknown.append(name)
            elif counts[key] > 1 or key.startswith(CUSTOM_PREFIX):
                merged.append((index, key))
            else:
                simple.append((index, key))
        return header, simple, merged, unknown

    def _flatten(
        self, section: str, inner: Mapping[str, Any], record: dict[str, Any], unknown: list[str],
        invalid: list[tuple[str, str]],
    ) -> None:
        for name, value in inner.items():
            if value is None or (type(value) is str and (not value or value.isspace())):
                continue
            full = f"{section}.{name}"
            if type(value) is str and len(value) > MAX_VALUE_CHARS:
                invalid.append(_oversized(full))
                continue
            key = self.resolve(full)
            if key is None:
                unknown.append(full)
                continue
            _put(record, key, value)


def _oversized(key: str) -> tuple[str, str]:
    return key, f"{key}: value longer than {MAX_VALUE_CHARS} characters"


def _kind(value: Any) -> str:
    if isinstance(value, str):
        return "text"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, int | float):
        return "a number"
    return "a list" if isinstance(value, list | tuple) else type(value).__name__


def _apply(plan: Plan, row: list[str], sets: dict[str, Any]) -> dict[str, Any]:
    """A CSV row's record by a header's plan: the one place map_row and map_row_keys agree on."""
    _, simple, merged, _ = plan
    record = {key: value for index, key in simple if (value := row[index]) and not value.isspace()}
    for index, key in merged:
        value = row[index]
        if value and not value.isspace():
            _put(record, key, value)
    if sets:
        _fill(record, sets)
    return record


def _fill(record: dict[str, Any], sets: dict[str, Any]) -> None:
    for key, value in sets.items():
        if key.startswith(CUSTOM_PREFIX):
            properties = record.setdefault(CUSTOM_PROPERTIES, {})
            properties.setdefault(key[len(CUSTOM_PREFIX):], value)
        elif key not in record:
            record[key] = value


def _put(record: dict[str, Any], key: str, value: Any) -> None:
    if key.startswith(CUSTOM_PREFIX):
        record.setdefault(CUSTOM_PROPERTIES, {})[key[len(CUSTOM_PREFIX):]] = value
    elif key not in record:
        record[key] = value
    elif key in MULTI_VALUE_KEYS:
        # Two columns for one field (`email` and `em`): both values are sent.
        before = record[key]
        before = before if isinstance(before, list) else [before]
        record[key] = before + (value if isinstance(value, list) else [value])
