"""YAML events read node by node through a safe loader, with aliases bounded: an alias bomb is an
error, not a hang. Scalars follow YAML 1.2, so `NO` (Norway) and `02134` (a zip) stay strings."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import IO, Any

from capi_cli.events.records import Broken, Limits, Malformed, Record


def _yaml_loader() -> type:
    import yaml

    class Loader(yaml.SafeLoader):
        """Safe loader with YAML 1.2 scalars: `NO` (Norway) stays a string, `02134` (a zip) too."""

    dropped = {"tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"}
    Loader.yaml_implicit_resolvers = {
        first: [(tag, rx) for tag, rx in resolvers if tag not in dropped]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
    )
    # No leading `+`: "+14155550123" is a phone, not a number.
    Loader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^-?(?:0|[1-9][0-9]*)$"), list("-0123456789"))
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^-?(?:(?:0|[1-9][0-9]*)\.[0-9]*(?:[eE][-+]?[0-9]+)?|(?:0|[1-9][0-9]*)[eE][-+]?[0-9]+)$"),
        list("-0123456789"),
    )
    return Loader


def _expanded_size(node: Any, memo: dict[int, int], active: set[int], cap: int) -> int:
    """Nodes in `node` with every alias expanded; shared nodes are counted each time they appear."""
    key = id(node)
    if key in memo:
        return memo[key]
    if key in active:
        raise ValueError("a YAML alias refers to itself")
    active.add(key)
    size = 1
    value = node.value
    if isinstance(value, list):
        for item in value:
            if isinstance(item, tuple):
                size += _expanded_size(item[0], memo, active, cap) + _expanded_size(item[1], memo, active, cap)
            else:
                size += _expanded_size(item, memo, active, cap)
            if size > cap:
                break
    active.discard(key)
    memo[key] = size
    return size


class _Budget:
    """The text stream as the YAML loader reads it, with a bound on the characters read for one record.

    PyYAML's pure-Python scanner reads about half a million characters a second, so a 20 MB scalar
    would take most of a minute; past MAX_RECORD_CHARS since the last record it is an error instead.
    """

    def __init__(self, text: IO[str], max_chars: int) -> None:
        self._text = text
        self.max_chars = max_chars
        self.used = 0
        self.line = 1  # where the record being read starts, for the error

    def read(self, size: int = -1) -> str:
        chunk = self._text.read(size)
        self.used += len(chunk)
        if self.used > self.max_chars:
            raise Broken(self.line, f"record larger than {self.max_chars // 1024} KiB")
        return chunk

    def start(self, line: int) -> None:
        self.used = 0
        self.line = line


def yaml_records(text: IO[str], limits: Limits) -> Iterator[Record]:
    import yaml
    from yaml.events import (
        DocumentEndEvent,
        MappingEndEvent,
        MappingStartEvent,
        SequenceEndEvent,
        SequenceStartEvent,
        StreamEndEvent,
    )

    budget = _Budget(text, limits.max_record_chars)
    try:
        # The loader reads (and checks) the first chunk as it is made: NUL or bytes that are not
        # UTF-8 at the very start fail here, before the loop below.
        loader = _yaml_loader()(budget)
    except yaml.YAMLError as exc:
        yield 1, Malformed(f"invalid YAML: {str(exc).splitlines()[0]}")
        return
    except UnicodeDecodeError:
        yield 1, Malformed("not UTF-8 text (save the file as UTF-8)")
        return

    def build(node: Any) -> Any:
        try:
            size = _expanded_size(node, {}, set(), limits.max_yaml_nodes)
        except (ValueError, RecursionError) as exc:
            raise Broken(node.start_mark.line + 1, f"invalid YAML: {exc}") from None
        if size > limits.max_yaml_nodes:
            raise Broken(
                node.start_mark.line + 1,
                f"record too large once its aliases are expanded (over {limits.max_yaml_nodes} nodes)",
            )
        try:
            value = loader.construct_document(node)
        except ValueError as exc:
            # Python refuses to read integers of more than 4300 digits (int_max_str_digits).
            if "digits" in str(exc):
                raise Broken(node.start_mark.line + 1, "invalid YAML: a number with more than 4300 digits") from None
            raise Broken(node.start_mark.line + 1, "invalid YAML: a value that does not fit its tag") from None
        except (IndexError, TypeError, OverflowError, AttributeError):
            # PyYAML's own constructors fail this way on explicit tags with odd values (`!!int ''`).
            raise Broken(node.start_mark.line + 1, "invalid YAML: a value that does not fit its tag") from None
        budget.start(node.end_mark.line + 1)
        return value

    def items() -> Iterator[Record]:
        loader.get_event()  # SequenceStart
        while not loader.check_event(SequenceEndEvent):
            node = loader.compose_node(None, None)
            value = build(node)
            line = node.start_mark.line + 1
            if isinstance(value, dict) and not all(type(k) is str for k in value):
                # `1: x`, `null: x`, `2026-03-01: x`: YAML keys need not be text; column names are.
                value = {str(k): v for k, v in value.items()}
            yield (line, value) if isinstance(value, dict) else (
                line, Malformed(f"expected an event mapping, found {type(value).__name__}")
            )
        loader.get_event()

    try:
        loader.get_event()  # StreamStart
        while not loader.check_event(StreamEndEvent):
            loader.get_event()  # DocumentStart
            if loader.check_event(SequenceStartEvent):
                yield from items()
            elif loader.check_event(MappingStartEvent):
                start = loader.get_event()
                head: dict[Any, Any] = {}
                streamed = False
                while not loader.check_event(MappingEndEvent):
                    key_node = loader.compose_node(None, None)
                    key = build(key_node)
                    if isinstance(key, list | dict):  # `? [a, b]` / `{[]: 1}`: cannot be a column name
                        raise Broken(key_node.start_mark.line + 1, "invalid YAML: a list or mapping as a key")
                    if key in ("events", "data") and loader.check_event(SequenceStartEvent):
                        streamed = True
                        yield from items()
                    else:
                        head[key] = build(loader.compose_node(None, None))
                loader.get_event()
                wrong = next((k for k in ("events", "data") if k in head), None)
                if not streamed and wrong is not None:
                    # `events: 5` is a list that is not one, not an event with a column `events`.
                    kind = type(head[wrong]).__name__
                    yield start.start_mark.line + 1, Malformed(f"'{wrong}' must be a list of events, found {kind}")
                elif not streamed and head:
                    yield start.start_mark.line + 1, {str(k): v for k, v in head.items()}
            else:
                node = loader.compose_node(None, None)
                if build(node) is not None:
                    raise Broken(node.start_mark.line + 1, "expected a list of events or {events: [...]}")
            if loader.check_event(DocumentEndEvent):
                loader.get_event()
            loader.anchors = {}
    except Broken as exc:
        yield exc.line, Malformed(exc.message)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        yield (mark.line + 1 if mark else 1), Malformed(f"invalid YAML: {exc.problem or exc.context}")
    except yaml.YAMLError as exc:  # ReaderError (NUL, control characters): its text spans lines
        yield 1, Malformed(f"invalid YAML: {str(exc).splitlines()[0]}")
    except UnicodeDecodeError:
        yield 1, Malformed("not UTF-8 text (save the file as UTF-8)")
    except RecursionError:
        yield 1, Malformed("invalid YAML: nested too deeply")
    finally:
        loader.dispose()
