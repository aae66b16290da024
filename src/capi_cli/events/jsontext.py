"""Event payloads as compact JSON (UTF-8, no spaces): the text sent to Meta, written to `-o`, and
hashed for the ledger.

orjson writes it when it can, about 7x faster than the json module (serializing was a fifth of
the CPU a built event costs). For what orjson refuses (integers beyond 64 bits, keys that are
not strings, lone surrogates) the encoder below writes byte for byte what
`json.dumps(payload, ensure_ascii=False, separators=(",", ":"))` gives. The two agree on every
string and integer and on the floats of real payloads; they differ only on floats written with
an exponent below 1e-4 (`1e-05` vs `0.00001`, the same number) and on NaN/Infinity (only a custom
property read from JSON could hold one), which orjson writes as null: json's `NaN` is not JSON.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from orjson import dumps as _orjson_dumps

from capi_cli.events.fields import CANONICAL_KEYS
from capi_cli.rules import HASHED_FIELDS

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
        return _object(value)
    if kind is list:
        return "[" + ",".join(map(json_value, value)) + "]"
    return _dumps(value)  # True/False/None, NaN, tuples: json's own rules


def _object(value: dict[Any, Any]) -> str:
    parts = []
    for key, item in value.items():
        if type(key) is not str:
            return _dumps(value)  # a key that is not a string: json's own rules
        kind = type(item)
        if kind is str:
            parts.append(f"{quote(key)}:{quote(item)}")
        elif kind is int:
            parts.append(f"{quote(key)}:{_int_repr(item)}")
        else:
            parts.append(f"{quote(key)}:{json_value(item)}")
    return "{" + ",".join(parts) + "}"


def _user_data(value: dict[Any, Any]) -> str:
    parts = []
    for name, item in value.items():
        if name in HEX_LISTS and type(item) is list and item:
            # Hashed fields hold lowercase hex only (the builder guarantees it): no escaping.
            if len(item) == 1:
                parts.append(f'{KEYS[name]}["{item[0]}"]')
            else:
                joined = '","'.join(item)
                parts.append(f'{KEYS[name]}["{joined}"]')
        elif type(item) is str:
            parts.append(f"{KEYS.get(name) or _key(name)}{quote(item)}")
        else:
            parts.append(f"{KEYS.get(name) or _key(name)}{json_value(item)}")
    return "{" + ",".join(parts) + "}"


def payload_json(payload: Mapping[str, Any]) -> str:
    """The payload as compact JSON (see the module's docstring)."""
    try:
        return _orjson_dumps(payload).decode()  # type: ignore[no-any-return]
    except TypeError:  # orjson.JSONEncodeError: what only the json module's rules can write
        return json_text(payload)


def json_text(payload: Mapping[str, Any]) -> str:
    """Exactly `json.dumps(payload, ensure_ascii=False, separators=(",", ":"))`, faster for event
    payloads."""
    parts = []
    for key, value in payload.items():
        kind = type(value)
        if kind is str:
            parts.append(f"{KEYS.get(key) or _key(key)}{quote(value)}")
        elif kind is int:
            parts.append(f"{KEYS.get(key) or _key(key)}{_int_repr(value)}")
        elif kind is dict:
            if key == "user_data":
                parts.append(f'"user_data":{_user_data(value)}')
            else:
                parts.append(f"{KEYS.get(key) or _key(key)}{_object(value)}")
        else:
            parts.append(f"{KEYS.get(key) or _key(key)}{json_value(value)}")
    return "{" + ",".join(parts) + "}"


def _key(key: Any) -> str:
    return (quote(key) if type(key) is str else _dumps(str(key))) + ":"
