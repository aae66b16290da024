"""Streaming readers for events input: CSV/TSV, YAML, JSON, NDJSON, from files or stdin.

Each reader yields `(line, record)` where `line` is the 1-based line where the record starts and
`record` is a dict (a CSV row: `(header, cells)`), or a `Malformed` for a record that cannot be read. Memory does not grow with
the file: CSV and NDJSON go line by line, JSON arrays element by element, YAML node by node.
A reader that cannot go on (broken JSON, broken YAML) yields one Malformed and stops.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import IO, Any

from capi_cli.errors import UsageError
from capi_cli.events.records import Broken, Limits, Malformed, Record
from capi_cli.streams import Prefixed

__all__ = ["Broken", "Malformed", "PlainBlock", "Record", "read_items", "read_records", "source_name"]

# Limits that turn hostile or broken input into errors instead of memory exhaustion.
MAX_LINE_BYTES = 1 << 20  # one physical line of CSV/NDJSON
MAX_RECORD_CHARS = 1 << 20  # one JSON element
MAX_YAML_NODES = 10_000  # one YAML record, aliases expanded (an alias bomb stops here)
_CHUNK = 1 << 16

FORMATS = ("csv", "tsv", "yaml", "json", "ndjson")
_EXTENSIONS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".yaml": "yaml",
    ".yml": "yaml",
    ".json": "json",
    ".ndjson": "ndjson",
    ".jsonl": "ndjson",
}
STDIN = "-"




# Spreadsheets people export orders into; capi reads their CSV export instead.
SPREADSHEET_SUFFIXES = frozenset({".xlsx", ".xlsm", ".xls", ".ods", ".numbers"})


def is_empty_file(path: str | Path) -> bool:
    """A 0-byte file (not stdin): an export that failed, a data problem rather than 0 records."""
    try:
        return str(path) != STDIN and os.path.isfile(path) and os.path.getsize(path) == 0
    except OSError:
        return False


def source_name(path: str | Path) -> str:
    return "<stdin>" if str(path) == STDIN else str(path)


def format_for(path: str | Path, input_format: str | None = None) -> str | None:
    """The format named by --input-format or the extension; None for stdin/unknown (sniffed)."""
    if input_format:
        fmt = input_format.lower().lstrip(".")
        fmt = {"yml": "yaml", "jsonl": "ndjson"}.get(fmt, fmt)
        if fmt not in FORMATS:
            raise UsageError(f"--input-format {input_format!r}: use one of {', '.join(FORMATS)}")
        return fmt
    if str(path) == STDIN:
        return None
    return _EXTENSIONS.get(Path(path).suffix.lower())


def read_records(path: str | Path, input_format: str | None = None) -> Iterator[Record]:
    """Records of one input (a file or `-` for stdin), in order."""
    return _open(path, input_format, False)  # type: ignore[return-value] # no PlainBlock without `plain`


def read_items(path: str | Path, input_format: str | None = None) -> Iterator[Record | PlainBlock]:
    """Like read_records, but plain stretches of a CSV file come as PlainBlocks, not parsed: the
    worker processes read them (events.parallel)."""
    return _open(path, input_format, True)


def _open(path: str | Path, input_format: str | None, plain: bool) -> Iterator[Record | PlainBlock]:
    fmt = format_for(path, input_format)
    if str(path) == STDIN:
        head = sys.stdin.buffer.read(_CHUNK)
        stream: IO[bytes] = io.BufferedReader(Prefixed(head, sys.stdin.buffer))  # type: ignore[arg-type]
        yield from _read(stream, fmt or sniff(head), plain)
        return
    if os.path.isdir(path):
        raise UsageError(f"{path}: is a directory; give the event files themselves")
    if fmt is None:
        if Path(path).suffix.lower() in SPREADSHEET_SUFFIXES:
            raise UsageError(f"{path}: a spreadsheet; export it as CSV (Save as / Download > CSV) and give that file")
        raise UsageError(
            f"{path}: unknown file type; use .csv, .tsv, .yaml, .json, .ndjson or --input-format"
        )
    try:
        stream = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise UsageError(f"{path}: is a directory; give the event files themselves") from None
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    with stream:
        yield from _read(stream, fmt, plain)


def _read(stream: IO[bytes], fmt: str, plain: bool = False) -> Iterator[Record | PlainBlock]:
    if fmt in ("csv", "tsv"):
        return _csv_items(stream, "\t" if fmt == "tsv" else None, plain)
    if fmt == "ndjson":
        return _ndjson_records(stream)
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    if fmt == "json":
        from capi_cli.events.json_stream import json_records

        return json_records(text, _limits())
    from capi_cli.events.yaml_stream import yaml_records

    return yaml_records(text, _limits())


def _limits() -> Limits:
    # Read when a file is opened, so a test can lower them on this module.
    return Limits(chunk=_CHUNK, max_record_chars=MAX_RECORD_CHARS, max_yaml_nodes=MAX_YAML_NODES)


def sniff(head: bytes) -> str:
    """The format of stdin from its first bytes."""
    text = head.decode("utf-8", "ignore").lstrip("\ufeff").lstrip()
    if text.startswith("["):
        return "json"
    if text.startswith("{"):
        first = text.split("\n", 1)[0]
        try:
            value = json.loads(first)
        except ValueError:
            return "json"
        return "json" if isinstance(value, dict) and ({"data", "events"} & value.keys()) else "ndjson"
    if text.startswith(("---", "- ")) or re.match(r"[A-Za-z_\"']\w*[\"']?:\s", text):
        return "yaml"
    first = text.split("\n", 1)[0]
    return "tsv" if first.count("\t") > max(first.count(","), first.count(";")) else "csv"


# -- lines ---------------------------------------------------------------------------------------

_BLOCK = 1 << 17  # bytes read at a time


@dataclass(frozen=True, slots=True)
class Block:
    """Consecutive lines of a file: `text` when the whole block decoded at once (clean: every line
    UTF-8, no NUL, none too long), else `lines`, with each bad line as an empty line and its reason
    in `_Lines.bad`. `start` is the first line's number, `count` how many lines there are."""

    start: int
    count: int
    text: str | None
    lines: list[str] | None

    def iter_lines(self) -> Iterator[str]:
        """The lines, each with its line end (the file's last one may have none)."""
        if self.lines is not None:
            return iter(self.lines)
        return io.StringIO(self.text, newline="\n")  # type: ignore[arg-type] # splits at LF only


class _Lines:
    """Decoded lines of a byte stream, read a block at a time. Lines that are not UTF-8, hold a
    NUL or are too long come as empty lines with the reason in `bad` (by line number): a block without
    any of those is decoded in one call, which is most of the cost of reading a large file."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._read = stream.read
        self.number = 0  # lines produced so far
        self.bad: dict[int, str] = {}

    def __iter__(self) -> Iterator[str]:
        for block in self.blocks():
            yield from block.iter_lines()

    def blocks(self) -> Iterator[Block]:
        read = self._read
        pending = b""  # the start of a line whose end is not read yet
        first = True
        while True:
            chunk = read(_BLOCK)
            data = pending + chunk if pending else chunk
            if not chunk:  # end of the stream: what is left is a last line without "\n"
                if data:
                    yield self._block(data, first)
                return
            end = data.rfind(b"\n") + 1
            pending = data[end:]
            if end:
                yield self._block(data[:end], first)
                first = False
            if len(pending) >= MAX_LINE_BYTES:
                # A line too long to hold: reported, and the rest of it dropped as it is read.
                self.number += 1
                self.bad[self.number] = f"line longer than {MAX_LINE_BYTES // 1024} KiB"
                yield Block(self.number, 1, None, ["\n"])
                first = False
                pending = self._drop_line()

    def _drop_line(self) -> bytes:
        """Reads to the end of the current line; what follows it."""
        while True:
            chunk = self._read(_BLOCK)
            if not chunk:
                return b""
            end = chunk.find(b"\n")
            if end >= 0:
                return chunk[end + 1 :]

    def _block(self, data: bytes, first: bool) -> Block:
        start = self.number + 1
        clean = data[3:] if first and data.startswith(b"\xef\xbb\xbf") else data
        if len(data) < MAX_LINE_BYTES and b"\x00" not in clean \
                and not (first and clean.startswith((b"\xff\xfe", b"\xfe\xff"))):
            try:
                text = clean.decode("utf-8")
            except UnicodeDecodeError:
                pass
            else:
                count = text.count("\n") + (not text.endswith("\n"))
                self.number += count
                return Block(start, count, text, None)
        lines = [self._line(raw, first and index == 0) for index, raw in enumerate(_split_lf(data))]
        return Block(start, len(lines), None, lines)

    def _line(self, raw: bytes, first: bool) -> str:
        self.number += 1
        if len(raw) - raw.endswith(b"\n") >= MAX_LINE_BYTES:
            self.bad[self.number] = f"line longer than {MAX_LINE_BYTES // 1024} KiB"
            return "\n"
        if first:
            if raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            elif raw.startswith((b"\xff\xfe", b"\xfe\xff")):
                self.bad[self.number] = "UTF-16 text (save the file as UTF-8)"
                return "\n"
        if b"\x00" in raw:
            # NUL is valid UTF-8 and the csv module passes it into values, where it would be sent
            # to Meta as part of a click id; a NUL in a text export means binary data.
            self.bad[self.number] = "NUL byte in the line (binary data, not text)"
            return "\n"
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            self.bad[self.number] = "not UTF-8 text (save the file as UTF-8)"
            return raw.decode("utf-8", "replace")


def _split_lf(data: bytes) -> list[bytes]:
    """Lines ending at LF only (bytes.splitlines would also split at CR), each with its end."""
    parts = data.split(b"\n")
    last = parts.pop()
    lines = [part + b"\n" for part in parts]
    if last:
        lines.append(last)
    return lines


# -- CSV -----------------------------------------------------------------------------------------


def _delimiter(header: str) -> str:
    counts = {d: header.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


class _Offset:
    """Line number of the line before the reader's first (grows as plain blocks go to workers)."""

    __slots__ = ("value",)

    def __init__(self, value: int) -> None:
        self.value = value


def _csv_rows(reader: Any, header: list[str], offset: _Offset, bad: dict[int, str]) -> Iterator[Record | None]:
    """The records of a csv.reader, with their first line's number; None for a row left out (blank).

    The one place that turns csv rows into records: the file's reader and a worker reading a
    PlainBlock both go through it."""
    width = len(header)
    previous = reader.line_num
    while True:
        start = offset.value + previous + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            previous = reader.line_num
            reason = "a quoted field is never closed" if "end of data" in str(exc) else str(exc)
            yield start, Malformed(f"unreadable CSV row: {reason}")
            continue
        end = offset.value + reader.line_num
        previous = reader.line_num
        if bad:
            problem = next((bad.pop(n) for n in range(start, end + 1) if n in bad), None)
            if problem is not None:
                for n in range(start, end + 1):
                    bad.pop(n, None)
                yield start, Malformed(problem)
                continue
        if not row or (not row[0].strip() and not "".join(row).strip()):
            yield None  # blank lines, and rows of empty cells that spreadsheets leave at the end
            continue
        if len(row) != width:
            if len(row) < width:
                row.extend([""] * (width - len(row)))
            elif any(cell.strip() for cell in row[width:]):
                yield start, Malformed(f"row has {len(row)} fields but the header has {width}")
                continue
            else:
                del row[width:]
        yield start, (header, row)


@dataclass(frozen=True, slots=True)
class PlainBlock:
    """Whole lines of a CSV file, clean and without a single quote character, that start between
    two records: any process reads from them, with `records`, what the file's reader would."""

    header: list[str]
    delimiter: str
    start: int
    text: str

    def records(self) -> Iterator[Record]:
        reader = csv.reader(io.StringIO(self.text, newline="\n"), delimiter=self.delimiter, strict=True)
        for item in _csv_rows(reader, self.header, _Offset(self.start - 1), {}):
            if item is not None:
                yield item


def _csv_records(stream: IO[bytes], delimiter: str | None) -> Iterator[Record]:
    return _csv_items(stream, delimiter, False)  # type: ignore[return-value] # no PlainBlock without `plain`


def _csv_items(stream: IO[bytes], delimiter: str | None, plain: bool) -> Iterator[Record | PlainBlock]:
    """The records of a CSV stream. With `plain`, blocks that hold only plain records (no quote
    character, nothing bad) and start between two records come as PlainBlocks instead, for the
    worker processes to read: the parent then does not parse them at all."""
    lines = _Lines(stream)
    blocks = lines.blocks()
    first: list[str] = []
    header_line = 0
    for block in blocks:  # the header: first non-blank line
        for number, text in enumerate(block.iter_lines(), block.start):
            if first:
                first.append(text)
            elif number in lines.bad:
                # An overlong or non-UTF-8 first line comes as a blank one; it is the header all the
                # same, and skipping it would read a file of a million columns as an empty file (exit 0).
                yield number, Malformed(f"header: {lines.bad[number]}")
                return
            elif text.strip():
                header_line = number
                first.append(text)
        if first:
            break
    if not first:
        return
    loaded = header_line + len(first) - 1  # the last line handed to the csv reader
    waiting: list[Block] = []

    def feed() -> Iterator[Iterator[str]]:
        nonlocal loaded
        yield iter(first)
        while True:
            if waiting:
                yield waiting.pop().iter_lines()
                continue
            block = next(blocks, None)
            if block is None:
                return
            loaded = block.start + block.count - 1
            yield block.iter_lines()

    # strict: a quote left open at the end of the file is an error, not one field that swallows
    # every row after it (the rows would vanish from the report).
    reader = csv.reader(chain.from_iterable(feed()), delimiter=delimiter or _delimiter(first[0]), strict=True)
    try:
        header = [name.strip() for name in next(reader)]
    except csv.Error as exc:
        yield header_line, Malformed(f"header: {exc}")
        return
    offset = _Offset(header_line - 1)
    for item in _csv_rows(reader, header, offset, lines.bad):
        if item is not None:
            yield item
        if plain and offset.value + reader.line_num == loaded:
            # Between two records, at the end of what the reader was given: the next blocks that
            # are plain go to the workers whole.
            while (ahead := next(blocks, None)) is not None:
                loaded = ahead.start + ahead.count - 1
                if ahead.text is None or '"' in ahead.text:
                    waiting.append(ahead)
                    break
                offset.value += ahead.count
                yield PlainBlock(header, reader.dialect.delimiter, ahead.start, ahead.text)


# -- NDJSON --------------------------------------------------------------------------------------


def _ndjson_records(stream: IO[bytes]) -> Iterator[Record]:
    lines = _Lines(stream)
    for number, text in enumerate(lines, 1):
        if lines.bad:
            problem = lines.bad.pop(number, None)
            if problem is not None:
                yield number, Malformed(problem)
                continue
        if not text or text.isspace():
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            yield number, Malformed(f"not JSON: {exc.msg} (column {exc.colno})")
            continue
        except RecursionError:
            yield number, Malformed("JSON nested too deeply")
            continue
        except ValueError:
            # Python refuses integers of more than 4300 digits (int_max_str_digits), outside JSONDecodeError.
            yield number, Malformed("not JSON: a number with more than 4300 digits")
            continue
        if isinstance(value, dict):
            yield number, value
        else:
            yield number, Malformed(f"expected a JSON object, found {type(value).__name__}")
