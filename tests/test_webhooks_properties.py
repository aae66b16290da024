"""Property-based: the reader and extractors never crash, whatever bytes or JSON they are given."""

from __future__ import annotations

import io
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capi_cli.webhooks import REFERRAL_KEYS, ExtractStats, Referral, Unreadable, extract

KEYS = st.sampled_from(
    [
        "object",
        "entry",
        "changes",
        "value",
        "field",
        "messages",
        "contacts",
        "statuses",
        "referral",
        "ctwa_clid",
        "source_type",
        "source_id",
        "from",
        "from_user_id",
        "wa_id",
        "user_id",
        "id",
        "timestamp",
        "messaging",
        "sender",
        "recipient",
        "message",
        "postback",
        "is_echo",
        "mid",
        "ad_id",
        "ads_context_data",
        "body",
        "raw_body",
        "content",
        "headers",
        "X-Hub-Signature-256",
        "metadata",
        "phone_number_id",
        "automatic_events",
        "event_name",
        "profile",
        "WaId",
        "From",
        "MessageSid",
        "ReferralCtwaClid",
        "ReferralSourceType",
        "isBase64Encoded",
        "data",
        "standby",
        "messaging_product",
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(
        ["whatsapp_business_account", "page", "instagram", "ad", "whatsapp", "", "0", "1767225600"]
    ),
)
JSON = st.recursive(
    SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(KEYS | st.text(max_size=5), children, max_size=6)
    ),
    max_leaves=40,
)


def run(data: bytes, app_secret: str | None = None) -> list[Referral | Unreadable]:
    stats = ExtractStats()
    items = list(extract(["-"], stdin=io.BytesIO(data), app_secret=app_secret, stats=stats))
    for item in items:
        if isinstance(item, Referral):
            assert list(item.to_dict()) == list(REFERRAL_KEYS)
            json.dumps(item.to_dict(), ensure_ascii=False).encode("utf-8")  # printable as UTF-8
        else:
            assert str(item).startswith("<stdin>")
    assert stats.unreadable == sum(isinstance(i, Unreadable) for i in items)
    return items


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600))
def test_arbitrary_bytes_never_crash(data: bytes) -> None:
    run(data)


@settings(max_examples=300, deadline=None)
@given(JSON)
def test_arbitrary_json_never_crashes(doc: Any) -> None:
    text = json.dumps(doc)
    run(text.encode(), app_secret="s")
    run(
        json.dumps({"headers": {"x-hub-signature-256": "sha256=00"}, "raw_body": text}).encode(),
        app_secret="s",
    )
    run((text + "\n" + json.dumps(doc, indent=1)).encode())


@settings(max_examples=150, deadline=None)
@given(JSON, st.sampled_from(["whatsapp_business_account", "page", "instagram"]))
def test_arbitrary_json_inside_real_envelopes(value: Any, obj: str) -> None:
    envelopes = [
        {"object": obj, "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}]},
        {
            "object": obj,
            "entry": [
                {"id": "1", "messaging": [value, {"sender": value, "message": value, "referral": value}]}
            ],
        },
        {
            "object": obj,
            "entry": [
                {
                    "id": "1",
                    "changes": [
                        {"value": {"messages": [{"referral": value, "from": value}], "contacts": value}}
                    ],
                }
            ],
        },
        {
            "object": obj,
            "entry": [
                {"messaging": [{"sender": {"id": value}, "referral": {"ad_id": value}, "timestamp": value}]}
            ],
        },
    ]
    for envelope in envelopes:
        run(json.dumps(envelope).encode())


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                b"{",
                b"}",
                b"[",
                b"]",
                b",",
                b'"a"',
                b":",
                b"1",
                b"\n",
                b" ",
                b'{"object":"page"}',
                b"\xff",
                b"a=b&c=d",
            ]
        ),
        max_size=40,
    )
)
def test_json_like_fragments_never_crash(parts: list[bytes]) -> None:
    run(b"".join(parts))
