"""Which feature store a command uses when the user names none: the workspace's default backbone."""

from __future__ import annotations

from pipeline.errors import StoreError
from pipeline.workspace import Workspace


def choose_store(workspace: Workspace, backbone: str | None) -> str:
    """`backbone` if given, else the workspace's default backbone, else the only store; a StoreError that lists
    the stores and says how to choose otherwise."""
    root = workspace.root / "features"
    stores = workspace.stores()
    listing = ", ".join(stores) or "none"
    if backbone is not None:
        if backbone not in stores:
            raise StoreError(f"no feature store {backbone!r} in {root} (stores: {listing}); run `chex embed` first")
        return backbone
    default = workspace.default_backbone
    if default is not None and default in stores:
        return default
    if len(stores) == 1:
        return stores[0]
    if not stores:
        raise StoreError(f"no feature store in {root}; embed the images first with `chex embed`")
    stale = f" (the default backbone {default!r} has no store)" if default else ""
    raise StoreError(
        f"several feature stores in {root}: {listing}{stale}; pass --backbone NAME, or set the workspace "
        f"default once with `chex workspace default-backbone NAME`"
    )


def note_new_store(workspace: Workspace, backbone: str) -> bool:
    """Make `backbone` the default when the workspace has none (the first store embedded); True if it did."""
    current = workspace.default_backbone
    if current is not None and current in workspace.stores():
        return False
    workspace.set_default_backbone(backbone)
    return True
