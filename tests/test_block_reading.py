"""The block reader (readers._Lines.blocks, PlainBlock) reads exactly what the line-by-line reader
did: the same records, line numbers and problems, whatever the bytes and wherever blocks end.

tests/reference_readers.py keeps the old reader as the reference. Blocks as small as one byte
put block ends everywhere: inside quoted fields, inside CRLF, inside UTF-8 sequences and BOMs.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capi_cli.events import readers
from capi_cli.events.readers import PlainBlock
from support import reference_readers

LONG = os.environ.get("CAPI_FUZZ") == "long"
CHECK = settings(max_examples=(3000 if LONG else 300), deadline=None,
                 suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

FRAGMENTS = [
    b"a", b"bc", b"Purchase", b"1767484800", b",", b",", b";", b"\t", b'"', b'""', b'"x"', b"\n", b"\n", b"\n",
    b"\r\n", b"\r", b"\x00", b"\xff", b"\xc3", b"\xc3\xa9", b"\xef\xbb\xbf", b"\xff\xfe", b" ", b"  \n", b",,\n",
    b"x" * 40, b"y" * 90, "é€😀".encode(), b"\xe2\x80\xa8",
]
CSV_BYTES = st.tuples(
    st.sampled_from([b"", b"\xef\xbb\xbf", b"\n", b"\xff\xfe"]),
    st.sampled_from([b"event_name,value,email\n", b"a;b\n", b"a\tb\tc\n", b'"a\nb",c\n', b"", b"h" * 80 + b"\n"]),
    st.lists(st.sampled_from(FRAGMENTS), max_size=60),
).map(lambda parts: parts[0] + parts[1] + b"".join(parts[2]))
# Mostly valid NDJSON lines, with the same hostile fragments between them.
NDJSON_BYTES = st.lists(
    st.sampled_from([b'{"a": 1}\n', b'{"b": "\xc3\xa9"}\r\n', b"[1]\n", b"\n", b"{\n", *FRAGMENTS]), max_size=40
).map(b"".join)
SIZES = st.tuples(st.sampled_from([1, 2, 3, 5, 8, 17, 64, 1 << 18]), st.sampled_from([16, 33, 64, 1 << 20]))


@contextmanager
def sizes(block: int, max_line: int) -> Iterator[None]:
    saved = readers._BLOCK, readers.MAX_LINE_BYTES
    readers._BLOCK, readers.MAX_LINE_BYTES = block, max_line
    try:
        yield
    finally:
        readers._BLOCK, readers.MAX_LINE_BYTES = saved


def expand(items: Iterator[Any]) -> list[Any]:
    out: list[Any] = []
    for item in items:
        if isinstance(item, PlainBlock):
            out.extend(item.records())
        else:
            out.append(item)
    return out


@given(CSV_BYTES, SIZES, st.sampled_from([None, ",", "\t"]))
@CHECK
def test_csv_block_reader_reads_what_the_line_reader_read(data: bytes, size: tuple[int, int], delimiter: str | None) -> None:
    with sizes(*size):
        expected = list(reference_readers._csv_records(io.BytesIO(data), delimiter))
        assert list(readers._csv_records(io.BytesIO(data), delimiter)) == expected
        # the same records when plain blocks are set aside for workers and read there
        assert expand(readers._csv_items(io.BytesIO(data), delimiter, True)) == expected


@given(NDJSON_BYTES, SIZES)
@CHECK
def test_ndjson_block_reader_reads_what_the_line_reader_read(data: bytes, size: tuple[int, int]) -> None:
    with sizes(*size):
        expected = list(reference_readers._ndjson_records(io.BytesIO(data)))
        assert list(readers._ndjson_records(io.BytesIO(data))) == expected


def test_plain_blocks_are_set_aside_only_between_records() -> None:
    # A quoted field spanning many blocks, then plain rows: the quoted record is read here, and the
    # plain blocks after it go to workers with the right line numbers.
    rows = [b"a,b\n", b'1,"x\n' + b"y\n" * 50 + b'z"\n'] + [b"%d,v\n" % i for i in range(200)]
    data = b"".join(rows)
    with sizes(64, 1 << 20):
        items = list(readers._csv_items(io.BytesIO(data), None, True))
    assert items[0][0] == 2 and items[0][1][1][1].count("\n") == 51
    blocks = [item for item in items if isinstance(item, PlainBlock)]
    assert blocks, "plain blocks were expected after the quoted record"
    assert expand(iter(items)) == list(reference_readers._csv_records(io.BytesIO(data), None))
    assert expand(iter(items))[-1] == (253, (["a", "b"], ["199", "v"]))


def test_a_file_of_plain_rows_is_set_aside_whole_after_the_first_block() -> None:
    data = b"event_name,value\n" + b"".join(b"Purchase,%d\n" % i for i in range(10_000))
    with sizes(4096, 1 << 20):
        items = list(readers._csv_items(io.BytesIO(data), None, True))
    plain = [item for item in items if isinstance(item, PlainBlock)]
    read_here = [item for item in items if not isinstance(item, PlainBlock)]
    assert sum(block.text.count("\n") for block in plain) + len(read_here) == 10_000
    assert len(read_here) < 10_000 // 4  # most of the file is left to the workers
