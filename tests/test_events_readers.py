"""Streaming readers: line numbers in every format, BOM, safe YAML, size limits, broken input."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capi_cli.errors import UsageError
from capi_cli.events import readers
from capi_cli.events.readers import Malformed, read_records, sniff

FIXTURES = Path(__file__).parent / "fixtures" / "events"


def records(path: Path | str, fmt: str | None = None) -> list[tuple[int, Any]]:
    out = []
    for line, record in read_records(path, fmt):
        if isinstance(record, tuple):  # CSV rows come as (header, cells)
            record = dict(zip(*record, strict=True))
        out.append((line, record))
    return out


def test_csv_with_bom_crlf_and_a_quoted_newline_keeps_start_lines() -> None:
    got = records(FIXTURES / "orders.csv")
    assert [line for line, _ in got] == [2, 4]  # the first row spans lines 2-3
    first = got[0][1]
    assert "event_name" in first  # BOM stripped from the first column name
    assert first["note"] == "two\r\nlines"


def test_tsv_and_semicolon_csv(tmp_path: Path) -> None:
    tsv = tmp_path / "a.tsv"
    tsv.write_text("event_name\temail\nPurchase\ta@example.com\n", encoding="utf-8")
    assert records(tsv) == [(2, {"event_name": "Purchase", "email": "a@example.com"})]
    semi = tmp_path / "b.csv"
    semi.write_text("event_name;value\n\nPurchase;10,5\n", encoding="utf-8")
    assert records(semi) == [(3, {"event_name": "Purchase", "value": "10,5"})]


def test_csv_short_rows_padded_long_rows_malformed(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_text("a,b,c\n1\n1,2,3,4\n1,2,3,,\n", encoding="utf-8")
    got = records(path)
    assert got[0] == (2, {"a": "1", "b": "", "c": ""})
    assert got[1][0] == 3 and isinstance(got[1][1], Malformed)
    assert got[2] == (4, {"a": "1", "b": "2", "c": "3"})


def test_csv_not_utf8_row_is_malformed_and_the_rest_is_read(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes(b"name,city\nok,Paris\nbad,S\xe3o Paulo\nok2,Rome\n")
    got = records(path)
    assert [line for line, _ in got] == [2, 3, 4]
    assert isinstance(got[1][1], Malformed) and "UTF-8" in got[1][1].message
    assert got[2][1] == {"name": "ok2", "city": "Rome"}


def test_csv_oversized_line_and_field_are_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readers, "MAX_LINE_BYTES", 1024)
    path = tmp_path / "a.csv"
    path.write_text("a,b\n1," + "x" * 5000 + "\n2,3\n", encoding="utf-8")
    got = records(path)
    assert got[0][0] == 2 and isinstance(got[0][1], Malformed)
    assert got[1] == (3, {"a": "2", "b": "3"})
    big = tmp_path / "b.csv"
    big.write_text('a,b\n1,"' + "y" * 200_000 + '"\n2,3\n', encoding="utf-8")
    got = records(big)
    assert isinstance(got[0][1], Malformed)
    assert got[-1] == (3, {"a": "2", "b": "3"})


def test_yaml_lines_and_yaml_1_2_scalars() -> None:
    got = records(FIXTURES / "orders.yaml")
    assert [line for line, _ in got] == [3, 15]
    first = got[0][1]
    assert first["country"] == "NO"  # not False (the Norway problem)
    assert first["zip"] == "02134"  # not the octal 1116
    assert first["phone"] == "+14155552671"
    assert got[1][1]["em"] == ["bob@example.com", "BOB@example.com"]


def test_yaml_plain_list_and_single_mapping(tmp_path: Path) -> None:
    path = tmp_path / "a.yml"
    path.write_text("- event_name: Purchase\n- event_name: AddToCart\n", encoding="utf-8")
    assert records(path) == [(1, {"event_name": "Purchase"}), (2, {"event_name": "AddToCart"})]


def test_yaml_alias_bomb_is_an_error_not_a_hang(tmp_path: Path) -> None:
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    path = tmp_path / "bomb.yaml"
    path.write_text("events:\n  - " + "\n    ".join(lines) + "\n", encoding="utf-8")
    got = records(path)
    assert len(got) == 1 and isinstance(got[0][1], Malformed)
    assert "aliases" in got[0][1].message


def test_yaml_is_safe_and_broken_yaml_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "a.yaml"
    path.write_text("- event_name: !!python/object/apply:os.system ['echo hi']\n", encoding="utf-8")
    got = records(path)
    assert isinstance(got[0][1], Malformed)
    broken = tmp_path / "b.yaml"
    broken.write_text("- event_name: Purchase\n- [unclosed\n", encoding="utf-8")
    got = records(broken)
    assert got[0] == (1, {"event_name": "Purchase"})
    assert isinstance(got[1][1], Malformed) and got[1][0] >= 2


def test_json_data_wrapper_lines() -> None:
    got = records(FIXTURES / "orders.json")
    assert [line for line, _ in got] == [3, 11]
    assert got[0][1]["user_data"]["page_id"] == "1122334455"


def test_json_list_events_wrapper_single_object_and_concatenated(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text('[\n {"event_name": "A"},\n\n {"event_name": "B"}\n]', encoding="utf-8")
    assert records(path) == [(2, {"event_name": "A"}), (4, {"event_name": "B"})]
    wrapped = tmp_path / "b.json"
    wrapped.write_text('{"meta": 1,\n "events": [{"event_name": "A"},\n{"event_name": "B"}]}', encoding="utf-8")
    assert records(wrapped) == [(2, {"event_name": "A"}), (3, {"event_name": "B"})]
    single = tmp_path / "c.json"
    single.write_text('\n{"event_name": "A"}\n{"event_name": "B"}\n', encoding="utf-8")
    assert records(single) == [(2, {"event_name": "A"}), (3, {"event_name": "B"})]


def test_json_streams_across_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readers, "_CHUNK", 7)
    path = tmp_path / "a.json"
    events = [{"event_name": "Purchase", "value": 1234567 + i, "n": "é" * i} for i in range(30)]
    path.write_text("[\n" + ",\n".join(json.dumps(e, ensure_ascii=False) for e in events) + "\n]", encoding="utf-8")
    assert records(path) == [(i + 2, e) for i, e in enumerate(events)]


def test_json_broken_and_oversized(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "a.json"
    path.write_text('[{"event_name": "A"},\n{"event_name": }]', encoding="utf-8")
    got = records(path)
    assert got[0] == (1, {"event_name": "A"})
    assert got[1][0] == 2 and isinstance(got[1][1], Malformed)
    monkeypatch.setattr(readers, "MAX_RECORD_CHARS", 100)
    monkeypatch.setattr(readers, "_CHUNK", 64)
    big = tmp_path / "b.json"
    big.write_text('[{"x": "' + "z" * 10_000 + '"}]', encoding="utf-8")
    got = records(big)
    assert len(got) == 1 and isinstance(got[0][1], Malformed) and "larger" in got[0][1].message


def test_ndjson_lines_blank_lines_and_bad_lines(tmp_path: Path) -> None:
    assert [line for line, _ in records(FIXTURES / "orders.ndjson")] == [1, 3]
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"a": 1}\n[1]\nnot json\n{"b": 2}\n')
    got = records(path)
    assert got[0] == (1, {"a": 1})
    assert isinstance(got[1][1], Malformed) and isinstance(got[2][1], Malformed)
    assert got[3] == (4, {"b": 2})


@pytest.mark.parametrize(
    ("head", "fmt"),
    [
        (b'[{"a": 1}]', "json"),
        (b'{"a": 1}\n{"a": 2}\n', "ndjson"),
        (b'{"data": [\n', "json"),
        (b"- event_name: Purchase\n", "yaml"),
        (b"events:\n  - a: 1\n", "yaml"),
        (b"event_name,email\n", "csv"),
        (b"event_name\temail\n", "tsv"),
    ],
)
def test_stdin_sniffing(head: bytes, fmt: str) -> None:
    assert sniff(head) == fmt


def test_stdin_is_read_with_line_numbers(monkeypatch: pytest.MonkeyPatch) -> None:
    data = b"event_name,email\nPurchase,a@example.com\nAddToCart,b@example.com\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    got = records("-")
    assert [line for line, _ in got] == [2, 3]


def test_unknown_extension_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        records(tmp_path / "a.xlsx")
    with pytest.raises(UsageError):
        records(tmp_path / "missing.csv")
    with pytest.raises(UsageError):
        records(tmp_path / "a.txt", "xml")


# Any text but NUL, which marks a line as binary data (test_corpus.py: nul_in_value.csv).
_CELL = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=20)


@given(st.lists(st.dictionaries(st.sampled_from(["a", "b", "c"]), _CELL, min_size=3, max_size=3), max_size=8))
@settings(max_examples=40, deadline=None)
def test_csv_round_trip_with_any_text(rows: list[dict[str, str]]) -> None:
    import csv
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "a.csv"
        with open(path, "w", encoding="utf-8", newline="") as out:
            writer = csv.DictWriter(out, fieldnames=["a", "b", "c"])
            writer.writeheader()
            writer.writerows(rows)
        got = [record for _, record in records(path)]
    # rows of blank cells are skipped like blank lines; every other row comes back as written
    assert got == [r for r in rows if "".join(r.values()).strip()]


def test_deeply_nested_json_is_malformed_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "a.json"
    path.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    got = records(path)
    assert len(got) == 1 and isinstance(got[0][1], Malformed)
    lines = tmp_path / "b.ndjson"
    lines.write_text('{"a": ' + "[" * 5000 + "]" * 5000 + '}\n{"b": 1}\n', encoding="utf-8")
    got = records(lines)
    assert isinstance(got[0][1], Malformed) and got[1] == (2, {"b": 1})
