"""Byte streams shared by the readers of events files and webhook dumps."""

from __future__ import annotations

import io
from typing import IO, Any


class Prefixed(io.RawIOBase):
    """The bytes already read to sniff a format, followed by the rest of a stream that cannot
    seek back (stdin, pipes). Wrap it in io.BufferedReader."""

    def __init__(self, head: bytes, rest: IO[bytes]) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        if self._head:
            n = min(len(view), len(self._head))
            view[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(view))
        n = len(data)
        view[:n] = data
        return n
