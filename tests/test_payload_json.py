"""payload_json: valid compact JSON of any payload, the same text every time, and byte for byte what
json.dumps gives for event payloads (tests/test_events_pipeline.py checks a built event)."""

from __future__ import annotations

import json
import math
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from capi_cli.events.jsontext import json_text, payload_json

TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)
SCALARS = st.one_of(
    st.none(), st.booleans(), TEXT,
    st.integers(min_value=-(2**70), max_value=2**70),  # beyond 64 bits: the json module's rules
    st.floats(allow_nan=False, allow_infinity=False),
)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
                      max_leaves=20)


@given(st.dictionaries(TEXT, VALUES, max_size=8))
@settings(max_examples=300, deadline=None)
def test_any_payload_round_trips_and_is_stable(payload: dict[str, Any]) -> None:
    text = payload_json(payload)
    assert json.loads(text) == payload
    assert payload_json(payload) == text
    assert "\n" not in text  # one NDJSON line


@given(st.dictionaries(TEXT, st.one_of(TEXT, st.integers(min_value=-(2**63), max_value=2**63 - 1),
                                       st.lists(TEXT, max_size=3)), max_size=8))
@settings(max_examples=300, deadline=None)
def test_strings_and_integers_are_written_as_json_writes_them(payload: dict[str, Any]) -> None:
    assert payload_json(payload) == json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def test_what_orjson_refuses_is_written_by_the_json_rules() -> None:
    payload = {"custom_data": {"big": 2**70, "value": 1e-05}, 7: "key that is not a string"}
    expected = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    assert payload_json(payload) == json_text(payload) == expected


def test_nan_is_written_as_null_not_as_invalid_json() -> None:
    text = payload_json({"custom_data": {"score": math.nan, "limit": math.inf}})
    assert text == '{"custom_data":{"score":null,"limit":null}}'
    json.loads(text, parse_constant=lambda name: (_ for _ in ()).throw(ValueError(name)))
