"""'Did you mean' for a column or field name nobody recognises."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """`; did you mean 'x'?` for the closest choice, or nothing."""
    options = {choice.strip().lower().replace(" ", "_"): choice for choice in choices}
    key = name.strip().lower().replace(" ", "_")
    close = difflib.get_close_matches(key, list(options), n=1, cutoff=0.75)
    return f"; did you mean {options[close[0]]!r}?" if close else ""
