"""`chex workspace`: show a workspace and set its default backbone."""

from __future__ import annotations

from typing import Annotated

import typer

from pipeline.cli.app import WorkspaceOption, app, chex_command, console, workspace_from
from pipeline.errors import StoreError

workspace_app = typer.Typer(help="Show the workspace; set its default backbone.", no_args_is_help=True)
app.add_typer(workspace_app, name="workspace")


@workspace_app.command("show", help="Data sets, feature stores and the default backbone of the workspace.")
@chex_command
def show_command(workspace: WorkspaceOption = None) -> None:
    ws = workspace_from(workspace)
    default = ws.default_backbone
    stores = [f"{s} (default)" if s == default else s for s in ws.stores()]
    console.print(f"workspace {ws.root.resolve()}", highlight=False)
    console.print(f"data sets       {', '.join(ws.datasets()) or 'none'}", highlight=False)
    console.print(f"feature stores  {', '.join(stores) or 'none'}", highlight=False)
    if default and default not in ws.stores():
        console.print(f"default backbone {default!r} has no store yet", highlight=False)


@workspace_app.command("default-backbone", help="Set (or with no NAME, print) the backbone commands use by default.")
@chex_command
def default_backbone_command(
    name: Annotated[str | None, typer.Argument(help="A feature store under features/.")] = None,
    workspace: WorkspaceOption = None,
) -> None:
    ws = workspace_from(workspace)
    if name is None:
        console.print(ws.default_backbone or "none", highlight=False)
        return
    if name not in ws.stores():
        listing = ", ".join(ws.stores()) or "none"
        raise StoreError(f"no feature store {name!r} in {ws.root / 'features'} (stores: {listing})")
    ws.set_default_backbone(name)
    console.print(f"default backbone of {ws.root}: {name}", highlight=False)
