"""The workspace: one conventional home per on-disk contract, so user commands need no paths.

Layout (DESIGN.md "The workspace"):
    manifests/<dataset>.parquet, manifests/<dataset>.card.yaml
    images/<dataset>/...                  (synthetic cohort images; real data stays where it is)
    shards/<name>/                        webdataset tars + index + quarantine
    checkpoints/<name>/                   chex checkpoints (tensors + config)
    features/<backbone>/                  Zarr feature store
    results/<dataset>/<backbone>/<head>/  predictions + results Parquet
    reports/                              tables and figures
    workspace.json                        settings, e.g. {"default_backbone": "chexfound"}
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
