#!/usr/bin/env python3
"""Write the example webhook dump with times from the last hour, so the README's attribution
story works on any date (Meta attributes a conversion to an ad click for 7 days only).

    python3 examples/fresh_webhooks.py > webhooks-today.ndjson   # from examples/webhooks/ad-referrals.ndjson
    python3 examples/fresh_webhooks.py IN.ndjson OUT.ndjson

Only times move: WhatsApp's `timestamp` (Unix seconds, a string), Messenger's and Instagram's
`time`/`timestamp` (Unix milliseconds). Their spacing is kept; the newest becomes one hour ago.
Standard library only, so it runs before capi is installed.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

DEFAULT = Path(__file__).parent / "webhooks" / "ad-referrals.ndjson"
TIME_KEYS = ("timestamp", "time")
MILLISECONDS = 10**12  # a Unix time above this is in milliseconds (Messenger, Instagram)


def _times(node: Any) -> list[float]:
    found: list[float] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in TIME_KEYS and str(value).isdigit():
                number = int(value)
                found.append(number / 1000 if number > MILLISECONDS else number)
            else:
                found.extend(_times(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(_times(item))
    return found


def _shift(node: Any, seconds: int) -> Any:
    if isinstance(node, dict):
        shifted = {}
        for key, value in node.items():
            if key in TIME_KEYS and str(value).isdigit():
                number = int(value)
                moved = number + seconds * 1000 if number > MILLISECONDS else number + seconds
                shifted[key] = str(moved) if isinstance(value, str) else moved
            else:
                shifted[key] = _shift(value, seconds)
        return shifted
    if isinstance(node, list):
        return [_shift(item, seconds) for item in node]
    return node


def refresh(text: str, now: float | None = None) -> str:
    """The NDJSON dump `text` with its times moved so that the newest is an hour before `now`."""
    documents = [json.loads(line) for line in text.splitlines() if line.strip()]
    newest = max((t for doc in documents for t in _times(doc)), default=None)
    if newest is None:
        return text
    seconds = int((now if now is not None else time.time()) - 3600 - newest)
    return "".join(json.dumps(_shift(doc, seconds), separators=(",", ":")) + "\n" for doc in documents)


def main(argv: list[str]) -> int:
    source = Path(argv[0]) if argv else DEFAULT
    text = refresh(source.read_text(encoding="utf-8"))
    if len(argv) > 1:
        Path(argv[1]).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
