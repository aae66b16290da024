"""How this process and a worker process speak: length-prefixed pickles over a pipe."""

from __future__ import annotations

from typing import IO

_HEADER = 8
PLAIN = "plain"  # a message holding a PlainBlock's fields, not records


def write(stream: IO[bytes], data: bytes) -> None:
    stream.write(len(data).to_bytes(_HEADER, "little"))
    stream.write(data)
    stream.flush()


def read(stream: IO[bytes]) -> bytes | None:
    header = stream.read(_HEADER)
    if len(header) < _HEADER:
        return None
    size = int.from_bytes(header, "little")
    data = stream.read(size)
    return data if len(data) == size else None
