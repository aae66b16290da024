"""Property-based fuzzing of every reader: the events readers (CSV, TSV, JSON, NDJSON, YAML), the
events pipeline on top of them, and the webhook reader/extractor. Whatever the bytes, they end in
records, Malformed/Problem/Unreadable items or a CapiError: never another exception, never a hang.

CAPI_FUZZ=long multiplies the examples (and lifts the per-example deadline) for a long run:
    CAPI_FUZZ=long .venv/bin/pytest tests/test_fuzz_readers.py tests/test_fuzz_normalize.py
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capi_cli.config import Settings
from capi_cli.errors import CapiError
from capi_cli.events.pipeline import BuildOptions, BuiltEvent, Problem, iter_events
from capi_cli.events.readers import Malformed, read_records
from capi_cli.webhooks import REFERRAL_KEYS, ExtractStats, Referral, Unreadable, Unrecognised, extract

LONG = os.environ.get("CAPI_FUZZ") == "long"
SCALE = 50 if LONG else 1
FUZZ = settings(
    max_examples=60 * SCALE,
    deadline=None if LONG else 2000,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
FORMATS = ("csv", "tsv", "json", "ndjson", "yaml")
NOW = 1_767_484_800

COLUMNS = ["event_name", "event_time", "event_id", "ctwa_clid", "waba_id", "email", "phone", "fn", "ln",
           "db", "ge", "ct", "st", "zp", "country", "external_id", "value", "currency", "order_id",
           "contents", "content_ids", "messaging_channel", "psid", "page_id", "igsid", "ig_account_id",
           "wa_id", "user_data", "custom_data", "custom_data.color", "opt_out", "data", "events", ""]
# Cells a hostile export would hold: huge and signed numbers, NaN, hashes, control characters, quotes.
CELLS = st.one_of(
    st.text(max_size=12),
    st.sampled_from([
        "Purchase", "purchase", "LeadSubmitted", "1767484800", "1767484800000", "1767484800000000", "0", "-1",
        "4102444800", "NaN", "Infinity", "-inf", "1e999", "9" * 5000, "a@b.co", " A@B.CO ", "+14155552671",
        "+1 415 555 CALL", "a" * 64, "F" * 64, "f" * 63, "2026-13-45", "USD", "usd", "XXX", "whatsapp",
        '[{"id": "1", "quantity": 2}]', "[", "{", '"', '""', "a|b|c", "\u0000", "\ufeff", "\ud7ff", "\u202e",
    ]),
)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True), CELLS)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.sampled_from(COLUMNS), children, max_size=6),
    max_leaves=30,
)


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)


def _settings(home: Path) -> Settings:
    return Settings(home=home, config_file=home / "config.yaml", profile="default",
                    whatsapp_business_account_id="104123456789012", ledger=str(home / "ledger.sqlite3"))


def _read_all(path: Path, fmt: str) -> None:
    """Every record of one file, through the reader and then through the whole pipeline."""
    try:
        for line, record in read_records(path, fmt):
            assert isinstance(line, int) and line >= 1
            assert isinstance(record, dict | tuple | Malformed)
            if isinstance(record, tuple):
                header, cells = record
                assert len(header) == len(cells)
    except CapiError:
        pass
    try:
        options = BuildOptions(input_format=fmt, now=NOW)
        for item in iter_events([path], _settings(path.parent), options):
            assert isinstance(item, BuiltEvent | Problem)
            if isinstance(item, BuiltEvent):
                json.dumps(item.payload, allow_nan=False).encode("utf-8")  # what is sent is strict JSON
            else:
                assert item.message and "\n" not in item.message and len(item.message) <= 300
    except CapiError:
        pass
    # The pipeline reads only: no ledger appears, whatever the input.
    assert not (path.parent / "ledger.sqlite3").exists()


def _write(workdir: Path, fmt: str, data: bytes) -> Path:
    path = workdir / f"input.{fmt}"
    path.write_bytes(data)
    return path


def _mutate(data: bytes, cuts: list[tuple[int, bytes]]) -> bytes:
    """Truncations, insertions and overwrites at positions relative to the size of `data`."""
    for where, insert in cuts:
        at = where % (len(data) + 1)
        data = data[:at] + insert + data[at + len(insert) // 2:]
    return data


MUTATIONS = st.lists(
    st.tuples(st.integers(min_value=0, max_value=10_000),
              st.binary(max_size=6) | st.sampled_from([b"\x00", b"\xff\xfe", b'"', b"\n", b"[", b"{", b"&a", b"*a"])),
    max_size=4,
)


# -- events readers --------------------------------------------------------------------------------


@FUZZ
@given(fmt=st.sampled_from(FORMATS), data=st.binary(max_size=1500))
def test_events_readers_take_any_bytes(workdir: Path, fmt: str, data: bytes) -> None:
    _read_all(_write(workdir, fmt, data), fmt)


@FUZZ
@given(
    fmt=st.sampled_from(("csv", "tsv")),
    header=st.lists(st.sampled_from(COLUMNS) | st.text(max_size=6), min_size=1, max_size=8),
    rows=st.lists(st.lists(CELLS, max_size=10), max_size=6),
    quoting=st.booleans(),
    mutations=MUTATIONS,
)
def test_csv_readers_take_hostile_rows(
    workdir: Path, fmt: str, header: list[str], rows: list[list[str]], quoting: bool, mutations: list[tuple[int, bytes]]
) -> None:
    import csv

    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t" if fmt == "tsv" else ",",
                        quoting=csv.QUOTE_ALL if quoting else csv.QUOTE_MINIMAL)
    writer.writerow(header)
    writer.writerows(rows)
    data = out.getvalue().encode("utf-8", "surrogatepass")
    _read_all(_write(workdir, fmt, _mutate(data, mutations)), fmt)


@FUZZ
@given(
    fmt=st.sampled_from(("json", "ndjson")),
    records=st.lists(JSON_VALUES, max_size=5),
    wrapper=st.sampled_from(["list", "data", "events", "concat", "one"]),
    mutations=MUTATIONS,
)
def test_json_readers_take_hostile_documents(
    workdir: Path, fmt: str, records: list[Any], wrapper: str, mutations: list[tuple[int, bytes]]
) -> None:
    if fmt == "ndjson":
        text = "\n".join(json.dumps(r) for r in records)
    elif wrapper == "list":
        text = json.dumps(records, indent=1)
    elif wrapper in ("data", "events"):
        text = json.dumps({wrapper: records, "extra": records[:1]})
    elif wrapper == "concat":
        text = "".join(json.dumps(r) for r in records)
    else:
        text = json.dumps(records[0] if records else {})
    data = text.encode("utf-8", "surrogatepass")
    _read_all(_write(workdir, fmt, _mutate(data, mutations)), fmt)


YAML_PARTS = st.sampled_from([
    "- ", "  ", "\n", "event_name: ", "Purchase", "value: ", "9" * 4400, "events:", "data: ", "&a ", "*a", "&b [",
    "*b, *b, *b]", "!!python/object/apply:os.system [\"true\"]", "!!binary ", "!!str ", "!!int ", "!!float ",
    "!!timestamp ", "2026-03-01", "? ", ": ", "{", "}", "[", "]", ",", "'", '"', "|", ">", "---", "...", "%YAML 1.1",
    "%TAG ! tag:x,2000:", "<<: *a", "~", "null", ".nan", ".inf", "0x1F", "1_000", "\t", "#", "\x00", "\ufeff",
])


@FUZZ
@given(parts=st.lists(YAML_PARTS | st.text(max_size=5), max_size=40))
def test_yaml_reader_takes_hostile_documents(workdir: Path, parts: list[str]) -> None:
    _read_all(_write(workdir, "yaml", "".join(parts).encode("utf-8", "surrogatepass")), "yaml")


@FUZZ
@given(records=st.lists(JSON_VALUES, max_size=4), mutations=MUTATIONS)
def test_yaml_reader_takes_hostile_values(workdir: Path, records: list[Any], mutations: list[tuple[int, bytes]]) -> None:
    import yaml

    data = yaml.safe_dump(records, allow_unicode=True).encode("utf-8", "surrogatepass")
    _read_all(_write(workdir, "yaml", _mutate(data, mutations)), "yaml")


# -- webhook reader and extractor ------------------------------------------------------------------


def _extract(data: bytes, app_secret: str | None = None) -> list[Referral | Unreadable | Unrecognised]:
    stats = ExtractStats()
    try:
        items = list(extract(["-"], stdin=io.BytesIO(data), app_secret=app_secret, stats=stats))
    except CapiError:
        return []
    for item in items:
        assert isinstance(item, Referral | Unreadable | Unrecognised)
        if isinstance(item, Referral):
            record = item.to_dict()
            assert list(record) == list(REFERRAL_KEYS)
            # A stored referral always says who it belongs to or which click it was.
            assert record["user_id"] or record["wa_id"] or record["bsuid"] or record["ctwa_clid"]
            json.dumps(record, ensure_ascii=False).encode("utf-8")
        else:
            assert "\n" not in str(item)
    assert stats.unreadable == sum(isinstance(i, Unreadable) for i in items)
    return items


def _delivery(clid: str) -> dict[str, Any]:
    return {"object": "whatsapp_business_account", "entry": [{"id": "102290129340398", "changes": [{
        "field": "messages", "value": {
            "messaging_product": "whatsapp", "metadata": {"phone_number_id": "106540352242922"},
            "contacts": [{"profile": {"name": "Ann"}, "wa_id": "33612345678"}],
            "messages": [{"from": "33612345678", "id": "wamid.1", "timestamp": "1767484800",
                          "referral": {"source_id": "1", "source_type": "ad", "ctwa_clid": clid}}]}}]}]}


@FUZZ
@given(
    layout=st.sampled_from(["ndjson", "pretty", "array", "raw_body", "body", "content", "form"]),
    mutations=MUTATIONS,
    clid=st.text(max_size=10),
)
def test_webhook_dumps_survive_mutation(layout: str, mutations: list[tuple[int, bytes]], clid: str) -> None:
    doc = _delivery(clid)
    if layout == "ndjson":
        text = json.dumps(doc) + "\n" + json.dumps(doc) + "\n"
    elif layout == "pretty":
        text = json.dumps(doc, indent=2)
    elif layout == "array":
        text = json.dumps([doc, doc], indent=1)
    elif layout == "form":
        text = "ReferralCtwaClid=" + clid + "&WaId=905321234567&From=whatsapp%3A%2B905321234567&MessageSid=SM1\n"
    else:
        text = json.dumps({"headers": {"X-Hub-Signature-256": "sha256=" + "0" * 64}, layout: json.dumps(doc)})
    _extract(_mutate(text.encode("utf-8", "surrogatepass"), mutations), app_secret="secret")


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(["ReferralCtwaClid", "WaId", "From", "MessageSid", "ReferralSourceType",
                                           "x", "%", "%ZZ"]),
                          st.lists(st.sampled_from(["%FF", "%00", "%2B", "%", "a", "+", "=", "%E2%82", "%C3%A9"]),
                                   max_size=6)),
                min_size=1, max_size=6))
def test_webhook_form_bodies_with_garbage_escapes(fields: list[tuple[str, list[str]]]) -> None:
    body = "&".join(f"{key}={''.join(value)}" for key, value in fields)
    for text in (body, json.dumps({"body": body}), json.dumps({"body_params": body})):
        for item in _extract(text.encode()):
            if isinstance(item, Referral):
                assert "\ufffd" not in (item.ctwa_clid or "")  # never a click id made of decoding errors


@FUZZ
@given(digits=st.integers(min_value=4301, max_value=6000), where=st.sampled_from(["id", "timestamp", "sender"]))
def test_webhook_huge_numbers(digits: int, where: str) -> None:
    number = "9" * digits
    item = {"sender": {"id": "1"}, "timestamp": 1767484800000, "referral": {"ad_id": "5", "source": "ADS"}}
    text = json.dumps({"object": "page", "entry": [{"id": "9", "messaging": [item]}]})
    target = {"id": '"9"', "timestamp": "1767484800000", "sender": '{"id": "1"}'}[where]
    text = text.replace(target, number if where != "sender" else '{"id": ' + number + "}", 1)
    items = _extract(text.encode())
    assert any(isinstance(i, Unreadable) for i in items)
