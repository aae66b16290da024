"""`capi dataset`: the dataset linked to the configured WhatsApp Business Account, Page or
Instagram account; `--create` gets or creates it on Meta's side, `--save` stores its id."""

from __future__ import annotations

import typer

from capi_cli.cli.common import TableJson, info, settings, state, warn, write_json

CHANNELS = ("whatsapp", "messenger", "instagram")


def register(app: typer.Typer) -> None:
    app.command("dataset")(dataset)


def dataset(
    ctx: typer.Context,
    channel: str = typer.Option(None, "--channel", help="whatsapp, messenger or instagram (default: the first configured)."),
    create: bool = typer.Option(False, "--create", help="Ask Meta for the asset's dataset, created if it has none."),
    save: bool = typer.Option(False, "--save", help="With --create: store the id as the profile's dataset_id."),
    fmt: TableJson = typer.Option(TableJson.table, "--format", help="table or json."),
) -> None:
    """Show the dataset of your WhatsApp Business Account, Page or Instagram account; get or create it.

    Example: capi dataset --create --save
    """
    from capi_cli.datasets import check_channel, configured_dataset, get_or_create
    from capi_cli.errors import UsageError

    if save and not create:
        raise UsageError("--save stores the id --create gets: give both")
    current = settings(ctx)
    chosen = check_channel(channel.lower() if channel else None)
    found = get_or_create(current, chosen) if create else configured_dataset(current, chosen)
    if fmt is TableJson.json:
        write_json(found.to_dict())
    else:
        print(found.dataset_id or "-")
    if not create:
        info(ctx, f"{found.asset_kind} {found.asset_id}: configured dataset {found.dataset_id or 'none'}; "
                  "`capi dataset --create` asks Meta for the asset's own")
        return
    if save and found.dataset_id != current.dataset_id:
        from capi_cli.config_edit import set_profile_value

        st = state(ctx)
        path, name = set_profile_value(st.config_file, st.profile, "dataset_id", found.dataset_id or "")
        info(ctx, f"{path}: profiles.{name}.dataset_id = {found.dataset_id}")
    elif found.configured and found.configured != found.dataset_id:
        warn(f"the profile's dataset_id {found.configured} is not this {found.asset_kind}'s dataset; "
             "--save replaces it")
    elif not found.configured:
        info(ctx, "not stored: `capi dataset --create --save` stores it in the profile")


__all__ = ["register", "CHANNELS"]
