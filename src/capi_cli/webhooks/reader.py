"""Reading webhook dumps: files, directories and stdin, plain or gzip-compressed.

Each input is opened once and read line by line in constant memory; `documents.DocumentStream`
turns the lines into documents, whatever JSON layout they were written in (NDJSON, pretty-printed,
arrays, concatenated, any mix). Broken input becomes an `Unreadable(file, line, reason)` and
reading goes on with the next document.
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO

from capi_cli.errors import UsageError
from capi_cli.streams import Prefixed
from capi_cli.webhooks.documents import MAX_DOCUMENT_BYTES, DocumentStream, form_fields, looks_like_form
from capi_cli.webhooks.model import Document, Unreadable

__all__ = ["MAX_DOCUMENT_BYTES", "Input", "form_fields", "iter_inputs", "looks_like_form", "read_input"]

STDIN_NAME = "<stdin>"

_SNIFF_BYTES = 8192
_GZIP_MAGIC = b"\x1f\x8b"


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
    stream = DocumentStream(name)
    for number, line in _lines(name, reader):
        if isinstance(line, Unreadable):
            yield from stream.broken_line(line)
        else:
            yield from stream.feed(number, line)
    yield from stream.close()


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
