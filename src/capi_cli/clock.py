"""The run's clock: "now" for the event-time rules and for rows without a time. One function, so a
test can move time instead of sleeping (monkeypatch `capi_cli.clock.now`)."""

from __future__ import annotations

import time


def now() -> float:
    return time.time()
