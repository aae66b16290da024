"""The one compact set of event keys a run holds (duplicate detection): 8 bytes a slot.

A Python set of strings costs ~100 bytes a key, too much for a million-row file; this keeps a
64-bit fingerprint per key in one flat array (open addressing, linear probing, at most 2/3 full).
A fingerprint collision (~3e-8 at a million keys) would report one event as a duplicate.
hash() is salted per process, which is fine: the set lives in one process for one run.
"""

from __future__ import annotations

from array import array

_MASK64 = 0xFFFFFFFFFFFFFFFF


class KeySet:
    __slots__ = ("_table", "_mask", "_count", "_limit")

    def __init__(self, capacity: int = 1 << 14) -> None:
        size = 8
        while size < capacity:
            size <<= 1
        self._table = array("Q", bytes(8 * size))
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

    def _grow(self) -> None:
        old = self._table
        size = len(old) * 2
        self._table = table = array("Q", bytes(8 * size))
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
