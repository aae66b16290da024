"""The faults the sandbox can answer with: what a real network and Meta's servers do on bad days.

Each is the answer `capi` must survive without losing or doubling an event (SPEC §7, §11).
"""

from __future__ import annotations

from dataclasses import dataclass

# Fault kinds understood by the stand-in.
TRANSIENT = "transient"  # HTTP 500 with a Graph error {code 2, is_transient: true}; nothing counted
THROTTLE = "throttle"  # HTTP 400 with code 4/17/80004 and Retry-After; nothing counted
NO_BODY_503 = "bare-503"  # HTTP 503 with an empty body; nothing counted (the client cannot know that)
RESET_BEFORE = "reset-before"  # request read, connection reset, nothing counted
RESET_AFTER = "reset-after"  # events counted, then the connection is reset without an answer
SLOW = "slow"  # events counted, answer after `delay` seconds (longer than the client timeout)
WRONG_COUNT = "short-count"  # events counted, 200 with events_received off by one
FAULT_KINDS = (TRANSIENT, THROTTLE, NO_BODY_503, RESET_BEFORE, RESET_AFTER, SLOW, WRONG_COUNT)


@dataclass(frozen=True)
class Fault:
    kind: str
    code: int = 4  # for THROTTLE: 4, 17, 80004 ...
    retry_after: float | None = 0.0
    delay: float = 1.0  # for SLOW

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}")


def parse_fail(spec: str) -> tuple[Fault, int | None]:
    """`--fail KIND` (every events request) or `--fail KIND@N` (the Nth only, 1-based)."""
    kind, _, number = spec.partition("@")
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; one of {', '.join(FAULT_KINDS)}")
    if number and (not number.isdigit() or int(number) < 1):
        raise ValueError(f"{spec!r}: N in KIND@N is a request number from 1")
    # `slow` answers after the client has given up (capi's timeout is seconds, not a minute).
    return Fault(kind, delay=60.0), int(number) if number else None

