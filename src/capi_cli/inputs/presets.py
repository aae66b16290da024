"""Built-in mappings for real platform exports (`--preset NAME`, SPEC §4), kept as YAML files beside
this module in `--map`'s format: `columns` (their column -> our field, null to ignore it), and
optionally `set` (constants), `group_by` and `where` (default filters). Each file names its source."""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from capi_cli.errors import UsageError
from capi_cli.inputs.suggest import did_you_mean


@dataclass
class MapSpec:
    """A --map file or a preset: everything the `--map` format can say."""

    columns: dict[str, str | None] = field(default_factory=dict)
    sets: dict[str, Any] = field(default_factory=dict)
    group_by: str | None = None
    where: list[str] = field(default_factory=list)
    source: str | None = None


def preset_names() -> list[str]:
    folder = resources.files("capi_cli.inputs") / "presets"
    return sorted(entry.name[:-5] for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def load_preset(name: str) -> MapSpec:
    import yaml

    names = preset_names()
    if name not in names:
        raise UsageError(f"--preset {name!r}: no such preset (presets: {', '.join(names)}){did_you_mean(name, names)}")
    text = (resources.files("capi_cli.inputs") / "presets" / f"{name}.yaml").read_text(encoding="utf-8")
    return parse_spec(yaml.safe_load(text), f"preset {name}")


def parse_spec(data: Any, where: str) -> MapSpec:
    """A mapping document: either flat (`{their column: field}`, the original --map format) or
    sectioned (`columns:`, `set:`, `group_by:`, `where:`, `source:`)."""
    if not isinstance(data, dict):
        raise UsageError(f"{where}: expected a mapping like {{'Order Total': value, 'Customer Phone': phone}}")
    if not isinstance(data.get("columns"), dict):
        return MapSpec(columns={str(k): (None if v is None else str(v)) for k, v in data.items()})
    extra = set(data) - {"columns", "set", "group_by", "where", "source"}
    if extra:
        raise UsageError(f"{where}: unknown section {sorted(extra)[0]!r} (columns, set, group_by, where, source)")
    sets = data.get("set") or {}
    where_list = data.get("where") or []
    if not isinstance(sets, dict) or not isinstance(where_list, list):
        raise UsageError(f"{where}: `set` must be a mapping and `where` a list of 'COLUMN=VALUE'")
    return MapSpec(
        columns={str(k): (None if v is None else str(v)) for k, v in data["columns"].items()},
        sets={str(k): v for k, v in sets.items()},
        group_by=None if data.get("group_by") is None else str(data["group_by"]),
        where=[str(w) for w in where_list],
        source=None if data.get("source") is None else str(data["source"]),
    )
