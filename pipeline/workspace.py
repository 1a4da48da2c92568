"""The workspace: one conventional home per on-disk contract, so user commands need no paths.

Layout (docs/architecture.md "The workspace"):
    manifests/<dataset>.parquet, manifests/<dataset>.card.yaml
    images/<dataset>/...                  (synthetic cohort images; real data stays where it is)
    shards/<name>/                        webdataset tars + index + quarantine
    checkpoints/<name>/                   chex checkpoints (tensors + config)
    features/<backbone>/                  Zarr feature store
    results/<dataset>/<backbone>/<head>/  predictions + results Parquet
    reports/                              tables and figures
    workspace.json                        settings, e.g. {"default_backbone": "chexfound"}

Every user-given name that becomes a path goes through `check_name`, and every `--out` through `out_file`
(a file the user reads: an export, a table, a manifest) or `out_folder` (a workspace-kind folder: a feature
store, a pretraining run, a shard set), so no command overwrites the workspace's own files or climbs out of it.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import ConfigError

DEFAULT_WORKSPACE = Path("chex-workspace")
WORKSPACE_ENV = "CHEX_WORKSPACE"


def resolve_workspace(path: str | Path | None = None) -> Workspace:
    """The workspace named by `path`, else $CHEX_WORKSPACE, else ./chex-workspace."""
    if path is None:
        path = os.environ.get(WORKSPACE_ENV) or DEFAULT_WORKSPACE
    return Workspace(Path(path))


@dataclass(frozen=True)
class Workspace:
    """Paths of every contract inside one workspace folder; creating folders is the caller's job."""

    root: Path

    @property
    def manifests_dir(self) -> Path:
        return self.root / "manifests"

    def manifest_path(self, dataset: str) -> Path:
        return self.manifests_dir / f"{dataset}.parquet"

    def card_path(self, dataset: str) -> Path:
        return self.manifests_dir / f"{dataset}.card.yaml"

    def images_dir(self, dataset: str) -> Path:
        return self.root / "images" / dataset

    def shards_dir(self, name: str) -> Path:
        return self.root / "shards" / name

    def checkpoints_dir(self, name: str) -> Path:
        return self.root / "checkpoints" / name

    def features_dir(self, backbone: str) -> Path:
        return self.root / "features" / backbone

    def results_dir(self, dataset: str, backbone: str, head: str) -> Path:
        return self.root / "results" / dataset / backbone / head

    @property
    def reports_dir(self) -> Path:
        return self.root / "reports"

    def image_root(self, dataset: str) -> Path:
        """Where the data set's images are: the root recorded in its card by `chex manifest`, else images/<ds>/."""
        card = self.card_path(dataset)
        if card.is_file():
            import yaml  # only here: most commands never need it

            try:
                recorded = (yaml.safe_load(card.read_text()) or {}).get("image_root")
            except yaml.YAMLError:
                recorded = None
            if recorded:
                return Path(recorded)
        return self.images_dir(dataset)

    @property
    def settings_path(self) -> Path:
        return self.root / "workspace.json"

    def settings(self) -> dict:
        """The workspace's settings ({} when none were saved)."""
        try:
            data = json.loads(self.settings_path.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{self.settings_path}: not readable JSON ({exc}); fix or delete it") from exc
        return data if isinstance(data, dict) else {}

    @property
    def default_backbone(self) -> str | None:
        """The feature store commands use when none is named (set by `chex demo`, the first `chex embed`, or
        `chex workspace default-backbone NAME`)."""
        return self.settings().get("default_backbone")

    def set_default_backbone(self, name: str) -> None:
        from pipeline.atomic import write_text_atomic

        check_name(name, "backbone")
        self.root.mkdir(parents=True, exist_ok=True)
        write_text_atomic(self.settings_path, json.dumps({**self.settings(), "default_backbone": name}, indent=2))

    def stores(self) -> list[str]:
        """Feature stores in features/, sorted by name."""
        root = self.root / "features"
        return sorted(p.name for p in root.iterdir() if (p / "zarr.json").is_file()) if root.is_dir() else []

    def datasets(self) -> list[str]:
        """Data sets that have a manifest in this workspace, sorted by name."""
        if not self.manifests_dir.is_dir():
            return []
        return sorted(p.name.removesuffix(".parquet") for p in self.manifests_dir.glob("*.parquet"))


_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]{0,127}$")


def check_name(name: str, what: str) -> str:
    """Return `name` if it is safe as one file or folder name inside the workspace, else raise ConfigError.

    Every user-given name that becomes a path (data set, backbone, checkpoint, shard set, source, run) goes
    through here, so no name can climb out of the workspace (`..`, `/`) or hide (a leading dot).
    """
    if not isinstance(name, str) or not _NAME_PATTERN.fullmatch(name) or name in {".", ".."} or ".." in name:
        raise ConfigError(
            f"{what} name {name!r} is not allowed: use 1-128 letters, digits, '.', '_', '-', '=' or '+', "
            "starting with a letter or digit, with no '/' and no '..'"
        )
    return name


# What the workspace holds for its stages (layout above); an --out may not point into these (except the one
# place a command exists to write), nor at hidden files (.chex-lock, temporaries).
OWN_ENTRIES = ("workspace.json", "manifests", "images", "shards", "checkpoints", "features", "results", "reports",
               "corpus")  # fmt: skip


def out_file(ws: Workspace, path: str | Path, *, overwrite: bool = False, own: Path | None = None,
             option: str = "--out") -> Path:  # fmt: skip
    """`path` if it is safe as a file the command writes for the user (an export, a table, a manifest), else
    ConfigError: no `..` part, not a folder, not one of the workspace's own files (even with `overwrite`; `own`,
    the command's own place in the workspace, excepted), and not an existing file unless `overwrite`."""
    path = Path(path)
    _no_climbing(path, option)
    if path.is_dir():
        raise ConfigError(f"{option} {path} is a folder; give a file name, e.g. {path / 'out.parquet'}")
    inside = _own_part(ws, path)
    if inside is not None and not (own is not None and _same(path, own)):
        raise ConfigError(
            f"{option} {path} is in the workspace's own {inside} ({ws.root}), which chex never overwrites; write "
            f"elsewhere, e.g. {ws.root / 'exports' / path.name}"
        )
    if path.exists() and not overwrite:
        raise ConfigError(f"{option} {path} exists; pass --overwrite to replace it, or choose another file")
    return path


def out_folder(ws: Workspace, value: str | Path, kind: str, what: str, markers: tuple[str, ...],
               option: str = "--out") -> Path:  # fmt: skip
    """The folder a workspace-kind output (kind: features, checkpoints, shards) goes to, else ConfigError.

    A bare NAME is `<workspace>/<kind>/NAME` (checked by `check_name`). A path may not have a `..` part; inside
    the workspace it must be `<kind>/NAME`; anywhere it must be new, empty (hidden leftovers of a killed writer
    aside), or already `what` (holding one of `markers`, globs), so an output never lands in a parent, a home or
    another stage's folder.
    """
    path = Path(value)
    if not path.is_absolute() and len(path.parts) == 1 and path.name not in (".", ".."):
        return ws.root / kind / check_name(path.name, f"{option} {what}")
    _no_climbing(path, option)
    inside = _own_part(ws, path)
    if inside is not None or _inside(ws.root, path):
        relative = _relative(ws.root, path)
        if relative is None or len(relative.parts) != 2 or relative.parts[0] != kind:
            raise ConfigError(
                f"{option} {path} is inside the workspace {ws.root} but not a {what} folder; give a name "
                f"(it becomes {kind}/NAME) or a path outside the workspace"
            )
        check_name(relative.parts[1], f"{option} {what}")
    visible = [p for p in path.iterdir() if not p.name.startswith(".")] if path.is_dir() else []  # temps don't count
    if path.exists() and (not path.is_dir() or (visible and not _holds(path, markers))):
        raise ConfigError(
            f"{option} {path} exists and is not a {what}; chex writes a {what} only into a new or empty folder "
            "(or one that already holds it): choose a new folder"
        )
    return path


def _no_climbing(path: Path, option: str) -> None:
    if ".." in path.parts:
        raise ConfigError(f"{option} {path}: a '..' part is not allowed; give the folder as an absolute path")


def _holds(folder: Path, markers: tuple[str, ...]) -> bool:
    return any(next(folder.glob(marker), None) is not None for marker in markers)


def _relative(root: Path, path: Path) -> Path | None:
    try:
        return path.resolve().relative_to(root.resolve())
    except ValueError:
        return None


def _inside(root: Path, path: Path) -> bool:
    relative = _relative(root, path)
    return relative is not None and relative.parts != ()


def _same(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


def _own_part(ws: Workspace, path: Path) -> str | None:
    """Which of the workspace's own entries `path` is or lies in (None: not the workspace's)."""
    relative = _relative(ws.root, path)
    if relative is None:
        return None
    if relative.parts == ():
        return "folder"
    first = relative.parts[0]
    if first in OWN_ENTRIES:
        return first if "." in first else f"{first}/"
    if any(part.startswith(".") for part in relative.parts):
        return f"hidden file {relative}"
    return None
