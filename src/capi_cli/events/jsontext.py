"""Event payloads as compact JSON, byte for byte what `json.dumps(payload, ensure_ascii=False,
separators=(",", ":"))` gives, without its per-call overhead (the payload is written once per event)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from capi_cli.events.fields import CANONICAL_KEYS
from capi_cli.events.rules import HASHED_FIELDS

quote = json.encoder.encode_basestring  # type: ignore[attr-defined]
HEX_LISTS = frozenset(HASHED_FIELDS)
KEYS = {key: f'"{key}":' for key in CANONICAL_KEYS}  # our own keys need no escaping
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_int_repr = int.__repr__
_float_repr = float.__repr__
_isfinite = math.isfinite


def json_value(value: Any) -> str:
    kind = type(value)
    if kind is str:
        return quote(value)  # type: ignore[no-any-return]
    if kind is int:
        return _int_repr(value)
    if kind is float and _isfinite(value):
        return _float_repr(value)
    if kind is dict:
        try:
            return "{" + ",".join([quote(key) + ":" + json_value(item) for key, item in value.items()]) + "}"
        except TypeError:  # a key that is not a string: json's own rules
            return _dumps(value)
    if kind is list:
        return "[" + ",".join(map(json_value, value)) + "]"
    return _dumps(value)  # True/False/None, NaN, tuples: json's own rules


def payload_json(payload: Mapping[str, Any]) -> str:
    """Exactly `json.dumps(payload, ensure_ascii=False, separators=(",", ":"))`, faster for event
    payloads. The hashed fields of `user_data` hold lowercase hex only (the builder guarantees it),
    which needs no escaping."""
    out = []
    for key, value in payload.items():
        prefix = KEYS.get(key) or _key(key)
        if type(value) is str:
            out.append(prefix + quote(value))
        elif key == "user_data" and type(value) is dict:
            fields = []
            for name, item in value.items():
                if name in HEX_LISTS and type(item) is list and item:
                    fields.append(KEYS[name] + '["' + '","'.join(item) + '"]')
                else:
                    fields.append((KEYS.get(name) or _key(name)) + json_value(item))
            out.append('"user_data":{' + ",".join(fields) + "}")
        else:
            out.append(prefix + json_value(value))
    return "{" + ",".join(out) + "}"


def _key(key: Any) -> str:
    return (quote(key) if type(key) is str else _dumps(str(key))) + ":"
