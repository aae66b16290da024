"""JSON document streams: any mix of one-line and multi-line documents, arrays and NDJSON.

Lines are fed one at a time. A line that is, on its own, one JSON value (an NDJSON log, the bulk
of real dumps) is decoded at once: that is the fast path, one `raw_decode` per line. Anything
else goes through a small scanner that follows brackets and strings across lines, so a
pretty-printed document is held only until its closing bracket and the elements of a top-level
array are read one by one: memory is bounded by the largest document, not by the input.

A broken document becomes an `Unreadable` at `file:line` and reading resumes at the next
document. Where a broken document stops is decided the way a person reading the log would:
JSON strings never span lines, so a line ending inside a string is a document cut short; and a
line at column 0 that opens a document where the pending one cannot take a value, or that is a
complete document by itself, starts a new document (a log line after a truncated one).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from urllib.parse import parse_qsl

from capi_cli.webhooks.model import Document, Unreadable

# A multi-line document (or a whole-file array element) is held in memory; NDJSON never is.
MAX_DOCUMENT_BYTES = 256 * 1024 * 1024

# `key=value&key=value`: a form-encoded body as Twilio posts it.
FORM = re.compile(r"[A-Za-z0-9_.%\[\]-]+=[^&\s]*(?:&[A-Za-z0-9_.%\[\]-]+=[^&\s]*)*")
_WS = re.compile(r"[ \t\n\r]*")
# Structural tokens; a string (closed on its line) or a lone quote (a string the line cuts); scalars.
_TOKEN = re.compile(r'"[^"\\\n]*(?:\\.[^"\\\n]*)*"|[{}\[\],:]|"|[^\s{}\[\],:"]+')
_CLOSES = {"}": "{", "]": "["}
_DECODER = json.JSONDecoder()
_HUGE_NUMBER = "invalid JSON: a number with more than 4300 digits"
TRUNCATED = "truncated JSON: the document ends before it is complete"


class _Scan:
    """Where a document that starts on one line and goes on over the next ones stands."""

    __slots__ = ("closed_at", "prev", "stack", "unterminated", "mismatch")

    def __init__(self, stack: list[str]) -> None:
        self.stack = stack
        self.prev = ""
        self.closed_at = -1
        self.unterminated = False
        self.mismatch = False


def _scan(text: str, pos: int, scan: _Scan) -> _Scan:
    """Follow brackets from `pos` until the document closes, the line ends, or it cannot be JSON."""
    stack = scan.stack
    for match in _TOKEN.finditer(text, pos):
        token = match.group()
        first = token[0]
        if first == '"':
            if len(token) == 1:
                scan.unterminated = True
                return scan
            scan.prev = "v"
        elif first in "{[":
            stack.append(first)
            scan.prev = first
        elif first in "}]":
            if not stack or stack.pop() != _CLOSES[first]:
                scan.mismatch = True
                return scan
            scan.prev = "v"
            if not stack:
                scan.closed_at = match.end()
                return scan
        elif first in ",:":
            scan.prev = first
        else:
            scan.prev = "v"
    return scan


class DocumentStream:
    """Turns numbered lines of one input into Documents and Unreadables, in order."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._pending: list[str] = []
        self._pending_size = 0
        self._pending_line = 0
        self._scan: _Scan | None = None
        self._skipping = False  # a document over MAX_DOCUMENT_BYTES: followed to its end, not held
        self._array_line = 0  # > 0 while inside a top-level array whose elements are documents

    def feed(self, number: int, line: str) -> Iterator[Document | Unreadable]:
        if self._scan is None and not self._array_line:
            # The fast path: a whole line that is one JSON value (NDJSON) or a form body.
            text = line.strip()
            if not text:
                return
            if text[0] in '{["':
                try:
                    value, end = _DECODER.raw_decode(text)
                except (ValueError, RecursionError):
                    pass
                else:
                    if end == len(text):
                        yield Document(value, self.name, number)
                        return
            elif FORM.fullmatch(text):
                yield _form_document(text, self.name, number)
                return
        yield from self._feed_slow(number, line)

    def broken_line(self, bad: Unreadable) -> Iterator[Unreadable]:
        """A line that could not be decoded (not UTF-8, too long): it also breaks a pending document."""
        if self._scan is not None:
            if not self._skipping:
                yield Unreadable(self.name, self._pending_line, TRUNCATED)
            self._drop_pending()
        yield bad

    def close(self) -> Iterator[Unreadable]:
        if self._scan is not None:
            if not self._skipping:
                yield Unreadable(self.name, self._pending_line, TRUNCATED)
            self._drop_pending()
        if self._array_line:
            yield Unreadable(self.name, self._array_line, "truncated JSON: array not closed")
            self._array_line = 0

    # -- the slow path: documents that span lines, several on a line, arrays -----------------------

    def _feed_slow(self, number: int, line: str) -> Iterator[Document | Unreadable]:
        pos = 0
        if self._scan is not None:
            if line[:1] in ("{", "[") and not self._continues(line):
                yield Unreadable(self.name, self._pending_line, TRUNCATED)
                self._drop_pending()
            else:
                scan = _scan(line, 0, self._scan)
                if scan.unterminated or scan.mismatch:
                    yield self._pending_error(line, number)
                    self._drop_pending()
                    return
                if scan.closed_at < 0:
                    yield from self._hold(line)
                    return
                if self._skipping:
                    self._drop_pending()
                else:
                    self._pending.append(line[: scan.closed_at])
                    yield self._decode_pending()
                pos = scan.closed_at
        yield from self._top_level(number, line, pos)

    def _top_level(self, number: int, line: str, pos: int) -> Iterator[Document | Unreadable]:
        end = len(line)
        while True:
            pos = _WS.match(line, pos).end()  # type: ignore[union-attr]
            if pos >= end:
                return
            char = line[pos]
            if self._array_line and char in "],":
                if char == "]":
                    self._array_line = 0
                pos += 1
                continue
            if char not in '{["' and not self._array_line and FORM.fullmatch(line, pos, len(line.rstrip())):
                yield _form_document(line[pos:].strip(), self.name, number)
                return
            try:
                value, pos = _DECODER.raw_decode(line, pos)
            except json.JSONDecodeError as exc:
                if char in "{[":
                    scan = _scan(line, pos, _Scan([]))
                    if scan.closed_at < 0 and not (scan.unterminated or scan.mismatch):
                        if char == "[" and not self._array_line:
                            # A top-level array spanning lines: its elements are the documents.
                            self._array_line = number
                            pos += 1
                            continue
                        self._pending_line = number
                        self._scan = scan
                        yield from self._hold(line[pos:])
                        return
                yield Unreadable(self.name, number, _reason(exc, line))
                return
            except RecursionError:
                yield Unreadable(self.name, number, "JSON nested too deeply")
                return
            except ValueError:  # an integer of more than 4300 digits (Python's int_max_str_digits)
                yield Unreadable(self.name, number, _HUGE_NUMBER)
                return
            yield Document(value, self.name, number)

    def _continues(self, line: str) -> bool:
        """Whether a line opening with `{`/`[` at column 0 belongs to the pending document."""
        scan = self._scan
        assert scan is not None
        expects_value = scan.prev == ":" or (scan.prev in ("[", ",") and scan.stack[-1] == "[")
        if not expects_value:
            return False
        text = line.strip()
        try:
            _, end = _DECODER.raw_decode(text)
        except (ValueError, RecursionError):
            return True
        return end != len(text)  # a complete document of its own is a new log line

    def _hold(self, part: str) -> Iterator[Unreadable]:
        if self._skipping:
            return
        self._pending.append(part)
        self._pending_size += len(part)
        if self._pending_size > MAX_DOCUMENT_BYTES:
            # Keep following its brackets to find where it ends, without holding it.
            self._pending = []
            self._skipping = True
            yield Unreadable(
                self.name,
                self._pending_line,
                f"document larger than {MAX_DOCUMENT_BYTES >> 20} MB; convert it to NDJSON (one document a line)",
            )

    def _drop_pending(self) -> None:
        self._pending = []
        self._pending_size = 0
        self._scan = None
        self._skipping = False

    def _decode_pending(self) -> Document | Unreadable:
        text = "".join(self._pending)
        first = self._pending_line
        self._drop_pending()
        try:
            value, _ = _DECODER.raw_decode(text)
        except json.JSONDecodeError as exc:
            return Unreadable(self.name, first + text.count("\n", 0, exc.pos), _reason(exc, text))
        except RecursionError:
            return Unreadable(self.name, first, "JSON nested too deeply")
        except ValueError:
            return Unreadable(self.name, first, _HUGE_NUMBER)
        return Document(value, self.name, first)

    def _pending_error(self, line: str, number: int) -> Unreadable:
        scan = self._scan
        assert scan is not None
        if scan.unterminated:
            return Unreadable(self.name, self._pending_line, TRUNCATED)
        text = "".join(self._pending) + line
        try:
            _DECODER.raw_decode(text)
        except json.JSONDecodeError as exc:
            return Unreadable(self.name, self._pending_line + text.count("\n", 0, exc.pos), _reason(exc, text))
        except (ValueError, RecursionError):
            pass
        return Unreadable(self.name, number, "invalid JSON: brackets do not match")


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
    return bool(FORM.fullmatch(body))


def _form_document(text: str, name: str, number: int) -> Document | Unreadable:
    try:
        return Document(form_fields(text), name, number)
    except ValueError:
        return Unreadable(name, number, "form body whose %-escapes are not UTF-8 text")


def _reason(exc: json.JSONDecodeError, text: str) -> str:
    if exc.pos >= len(text.rstrip()) or exc.msg.startswith("Unterminated string"):
        return TRUNCATED
    return f"invalid JSON: {exc.msg} (column {exc.colno})"
