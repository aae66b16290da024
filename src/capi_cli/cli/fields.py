"""`capi fields`: every canonical field and its rules, or what a preset maps (SPEC §4)."""

from __future__ import annotations

import typer

from capi_cli.cli.common import TableJson, write_json, write_table


def register(app: typer.Typer) -> None:
    app.command("fields")(fields)


def fields(
    preset: str = typer.Option(None, "--preset", metavar="NAME", help="Show a preset's mapping instead."),
    fmt: TableJson = typer.Option(TableJson.table, "--format", help="table or json."),
) -> None:
    """List the fields capi reads: aliases, which channel needs them, how they are normalised and hashed.

    Example: capi fields --preset shopify
    """
    if preset:
        from capi_cli.inputs.presets import load_preset

        spec = load_preset(preset)
        rows = [{"column": column, "field": target} for column, target in spec.columns.items()]
        if fmt == TableJson.json:
            write_json({"preset": preset, "source": spec.source, "columns": spec.columns, "set": spec.sets,
                        "group_by": spec.group_by, "where": spec.where})
            return
        write_table([r for r in rows if r["field"] is not None], ["column", "field"],
                    title=f"preset {preset}: {spec.source}")
        extras = [f"set {k}={v}" for k, v in spec.sets.items()] + [f"where {w}" for w in spec.where]
        if spec.group_by:
            extras.append(f"group-by {spec.group_by}")
        ignored = sum(1 for r in rows if r["field"] is None)
        typer.echo("\n".join([*extras, f"{ignored} other documented columns ignored (null)"]))
        return
    from capi_cli.events.catalogue import catalogue

    entries = catalogue()
    if fmt == TableJson.json:
        write_json(entries)
        return
    write_table(
        [{**e, "aliases": ", ".join(e["aliases"]), "required_for": ", ".join(e["required_for"]),
          "hashed": "yes" if e["hashed"] else ""} for e in entries],
        ["name", "aliases", "required_for", "hashed", "rule", "example"],
    )
