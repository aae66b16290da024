"""`send --shard K/N`: hosts splitting one input without talking to each other. Each keeps the
events whose key falls in its share, decided from the event key alone (before anything is
hashed), the same way on every host. Exactly-once does not depend on it: on PostgreSQL the claims
still stop two hosts sending one event when shards overlap or a host re-runs without --shard."""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable
from dataclasses import dataclass

from capi_cli.errors import UsageError


@dataclass(frozen=True, slots=True)
class Shard:
    number: int  # 1-based
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
        if not match or not 1 <= int(match[1]) <= int(match[2]):
            raise UsageError(f"--shard {text!r}: give K/N with 1 <= K <= N, e.g. --shard 2/4")
        return cls(int(match[1]), int(match[2]))

    def holds(self, event_name: str, event_id: str) -> bool:
        # crc32: stable across processes and hosts (Python's hash() is salted per process).
        return zlib.crc32(f"{event_name}\x1f{event_id}".encode()) % self.count == self.number - 1


EventKey = tuple[str, str]


def skipped_among(
    sent_among: Callable[[list[EventKey]], set[EventKey]], shard: Shard | None, keys: list[EventKey]
) -> set[EventKey]:
    """What a host skips before hashing: another share's keys, and those of the rest that
    `sent_among` (the ledger, one query for the chunk) says were sent."""
    if shard is None:
        return sent_among(keys)
    others = {key for key in keys if not shard.holds(*key)}
    return others | sent_among([key for key in keys if key not in others])
