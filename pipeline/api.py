"""A small Python API for notebooks: open a feature store, get its tokens as numpy, pandas or a torch Dataset.

    from pipeline import open_store
    store = open_store("chex-workspace")              # the workspace's default backbone
    ids, cls = store.image_ids, store.numpy("cls")     # (N,), (N, L, D) float32
    frame = store.pandas("pooled")                     # one row per image (every layer), indexed by image_id
    ds = store.dataset("patch")                        # torch Dataset of (image_id, tensor)

Only complete rows are visible: the Zarr arrays underneath are allocated in whole write units, so rows of
unfinished units, and the padding of the last unit, are zeros with empty ids. Reading the Zarr directly
shows them; this API (and `chex store export`) never does. It reads through `FeatureStore`, the store's
public reader, so its checks apply here too.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from pipeline.errors import ConfigError

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from pipeline.store import FeatureStore

Kind = Literal["cls", "pooled", "patch"]
KINDS = ("cls", "pooled", "patch")
EXPORT_FORMATS = ("npz", "parquet")


def open_store(path_or_workspace: str | Path | None = None, backbone: str | None = None) -> StoreView:
    """A feature store by folder, or by workspace (+ `backbone`, default: the workspace's default backbone).

    `None` means the current workspace ($CHEX_WORKSPACE or ./chex-workspace)."""
    from pipeline.store import FeatureStore
    from pipeline.workspace import resolve_workspace
    from pipeline.workspace_stores import choose_store

    path = Path(path_or_workspace) if path_or_workspace is not None else None
    if path is not None and (path / "zarr.json").is_file() and backbone is None:
        return StoreView(FeatureStore.open(path))
    ws = resolve_workspace(path)
    return StoreView(FeatureStore.open(ws.features_dir(choose_store(ws, backbone))))


class StoreView:
    """One view (default 0, the plain eval view) of a store's complete rows, in a fixed image order."""

    def __init__(self, store: FeatureStore, view: int = 0) -> None:
        self.store = store
        self.view = view
        ids = [str(i) for i, v in zip(store.image_ids, store.views, strict=True) if int(v) == view]
        self.image_ids: np.ndarray = np.asarray(ids, dtype=object)
        self._rows = store.rows(ids, view) if ids else np.empty(0, dtype=np.int64)
        self._projection = store.projection  # None for a full store

    def __len__(self) -> int:
        return len(self.image_ids)

    def __repr__(self) -> str:
        return (
            f"StoreView({self.store.path}, {len(self)} images, view {self.view}, "
            f"{self.n_layers} layers x {self.dim} dims, {self.n_patches} patches)"
        )

    @property
    def path(self) -> Path:
        return self.store.path

    @property
    def n_layers(self) -> int:
        return self.store.n_layers

    @property
    def dim(self) -> int:
        return self.store.dim

    @property
    def n_patches(self) -> int:
        return self.store.n_patches

    @property
    def provenance(self) -> dict:
        """Backbone, checkpoint sha256, layers and preprocessing recorded when the store was written."""
        return self.store.info()["provenance"]

    def with_view(self, view: int) -> StoreView:
        """The same store's stored augmented view `view` (training images only)."""
        return StoreView(self.store, view)

    def numpy(self, kind: Kind = "cls", image_ids: Sequence[str] | None = None, batch_size: int = 256) -> np.ndarray:
        """float32 tokens in `image_ids` order (default: all, `self.image_ids` order):
        cls (N, L, D), pooled = mean patch token (N, L, D), patch as stored: (N, L, P, D) in a full store,
        (N, 1, P', R) in a projected one (P' = P / pool², R = rank; `projection.reconstruct` maps them back).
        A projected store's pooled token is the mean patch token reconstructed through its basis, so it has
        the full (L, D) shape: the projection is affine, so the mean of reconstructions is the reconstruction
        of the mean."""
        rows = self._select(image_ids)
        shape = {"cls": (self.n_layers, self.dim), "pooled": (self.n_layers, self.dim)}
        out = np.empty((len(rows), *shape.get(kind, self.store.layout.token_shape("patch"))), dtype=np.float32)
        for start in range(0, len(rows), batch_size):
            out[start : start + batch_size] = self._read(rows[start : start + batch_size], kind).numpy()
        return out

    def pandas(self, kind: Literal["cls", "pooled"] = "cls", layer: int | None = None) -> pd.DataFrame:
        """One row per image indexed by image_id; columns `<kind>_l<layer>_<k>` of every stored layer (default:
        the same values, in the same order, as `numpy(kind)` and the npz/Parquet export, (N, L, D) flattened),
        or `<kind>_<k>` of one layer (`layer=-1`: the last)."""
        import pandas as pd

        if kind not in ("cls", "pooled"):
            raise ConfigError(f"pandas() holds cls or pooled tokens, not {kind!r} (use numpy('patch'))")
        values = self.numpy(kind)
        if layer is None:
            columns = [f"{kind}_l{i}_{k}" for i in range(self.n_layers) for k in range(self.dim)]
            data = values.reshape(len(values), -1)
        else:
            if not -self.n_layers <= layer < self.n_layers:
                raise ConfigError(f"layer {layer} out of range: the store keeps {self.n_layers} layers")
            columns = [f"{kind}_{k}" for k in range(self.dim)]
            data = values[:, layer]
        return pd.DataFrame(data, index=pd.Index(self.image_ids, name="image_id"), columns=columns)

    def dataset(self, kind: Kind = "cls", image_ids: Sequence[str] | None = None) -> torch.utils.data.Dataset:
        """A torch Dataset of (image_id, float32 tensor) for `image_ids` (default all); reads lazily per item."""
        from torch.utils.data import Dataset

        view = self
        rows = self._select(image_ids)
        ids = list(self.image_ids) if image_ids is None else [str(i) for i in image_ids]

        class _Tokens(Dataset):
            def __len__(self) -> int:
                return len(rows)

            def __getitem__(self, k: int):
                return ids[k], view._read(rows[k : k + 1], kind)[0]

        return _Tokens()

    def export(self, out: str | Path, fmt: str = "npz", kinds: Sequence[str] = ("cls", "pooled")) -> Path:
        """Write `kinds` of every image to `out`: .npz (arrays image_id, cls, pooled[, patch]) or Parquet (columns
        image_id and one fixed-size list per kind, flattened L*D; the shape is in the schema metadata)."""
        from pipeline.atomic import write_atomic

        if fmt not in EXPORT_FORMATS:
            raise ConfigError(f"--format {fmt!r}: choose npz or parquet")
        bad = [k for k in kinds if k not in KINDS]
        if bad:
            raise ConfigError(f"unknown token kind(s) {bad}; choose from {KINDS}")
        arrays = {k: self.numpy(k) for k in kinds}
        ids = self.image_ids.astype(str)
        if fmt == "npz":
            return write_atomic(out, lambda tmp: _write_npz(tmp, ids, arrays))
        return write_atomic(out, lambda tmp: _write_parquet(tmp, ids, arrays, self.provenance))

    def _select(self, image_ids: Sequence[str] | None) -> np.ndarray:
        if image_ids is None:
            return self._rows
        return self.store.rows([str(i) for i in image_ids], self.view)

    def _read(self, rows: np.ndarray, kind: str) -> torch.Tensor:
        if kind not in KINDS:
            raise ConfigError(f"unknown token kind {kind!r}; choose from {KINDS}")
        if kind == "cls":
            return self.store.read(rows, ("cls",))["cls"]
        patch = self.store.read(rows, ("patch",))["patch"]
        if kind != "pooled":
            return patch
        mean = patch.mean(dim=2, keepdim=True)  # (B, L or 1, 1, D or R)
        if self._projection is not None:
            mean = self._projection.reconstruct(mean.double(), self.n_layers).float()
        return mean[:, :, 0]


def _write_npz(path: Path, ids: np.ndarray, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as handle:
        np.savez(handle, image_id=ids, **arrays)


def _write_parquet(path: Path, ids: np.ndarray, arrays: dict[str, np.ndarray], provenance: dict) -> None:
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = {"image_id": pa.array(ids, type=pa.string())}
    shapes = {}
    for kind, values in arrays.items():
        flat = values.reshape(len(values), -1)
        shapes[kind] = list(values.shape[1:])
        columns[kind] = pa.FixedSizeListArray.from_arrays(pa.array(flat.ravel(), type=pa.float32()), flat.shape[1])
    table = pa.table(columns)
    meta = {"chex_shapes": json.dumps(shapes), "chex_provenance": json.dumps(provenance, default=str)}
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), **meta})
    pq.write_table(table, path)
