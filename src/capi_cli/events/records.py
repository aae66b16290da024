"""What the event readers give: a record with the line it starts on, or a Malformed one; and the
limits that turn hostile or broken input into errors instead of memory exhaustion. Shared by
`readers` and the JSON and YAML streams, which import nothing else of each other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class Broken(Exception):
    """Input a reader cannot go on with; becomes one Malformed at `line`."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


@dataclass(frozen=True, slots=True)
class Malformed:
    """A record that could not be read; `message` says why."""

    message: str


# A CSV row comes as (header, cells), cells as many as the header; other formats give a dict.
Record = tuple[int, "dict[str, Any] | tuple[list[str], list[str]] | Malformed"]


@dataclass(frozen=True, slots=True)
class Limits:
    """The readers' bounds, as `readers` holds them when a file is opened."""

    chunk: int  # characters read at a time
    max_record_chars: int  # one JSON element or YAML record
    max_yaml_nodes: int  # one YAML record, aliases expanded (an alias bomb stops here)
