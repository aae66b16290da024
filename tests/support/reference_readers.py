"""The events readers as they were before block reading (commit b144fd2): one readline per line.

Kept only as the reference that tests/test_block_reading.py compares the block reader against,
record for record, on generated input. Not used by capi itself."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from typing import IO, Any

from capi_cli.events import readers as limits
from capi_cli.events.readers import Malformed

Record = tuple[int, Any]


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
            raw = readline(limits.MAX_LINE_BYTES)
            if not raw:
                return
            self.number += 1
            if len(raw) == limits.MAX_LINE_BYTES and not raw.endswith(b"\n"):
                while True:  # drop the rest of the line without holding it
                    more = readline(limits.MAX_LINE_BYTES)
                    if not more or more.endswith(b"\n"):
                        break
                self.bad[self.number] = f"line longer than {limits.MAX_LINE_BYTES // 1024} KiB"
                first = False  # (the one change: the old reader gave the next line first-line treatment)
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



# -- NDJSON


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
