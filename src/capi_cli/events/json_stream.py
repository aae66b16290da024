"""A JSON document read in chunks, one event at a time: a list, `{data: [...]}`, `{events: [...]}`,
one object, or several documents one after another; with the line where each event starts."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import IO, Any

from capi_cli.events.records import Broken, Limits, Malformed, Record


class _JsonStream:
    """A JSON text read in chunks, decoded one value at a time, with line numbers."""

    _WS = re.compile(r"[ \t\r\n]*")

    def __init__(self, text: IO[str], limits: Limits) -> None:
        self._text = text
        self.limits = limits
        self.buf = ""
        self.pos = 0
        self.eof = False
        self._decoder = json.JSONDecoder()
        self._counted_pos = 0
        self._counted_line = 1

    def line_at(self, pos: int) -> int:
        if pos > self._counted_pos:
            self._counted_line += self.buf.count("\n", self._counted_pos, pos)
            self._counted_pos = pos
        return self._counted_line

    def _fill(self) -> bool:
        if self.eof:
            return False
        try:
            chunk = self._text.read(self.limits.chunk)
        except UnicodeDecodeError:
            raise Broken(self.line_at(len(self.buf)), "not UTF-8 text (save the file as UTF-8)") from None
        if not chunk:
            self.eof = True
            return False
        if self.pos > self.limits.chunk:  # drop what has been consumed, keeping the line count
            self.line_at(self.pos)
            self.buf = self.buf[self.pos :]
            self._counted_pos -= self.pos
            self.pos = 0
        self.buf += chunk
        return True

    def peek(self) -> str | None:
        """The next non-blank character (not consumed), or None at the end."""
        while True:
            end = self._WS.match(self.buf, self.pos).end()  # type: ignore[union-attr]
            self.pos = end
            if end < len(self.buf):
                return self.buf[end]
            if not self._fill():
                return None

    def expect(self, char: str, what: str) -> None:
        found = self.peek()
        if found != char:
            raise Broken(self.line_at(self.pos), f"expected {what}, found {found or 'end of file'!r}")
        self.pos += 1

    def value(self) -> Any:
        self.peek()
        while True:
            try:
                value, end = self._decoder.raw_decode(self.buf, self.pos)
            except RecursionError:
                raise Broken(self.line_at(self.pos), "JSON nested too deeply") from None
            except json.JSONDecodeError as exc:
                if self.eof or len(self.buf) - self.pos > self.limits.max_record_chars:
                    if not self.eof:
                        raise Broken(self.line_at(self.pos), f"record larger than {self.limits.max_record_chars // 1024} KiB") from None
                    raise Broken(self.line_at(exc.pos), f"invalid JSON: {exc.msg}") from None
                self._fill()
                continue
            except ValueError as exc:
                # Not a JSONDecodeError: Python refuses to read an integer of more than 4300 digits
                # (a guard against quadratic int parsing); the record is broken, not the program.
                raise Broken(self.line_at(self.pos), f"invalid JSON: {_number_problem(exc)}") from None
            if end == len(self.buf) and not self.eof and self._fill():
                continue  # a number cut by the chunk boundary would decode short
            self.pos = end
            return value


def _number_problem(exc: ValueError) -> str:
    return "a number with more than 4300 digits" if "digits" in str(exc) else str(exc).split(":")[0]


def json_records(text: IO[str], limits: Limits) -> Iterator[Record]:
    stream = _JsonStream(text, limits)
    try:
        while (char := stream.peek()) is not None:
            if char == "[":
                stream.pos += 1
                yield from _json_array(stream)
            elif char == "{":
                yield from _json_object(stream)
            else:
                raise Broken(stream.line_at(stream.pos), "expected a list of events or an object")
    except Broken as exc:
        yield exc.line, Malformed(exc.message)


def _json_array(stream: _JsonStream) -> Iterator[Record]:
    if stream.peek() == "]":
        stream.pos += 1
        return
    while True:
        stream.peek()
        line = stream.line_at(stream.pos)
        value = stream.value()
        yield (line, value) if isinstance(value, dict) else (
            line, Malformed(f"expected an event object, found {type(value).__name__}")
        )
        char = stream.peek()
        if char == "]":
            stream.pos += 1
            return
        stream.expect(",", "',' or ']'")


def _json_object(stream: _JsonStream) -> Iterator[Record]:
    """`{data: [...]}` / `{events: [...]}` streamed; any other object is one record."""
    start = stream.line_at(stream.pos)
    stream.expect("{", "'{'")
    head: dict[str, Any] = {}
    not_a_list: Malformed | None = None
    streamed = False
    if stream.peek() == "}":
        stream.pos += 1
    else:
        while True:
            key = stream.value()
            if not isinstance(key, str):
                raise Broken(stream.line_at(stream.pos), "object keys must be strings")
            stream.expect(":", "':'")
            if key in ("data", "events") and stream.peek() == "[":
                stream.pos += 1
                streamed = True
                yield from _json_array(stream)
            else:
                head[key] = stream.value()
                if key in ("data", "events") and not streamed:
                    # `{events: 5}` is a list that is not one, not an event with a column `events`.
                    not_a_list = Malformed(f"'{key}' must be a list of events, found {type(head[key]).__name__}")
            if stream.peek() == "}":
                stream.pos += 1
                break
            stream.expect(",", "',' or '}'")
    if not streamed:
        yield start, (not_a_list or head)
