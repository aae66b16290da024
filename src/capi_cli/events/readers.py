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
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from capi_cli.errors import UsageError
from capi_cli.streams import Prefixed

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


class Broken(Exception):
    """Input a reader cannot go on with; becomes one Malformed at `line`."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


@dataclass(frozen=True, slots=True)
class Malformed:
    """A record that could not be read; `message` says why."""

    message: str


# A CSV row comes as (header, cells), cells as many as the header; other formats give a dict.
Record = tuple[int, "dict[str, Any] | tuple[list[str], list[str]] | Malformed"]


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
    fmt = format_for(path, input_format)
    if str(path) == STDIN:
        head = sys.stdin.buffer.read(_CHUNK)
        stream: IO[bytes] = io.BufferedReader(Prefixed(head, sys.stdin.buffer))  # type: ignore[arg-type]
        yield from _read(stream, fmt or sniff(head))
        return
    if fmt is None:
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
        yield from _read(stream, fmt)


def _read(stream: IO[bytes], fmt: str) -> Iterator[Record]:
    if fmt in ("csv", "tsv"):
        return _csv_records(stream, "\t" if fmt == "tsv" else None)
    if fmt == "ndjson":
        return _ndjson_records(stream)
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    if fmt == "json":
        from capi_cli.events.json_stream import json_records

        return json_records(text)
    from capi_cli.events.yaml_stream import yaml_records

    return yaml_records(text)


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


# -- CSV -----------------------------------------------------------------------------------------


class _Lines:
    """Decoded lines of a byte stream for the csv module, noting lines that are not UTF-8 or too long."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._readline = stream.readline
        self.number = 0
        self.bad: dict[int, str] = {}

    def __iter__(self) -> Iterator[str]:
        readline = self._readline
        first = True
        while True:
            raw = readline(MAX_LINE_BYTES)
            if not raw:
                return
            self.number += 1
            if len(raw) == MAX_LINE_BYTES and not raw.endswith(b"\n"):
                while True:  # drop the rest of the line without holding it
                    more = readline(MAX_LINE_BYTES)
                    if not more or more.endswith(b"\n"):
                        break
                self.bad[self.number] = f"line longer than {MAX_LINE_BYTES // 1024} KiB"
                yield "\n"
                continue
            if first:
                first = False
                if raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                elif raw.startswith((b"\xff\xfe", b"\xfe\xff")):
                    self.bad[self.number] = "UTF-16 text (save the file as UTF-8)"
                    yield "\n"
                    continue
            if b"\x00" in raw:
                # NUL is valid UTF-8 and the csv module passes it into values, where it would be sent
                # to Meta as part of a click id; a NUL in a text export means binary data.
                self.bad[self.number] = "NUL byte in the line (binary data, not text)"
                yield "\n"
                continue
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                self.bad[self.number] = "not UTF-8 text (save the file as UTF-8)"
                yield raw.decode("utf-8", "replace")


def _delimiter(header: str) -> str:
    counts = {d: header.count(d) for d in (",", ";", "\t")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def _csv_records(stream: IO[bytes], delimiter: str | None) -> Iterator[Record]:
    lines = _Lines(stream)
    source = iter(lines)
    pending: list[str] = []
    header_text = ""
    for text in source:  # the header: first non-blank line
        if lines.bad.get(lines.number):
            # An overlong or non-UTF-8 first line comes as a blank one; it is the header all the
            # same, and skipping it would read a file of a million columns as an empty file (exit 0).
            yield lines.number, Malformed(f"header: {lines.bad[lines.number]}")
            return
        if text.strip():
            header_text = text
            pending.append(text)
            break
    if not pending:
        return
    header_line = lines.number
    # strict: a quote left open at the end of the file is an error, not one field that swallows
    # every row after it (the rows would vanish from the report).
    reader = csv.reader(_chain(pending, source), delimiter=delimiter or _delimiter(header_text), strict=True)
    try:
        header = [name.strip() for name in next(reader)]
    except csv.Error as exc:
        yield header_line, Malformed(f"header: {exc}")
        return
    width = len(header)
    line_offset = header_line - 1
    previous = reader.line_num
    while True:
        start = line_offset + previous + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            previous = reader.line_num
            reason = "a quoted field is never closed" if "end of data" in str(exc) else str(exc)
            yield start, Malformed(f"unreadable CSV row: {reason}")
            continue
        end = line_offset + reader.line_num
        previous = reader.line_num
        if lines.bad:
            problem = next((lines.bad.pop(n) for n in range(start, end + 1) if n in lines.bad), None)
            if problem is not None:
                for n in range(start, end + 1):
                    lines.bad.pop(n, None)
                yield start, Malformed(problem)
                continue
        if not row or (not row[0].strip() and not "".join(row).strip()):
            continue  # blank lines, and rows of empty cells that spreadsheets leave at the end
        if len(row) != width:
            if len(row) < width:
                row.extend([""] * (width - len(row)))
            elif any(cell.strip() for cell in row[width:]):
                yield start, Malformed(f"row has {len(row)} fields but the header has {width}")
                continue
            else:
                del row[width:]
        yield start, (header, row)


def _chain(first: list[str], rest: Iterator[str]) -> Iterator[str]:
    yield from first
    yield from rest


# -- NDJSON --------------------------------------------------------------------------------------


def _ndjson_records(stream: IO[bytes]) -> Iterator[Record]:
    lines = _Lines(stream)
    for text in lines:
        number = lines.number
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
