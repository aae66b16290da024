"""Reading webhook dumps: files, directories and stdin, in whatever JSON layout they were written.

Each input is sniffed once. A file whose first lines are complete JSON documents (or form bodies)
is read line by line, in constant memory however large: NDJSON/JSONL logs, and several documents
concatenated on a line. Anything else (a pretty-printed document, a JSON array, documents
concatenated across lines) is parsed as one text of at most MAX_DOCUMENT_BYTES, with the
elements of a top-level array read one by one so each keeps its own line number.
Broken input becomes an `Unreadable(file, line, reason)` and reading goes on with the next line
or document.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO
from urllib.parse import parse_qsl

from capi_cli.errors import UsageError
from capi_cli.streams import Prefixed
from capi_cli.webhooks.model import Document, Unreadable

# A multi-line document (or a whole-file array) is held in memory; NDJSON never is.
MAX_DOCUMENT_BYTES = 256 * 1024 * 1024
STDIN_NAME = "<stdin>"

_SNIFF_LINES = 5
_SNIFF_BYTES = 8192
_GZIP_MAGIC = b"\x1f\x8b"
_WS = re.compile(r"[ \t\n\r]*")
# `key=value&key=value`: a form-encoded body as Twilio posts it.
_FORM = re.compile(r"[A-Za-z0-9_.%\[\]-]+=[^&\s]*(?:&[A-Za-z0-9_.%\[\]-]+=[^&\s]*)*")
# Where to pick up again after a broken multi-line document: the next line opening a document.
_RESYNC = re.compile(r"\n(?=[{\[])")
_DECODER = json.JSONDecoder()
_HUGE_NUMBER = "invalid JSON: a number with more than 4300 digits"


@dataclass(frozen=True, slots=True)
class Input:
    """One file to read, or stdin when `path` is None."""

    name: str
    path: str | None


def resolve_inputs(paths: Iterable[str]) -> list[str | None]:
    """Check every PATH before anything is read; None stands for stdin (`-`)."""
    resolved: list[str | None] = []
    for path in paths:
        if path == "-":
            if None not in resolved:
                resolved.append(None)
        elif not os.path.exists(path):
            raise UsageError(f"{path}: no such file or directory")
        else:
            resolved.append(path)
    return resolved


def iter_inputs(paths: Iterable[str | None]) -> Iterator[Input]:
    """Files in the given order; directories recursively, sorted, without hidden entries."""
    for path in paths:
        if path is None:
            yield Input(STDIN_NAME, None)
        elif os.path.isdir(path):
            for root, dirs, files in os.walk(path):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                for name in sorted(files):
                    if not name.startswith("."):
                        yield Input(os.path.join(root, name), os.path.join(root, name))
        else:
            yield Input(path, path)


def read_input(item: Input, stdin: IO[bytes] | None = None) -> Iterator[Document | Unreadable]:
    """Documents of one input; an input that cannot be opened is one Unreadable."""
    if item.path is None:
        if stdin is None:
            return
        yield from read_stream(item.name, stdin)
        return
    try:
        stream = open(item.path, "rb")  # noqa: SIM115 - closed below, after the generator is drained
    except OSError as exc:
        yield Unreadable(item.name, None, f"cannot read: {exc.strerror or exc}")
        return
    with stream:
        yield from read_stream(item.name, stream)


def read_stream(name: str, stream: IO[bytes]) -> Iterator[Document | Unreadable]:
    try:
        head = stream.read(_SNIFF_BYTES)
    except OSError as exc:
        yield Unreadable(name, None, f"cannot read: {exc.strerror or exc}")
        return
    reader: IO[bytes] = io.BufferedReader(Prefixed(head, stream), buffer_size=1 << 20)
    if head.startswith(_GZIP_MAGIC):
        reader = gzip.GzipFile(fileobj=reader, mode="rb")  # type: ignore[assignment]
    elif head.startswith((b"\xff\xfe", b"\xfe\xff")):
        yield Unreadable(name, 1, "UTF-16 text; convert the file to UTF-8")
        return
    elif b"\x00" in head:
        yield Unreadable(name, 1, "binary file, not a webhook dump")
        return
    yield from _read_text(name, reader)


def _read_text(name: str, reader: IO[bytes]) -> Iterator[Document | Unreadable]:
    lines = _lines(name, reader)
    head: list[tuple[int, str | Unreadable]] = []
    content = 0
    for numbered in lines:
        head.append(numbered)
        line = numbered[1]
        if isinstance(line, str) and line.strip():
            content += 1
            if content >= _SNIFF_LINES:
                break
    sniffed: dict[int, list[Document | Unreadable]] = {}
    if _is_line_oriented(name, head, sniffed):
        for number, line in _chain(head, lines):
            if isinstance(line, Unreadable):
                yield line
            elif number in sniffed:
                yield from sniffed.pop(number)
            else:
                yield from _parse_line(name, number, line)
    else:
        yield from _parse_text(name, _chain(head, lines))


def _chain(
    head: list[tuple[int, str | Unreadable]], rest: Iterator[tuple[int, str | Unreadable]]
) -> Iterator[tuple[int, str | Unreadable]]:
    yield from head
    yield from rest


def _lines(name: str, reader: IO[bytes]) -> Iterator[tuple[int, str | Unreadable]]:
    """(line number, text) pairs; a line that is not UTF-8 or too long comes as an Unreadable."""
    number = 0
    while True:
        try:
            raw = reader.readline(MAX_DOCUMENT_BYTES)
        except (OSError, EOFError, zlib.error) as exc:
            yield number + 1, Unreadable(name, number + 1, f"cannot read compressed data: {exc}")
            return
        if not raw:
            return
        number += 1
        if len(raw) >= MAX_DOCUMENT_BYTES and not raw.endswith(b"\n"):
            # Drop the rest of an endless line rather than holding it in memory.
            while raw and not raw.endswith(b"\n"):
                try:
                    raw = reader.readline(1 << 20)
                except (OSError, EOFError, zlib.error):
                    return
            yield number, Unreadable(name, number, f"line longer than {MAX_DOCUMENT_BYTES >> 20} MB")
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            yield (
                number,
                Unreadable(
                    name, number, f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})"
                ),
            )
            continue
        if number == 1 and line.startswith("\ufeff"):
            line = line[1:]
        yield number, line


def _is_line_oriented(
    name: str, head: list[tuple[int, str | Unreadable]], sniffed: dict[int, list[Document | Unreadable]]
) -> bool:
    """True when the first line is, on its own, complete JSON or a form body, or when most of the
    first lines are and the first is no lone `[`/`{` opening a multi-line document (a log whose
    first line broke).

    The documents parsed while sniffing are kept in `sniffed` so a huge one-line file is parsed once.
    """
    verdicts: list[bool] = []
    opener = False
    for number, line in head:
        if not isinstance(line, str) or not line.strip():
            continue
        stripped = line.strip()
        if not verdicts:
            opener = len(stripped) == 1 or line[0] in " \t"
        if line[0] in " \t":
            verdicts.append(False)
        elif stripped[0] in '{["':
            found = list(_parse_line(name, number, stripped))
            sniffed[number] = found
            verdicts.append(all(isinstance(d, Document) for d in found))
        else:
            verdicts.append(bool(_FORM.fullmatch(stripped)))
    if not verdicts:
        return False
    return verdicts[0] or (not opener and 2 * sum(verdicts) > len(verdicts))


def _parse_line(name: str, number: int, line: str) -> Iterator[Document | Unreadable]:
    """Every document on one line: one JSON value, several concatenated, or a form body."""
    text = line.strip()
    if not text:
        return
    if text[0] not in '{["' and _FORM.fullmatch(text):
        try:
            yield Document(form_fields(text), name, number)
        except ValueError:
            yield Unreadable(name, number, "form body whose %-escapes are not UTF-8 text")
        return
    pos, end = 0, len(text)
    while pos < end:
        try:
            value, pos = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            yield Unreadable(name, number, _json_reason(exc, text))
            return
        except RecursionError:
            yield Unreadable(name, number, "JSON nested too deeply")
            return
        except ValueError:  # an integer of more than 4300 digits (Python's int_max_str_digits)
            yield Unreadable(name, number, _HUGE_NUMBER)
            return
        yield Document(value, name, number)
        pos = _WS.match(text, pos).end()  # type: ignore[union-attr]


def _parse_text(name: str, lines: Iterator[tuple[int, str | Unreadable]]) -> Iterator[Document | Unreadable]:
    """Multi-line JSON: documents one after another, the elements of a top-level array one by one."""
    parts: list[str] = []
    size = 0
    first_line = 1
    for number, line in lines:
        if isinstance(line, Unreadable):
            # Keep line numbers right: the broken line is reported and read as an empty one.
            yield line
            line = "\n"
        if not parts:
            first_line = number
        size += len(line)
        if size > MAX_DOCUMENT_BYTES:
            yield Unreadable(
                name,
                first_line,
                f"multi-line JSON larger than {MAX_DOCUMENT_BYTES >> 20} MB; convert it to NDJSON (one document a line)",
            )
            return
        parts.append(line)
    text = "".join(parts)
    del parts
    lines_at = _LineCounter(text, first_line)
    pos, end = 0, len(text)
    in_array = False
    while True:
        pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
        if pos >= end:
            if in_array:
                yield Unreadable(name, lines_at(end), "truncated JSON: array not closed")
            return
        if in_array and text[pos] == "]":
            in_array = False
            pos += 1
            continue
        if not in_array and text[pos] == "[":
            in_array = True
            pos += 1
            continue
        try:
            value, after = _DECODER.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            yield Unreadable(name, lines_at(exc.pos), _json_reason(exc, text))
            pos, in_array = _resync(text, exc.pos), False
            continue
        except RecursionError:
            yield Unreadable(name, lines_at(pos), "JSON nested too deeply")
            pos, in_array = _resync(text, pos), False
            continue
        except ValueError:  # an integer of more than 4300 digits (Python's int_max_str_digits)
            yield Unreadable(name, lines_at(pos), _HUGE_NUMBER)
            pos, in_array = _resync(text, pos), False
            continue
        yield Document(value, name, lines_at(pos))
        pos = after
        if in_array:
            pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
            if pos < end and text[pos] == ",":
                pos += 1
            elif pos < end and text[pos] != "]":
                yield Unreadable(name, lines_at(pos), "invalid JSON: expected ',' or ']' in array")
                pos, in_array = _resync(text, pos), False


def _resync(text: str, pos: int) -> int:
    found = _RESYNC.search(text, pos)
    return found.end() if found else len(text)


class _LineCounter:
    """Line number of a position, for positions that only move forward."""

    def __init__(self, text: str, first_line: int) -> None:
        self._text = text
        self._pos = 0
        self._line = first_line

    def __call__(self, pos: int) -> int:
        if pos > self._pos:
            self._line += self._text.count("\n", self._pos, pos)
            self._pos = pos
        return self._line


def _json_reason(exc: json.JSONDecodeError, text: str) -> str:
    if exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string"):
        return "truncated JSON: the document ends before it is complete"
    return f"invalid JSON: {exc.msg} (column {exc.colno})"


def form_fields(body: str) -> dict[str, str]:
    """A form-encoded body as a dict; a repeated field keeps its first value.

    Raises ValueError (UnicodeDecodeError) when a %-escape decodes to bytes that are not UTF-8:
    the default `replace` would turn `ReferralCtwaClid=%FF` into a click id of U+FFFD and store it.
    """
    found: dict[str, str] = {}
    for key, value in parse_qsl(body, keep_blank_values=True, errors="strict"):
        found.setdefault(key, value)
    return found


def looks_like_form(body: str) -> bool:
    return bool(_FORM.fullmatch(body))
