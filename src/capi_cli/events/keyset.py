"""The one compact set of event keys a run holds (duplicate detection): 8 bytes a slot.

A Python set of strings costs ~100 bytes a key, too much for a million-row file; this keeps a
64-bit fingerprint per key in one flat array (open addressing, linear probing, at most 2/3 full).
A fingerprint collision (~3e-8 at a million keys) would report one event as a duplicate.
hash() is salted per process, which is fine: the set lives in one process for one run.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Sequence
from pathlib import Path

_MASK64 = 0xFFFFFFFFFFFFFFFF
_ZERO = (0,)


class KeySet:
    __slots__ = ("_table", "_mask", "_count", "_limit")

    def __init__(self, capacity: int = 1 << 14) -> None:
        size = 8
        while size < capacity:
            size <<= 1
        self._table = array("Q", _ZERO) * size
        self._mask = size - 1
        self._count = 0
        self._limit = size * 2 // 3

    def add(self, key: str) -> bool:
        """Add `key`; True when it was already there."""
        fingerprint = hash(key) & _MASK64 or 1  # 0 marks a free slot
        table = self._table
        mask = self._mask
        slot = fingerprint & mask
        while True:
            found = table[slot]
            if found == 0:
                table[slot] = fingerprint
                self._count += 1
                if self._count > self._limit:
                    self._grow()
                return False
            if found == fingerprint:
                return True
            slot = (slot + 1) & mask

    def add_all(self, keys: list[str]) -> list[int]:
        """`add` of each key, in order: the positions of those that were already there. The probe
        is add's, written out again in this loop: a call of add per key cost a re-run of a million
        sent rows a call each, and add itself is on every row's path."""
        found_at: list[int] = []
        table, mask = self._table, self._mask
        for position, key in enumerate(keys):
            fingerprint = hash(key) & _MASK64 or 1
            slot = fingerprint & mask
            while True:
                found = table[slot]
                if found == 0:
                    table[slot] = fingerprint
                    self._count += 1
                    if self._count > self._limit:
                        self._grow()
                        table, mask = self._table, self._mask
                    break
                if found == fingerprint:
                    found_at.append(position)
                    break
                slot = (slot + 1) & mask
        return found_at

    def _grow(self) -> None:
        old = self._table
        size = len(old) * 2
        self._table = table = array("Q", _ZERO) * size
        self._mask = mask = size - 1
        self._limit = size * 2 // 3
        for fingerprint in old:
            if fingerprint:
                slot = fingerprint & mask
                while table[slot]:
                    slot = (slot + 1) & mask
                table[slot] = fingerprint

    def __len__(self) -> int:
        return self._count


_SAMPLE_BYTES = 1 << 16
_MOST_EXPECTED = 1 << 22  # ~4M records: past that, the duplicate check's table grows as it fills


def expected_records(paths: Sequence[str | Path], input_format: str | None = None) -> int:
    """About how many records the files hold, sampled from each file's start: the size the
    duplicate check's table starts at, rather than growing to it step by step (a re-run of
    100,000 rows spent half its duplicate checking on that). Only files of a record a line (CSV,
    TSV, NDJSON): 0 for the others, and when it cannot tell (stdin)."""
    from capi_cli.events.readers import format_for

    total = 0
    for path in paths:
        if str(path) == "-" or format_for(path, input_format) not in ("csv", "tsv", "ndjson"):
            continue
        try:
            if not os.path.isfile(path):  # a pipe (<(gunzip -c ...)) is read once, by the reader alone
                continue
            size = os.path.getsize(path)
            with open(path, "rb") as stream:
                sample = stream.read(_SAMPLE_BYTES)
        except OSError:
            continue
        if sample:
            total += size * sample.count(b"\n") // len(sample)
    return min(total, _MOST_EXPECTED)
