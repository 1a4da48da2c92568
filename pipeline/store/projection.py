"""The projected (low-rank) patch store: pooling, the streamed PCA basis, and where it lives in the store.

A projected store keeps each patch token as whitened principal coordinates z = S⁻¹ Uᵀ(x - μ), where x (F = L·D)
is the patch's tokens of the L kept blocks side by side (GLoRI's input, `heads.base.concat_patch_blocks`), μ their
mean, U (F, R) the top R principal directions and S the diagonal of their standard deviations, all fitted on
training-split images only. The store's `patch` array is then (N, 1, P', R): one R-dim token per (pooled) patch.
CLS tokens stay full. μ + U S z reconstructs x up to the rank limit, and a head whose first Linear is W on x
equals one with W' = W U S on z (bias b + W μ): nothing but the rank changes. Heads keep W itself as the
parameter and fold it per pass (heads/base.py), so they also train as on x.

Why whitened: every stored coordinate has unit variance, so int8's one scale per token (pipeline/store/quant.py)
gives every component the same relative precision. On raw coordinates the first component, often 50-100x the
median one's SD, set the step, and the small components were rounded to a few levels. Stores written before
this (attribute `projection.coordinates` absent) hold raw coordinates, S = I, and read as before.

Arrays beside the tokens: `projection_mean` (F,), `projection_basis` (F, R), `projection_variance` (R,) (the
variance of each component on the fit tokens), all float64; attribute `projection` (rank, pool, total
variance, variance kept, what it was fitted on and the request that asked for it, and `files`: each array's
chunk file with size and sha256), written last, so a store without it has no basis yet.

Protected like the tokens: each chunk ends in a crc32c and its fill value is NaN, `load_projection` (run by every
`FeatureStore.open`) refuses a missing or resized file, a chunk that fails to decode and arrays that cannot be a
basis (non-finite values, columns not of unit length), naming the store and array; `projection_problems` is the
check `chex store verify` runs (sha256 too). The arrays are no write unit's files: their loss takes back every
row and the basis (pipeline/store/verify.py), so the rerun refits it instead of reading a zero basis. Stores
written before (no `files`, no crc32c) are still checked for finite values and unit-length columns.

Fitting streams tokens through a float64 covariance (`CovarianceAccumulator`): memory is 8·F² + 8·F bytes
for the sums plus one block of at most `BLOCK_BYTES` of float32 tokens and its float64 copy, whatever the
number of images (F = 4,096 at ViT-L: 134 MB + ~200 MB; eigh needs another ~2·8·F²).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import zarr
from zarr.codecs import Crc32cCodec, ZstdCodec

from pipeline.errors import ConfigError, StoreError
from pipeline.store.integrity import check_files, sha256_file
from pipeline.store.layout import pool_problem, square_grid

ARRAYS = ("projection_mean", "projection_basis", "projection_variance")
# Whitening divides by no SD below this fraction of the first component's, so that a near-null direction of the
# fit tokens cannot blow another image's coordinate past float16's range. Part of the store format: the scale is
# recomputed from `projection_variance` on every read.
WHITEN_FLOOR = 1e-4
BLOCK_BYTES = 64 << 20


def pool_patches(patch: torch.Tensor, pool: int, grid: tuple[int, int] | None = None) -> torch.Tensor:
    """(B, L, P, D) -> (B, L, P / pool², D): average over pool x pool blocks of the row-major (h, w) patch grid
    (None: a square grid, as stores written before they recorded theirs); the pooled grid is (h/pool, w/pool)."""
    if pool == 1:
        return patch
    b, n_layers, p, d = patch.shape
    grid = tuple(grid) if grid is not None else square_grid(p)
    problem = pool_problem(pool, grid)
    if problem:
        raise ConfigError(problem)
    h, w = grid
    if h * w != p:
        raise ValueError(f"patch grid {h}x{w} does not hold {p} patches")
    planes = patch.reshape(b * n_layers, h, w, d).permute(0, 3, 1, 2)
    pooled = torch.nn.functional.avg_pool2d(planes, pool)
    return pooled.permute(0, 2, 3, 1).reshape(b, n_layers, (h // pool) * (w // pool), d)


def flat_tokens(patch: torch.Tensor) -> torch.Tensor:
    """(B, L, P, D) -> (B·P, L·D): every patch's tokens of the L blocks side by side (the projection's x)."""
    b, n_layers, p, d = patch.shape
    return patch.permute(0, 2, 1, 3).reshape(b * p, n_layers * d)


@dataclass(frozen=True)
class Projection:
    """A fitted basis: x ≈ mean + basis @ z, z = basisᵀ (x - mean)."""

    mean: np.ndarray  # (F,)
    basis: np.ndarray  # (F, R), columns = principal directions, by decreasing variance
    variance: np.ndarray  # (R,) variance of each component on the fit tokens
    total_variance: float  # trace of the fit tokens' covariance
    pool: int = 1
    fit: dict[str, Any] = field(default_factory=dict)  # what it was fitted on (split, images, tokens, source)
    whitened: bool = True  # stored coordinates are divided by each component's SD (False: raw, older stores)

    @property
    def rank(self) -> int:
        return self.basis.shape[1]

    @property
    def variance_kept(self) -> float:
        return float(self.variance.sum() / self.total_variance) if self.total_variance > 0 else 1.0

    @property
    def component_scale(self) -> np.ndarray:
        """(R,) the diagonal of S: each component's SD when whitened (at least WHITEN_FLOOR x the first's; ones
        when every variance is 0), else ones."""
        sd = np.sqrt(np.clip(np.asarray(self.variance, dtype=np.float64), 0.0, None))
        if not self.whitened or not sd.size or sd.max() <= 0:
            return np.ones(self.rank)
        return np.maximum(sd, WHITEN_FLOOR * sd.max())

    @property
    def stored_basis(self) -> np.ndarray:
        """(F, R) U S: x ≈ mean + stored_basis @ z for the stored coordinates z (what heads fold, heads/base.py)."""
        return self.basis * self.component_scale

    def apply(self, patch: torch.Tensor, grid: tuple[int, int] | None = None) -> torch.Tensor:
        """Full patch tokens (B, L, P, D) on the (h, w) `grid` (None: square) -> stored projected tokens
        (B, 1, P / pool², R), float32."""
        pooled = pool_patches(patch.float(), self.pool, grid)
        b, p = pooled.shape[0], pooled.shape[2]
        mean = torch.from_numpy(self.mean).float()
        basis = torch.from_numpy(self.basis / self.component_scale).float()  # U S⁻¹
        return ((flat_tokens(pooled) - mean) @ basis).reshape(b, 1, p, self.rank)

    def reconstruct(self, z: torch.Tensor, n_layers: int) -> torch.Tensor:
        """Projected tokens (B, 1, P, R) -> reconstructed full tokens (B, L, P, D) = mean + U S z (dtype of z)."""
        b, _, p, _ = z.shape
        mean = torch.from_numpy(self.mean).to(z.dtype)
        basis = torch.from_numpy(self.stored_basis).to(z.dtype)
        x = mean + z.reshape(b * p, self.rank) @ basis.T
        return x.reshape(b, p, n_layers, -1).permute(0, 2, 1, 3)

    def attrs(self) -> dict[str, Any]:
        return dict(rank=self.rank, pool=self.pool, total_variance=self.total_variance,
                    variance_kept=self.variance_kept, fit=self.fit,
                    coordinates="whitened" if self.whitened else "raw")  # fmt: skip


class CovarianceAccumulator:
    """Streamed float64 mean and covariance of token rows (N, F); memory 8·F² + 8·F bytes + one block."""

    def __init__(self, n_features: int) -> None:
        self.n_features = n_features
        self.shift: torch.Tensor | None = None  # first block's mean: sums of shifted data cancel less
        self.sum = torch.zeros(n_features, dtype=torch.float64)
        self.outer = torch.zeros(n_features, n_features, dtype=torch.float64)
        self.n = 0

    def add(self, tokens: torch.Tensor) -> None:
        """Add rows (N, F) in blocks of at most BLOCK_BYTES (float32)."""
        rows = max(1, BLOCK_BYTES // (4 * self.n_features))
        for start in range(0, tokens.shape[0], rows):
            x = tokens[start : start + rows].to(torch.float64)
            if self.shift is None:
                self.shift = x.mean(0)
            x = x - self.shift
            self.sum += x.sum(0)
            self.outer.addmm_(x.T, x)
            self.n += x.shape[0]

    def fit(self, rank: int, pool: int = 1, fit: dict[str, Any] | None = None) -> Projection:
        """The top-`rank` principal directions of everything added."""
        if self.n < 2:
            raise StoreError("cannot fit a projection on fewer than 2 patch tokens; embed more training images")
        if rank > self.n_features:
            raise ConfigError(f"--rank {rank} exceeds the patch token width {self.n_features} (layers x dim)")
        mean_shifted = self.sum / self.n
        cov = (self.outer - self.n * torch.outer(mean_shifted, mean_shifted)) / (self.n - 1)
        if not torch.isfinite(cov).all():
            raise StoreError("the fit tokens hold inf or NaN values; no basis is fitted on them")
        values, vectors = torch.linalg.eigh(cov)  # ascending
        values, vectors = values.flip(0)[:rank].clamp_min(0), vectors.flip(1)[:, :rank]
        # a fixed sign per direction (largest entry positive), so the same data always give the same basis
        sign = torch.sign(vectors.gather(0, vectors.abs().argmax(0, keepdim=True)))
        vectors = vectors * torch.where(sign == 0, 1.0, sign)
        total = float(torch.diagonal(cov).sum())
        mean = (mean_shifted + self.shift).numpy()
        info = {"tokens": self.n, **(fit or {})}
        return Projection(mean, vectors.numpy().copy(), values.numpy().copy(), total, pool, info)


def check_finite_tokens(patch: torch.Tensor, image_ids: list[str], where: object) -> torch.Tensor:
    """`patch` (B, ...) unchanged; StoreError naming the images of `where` whose tokens hold inf or NaN, so that
    a basis is never fitted on them (a NaN covariance gives an all-NaN basis that claims all the variance)."""
    bad = ~torch.isfinite(patch.reshape(len(patch), -1)).all(dim=1)
    if bad.any():
        ids = [image_ids[k] for k in torch.nonzero(bad).flatten().tolist()]
        raise StoreError(
            f"{where}: {len(ids)} training images have non-finite patch tokens (inf/NaN), e.g. {ids[:5]}; no basis "
            "is fitted on them: re-embed them (a backbone beyond float16's range needs --dtype float32)"
        )
    return patch


def random_projection(width: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A zero mean and a random orthonormal (width, rank) basis: a projected store's shapes, for timing heads."""
    return torch.zeros(width), torch.linalg.qr(torch.randn(width, rank))[0]


def fit_projection(
    batches: Iterable[torch.Tensor],
    n_features: int,
    rank: int,
    pool: int = 1,
    fit: dict[str, Any] | None = None,
    grid: tuple[int, int] | None = None,
) -> Projection:
    """Fit a basis on full patch token batches (B, L, P, D) on the (h, w) `grid` (None: square), pooled first
    when `pool` > 1."""
    acc = CovarianceAccumulator(n_features)
    images = 0
    for patch in batches:
        acc.add(flat_tokens(pool_patches(patch.float(), pool, grid)))
        images += patch.shape[0]
    return acc.fit(rank, pool, {"images": images, **(fit or {})})


def save_projection(path: str | Path, projection: Projection) -> None:
    """Write the basis arrays (crc32c per chunk, NaN fill), then the `projection` attribute with their files'
    sizes and sha256 (last: its presence means complete)."""
    group = zarr.open_group(path, mode="r+")
    values = {"projection_mean": projection.mean, "projection_basis": projection.basis,
              "projection_variance": projection.variance}  # fmt: skip
    for name, value in values.items():
        arr = group.create_array(name, shape=value.shape, chunks=value.shape, dtype="float64", fill_value=np.nan,
                                 compressors=[ZstdCodec(level=3), Crc32cCodec()], overwrite=True)  # fmt: skip
        arr[...] = np.asarray(value, dtype=np.float64)
    files = {}
    for name in ARRAYS:
        for file in sorted(f for f in (Path(path) / name / "c").rglob("*") if f.is_file()):
            with open(file, "rb") as handle:
                os.fsync(handle.fileno())
            files[file.relative_to(path).as_posix()] = [file.stat().st_size, sha256_file(file)]
    group.attrs["projection"] = {**projection.attrs(), "files": files}


def load_projection(path: str | Path, group: zarr.Group | None = None) -> Projection | None:
    """The store's basis, or None when it has none (yet); StoreError naming the store and array when damaged."""
    group = group if group is not None else zarr.open_group(path, mode="r")
    attrs = dict(group.attrs)
    info = attrs.get("projection")
    if not info:
        return None
    problems = check_files(Path(path), info.get("files") or {})
    if problems:
        raise StoreError(damaged_message(path, attrs, problems))
    arrays = {}
    for name in ARRAYS:
        try:
            arrays[name] = np.asarray(group[name][...], dtype=np.float64)
        except KeyError:
            raise StoreError(damaged_message(path, attrs, [f"{name} is missing"])) from None
        except (ValueError, RuntimeError) as exc:  # crc32c mismatch, or bytes the codecs cannot decode
            raise StoreError(damaged_message(path, attrs, [f"a chunk of {name} fails to decode ({exc})"])) from None
    problems = _implausible(arrays, int(info["rank"]))
    if problems:
        raise StoreError(damaged_message(path, attrs, problems))
    mean, basis, variance = (arrays[name] for name in ARRAYS)
    whitened = info.get("coordinates", "raw") == "whitened"  # stores written before whitening: raw
    return Projection(mean, basis, variance, float(info["total_variance"]), int(info["pool"]), dict(info["fit"]),
                      whitened)  # fmt: skip


def projection_problems(path: str | Path, deep: bool = True) -> list[str]:
    """What is wrong with a store's saved basis (files, sha256 when `deep`, decoding, values); [] when intact or
    when the store has no basis (yet)."""
    group = zarr.open_group(path, mode="r")
    info = dict(group.attrs).get("projection")
    if not info:
        return []
    problems = check_files(Path(path), info.get("files") or {}, deep=deep)
    if problems:
        return problems
    try:
        load_projection(path, group)
    except StoreError as exc:
        return [str(exc)]
    return []


def repair_command(attrs: dict[str, Any]) -> str:
    """The command that rewrites a store's rows (and refits its basis): the one that made it."""
    return "chex store compress" if attrs.get("compressed_from") else "chex embed"


def damaged_message(path: str | Path, attrs: dict[str, Any], problems: list[str]) -> str:
    return (
        f"feature store {path}: its projection (the basis every patch row is stored in) is damaged: "
        f"{'; '.join(problems)}; run `chex store verify` (it takes back the basis and every row), then rerun "
        f"the same `{repair_command(attrs)}` to refit the basis and rewrite the rows"
    )


def _implausible(arrays: dict[str, np.ndarray], rank: int) -> list[str]:
    """Values no fitted basis has: non-finite ones, a basis column not of unit length, a negative variance."""
    problems = [f"{name} holds non-finite values" for name, a in arrays.items() if not np.isfinite(a).all()]
    basis, variance = arrays["projection_basis"], arrays["projection_variance"]
    if problems:
        return problems
    if basis.ndim != 2 or basis.shape[1] != rank or variance.shape != (rank,):
        return [f"projection_basis {basis.shape} / projection_variance {variance.shape} do not match rank {rank}"]
    norms = np.linalg.norm(basis, axis=0)
    if not np.allclose(norms, 1.0, atol=1e-3):
        return [f"projection_basis has columns of length {norms.min():.3g}..{norms.max():.3g}, not 1 (zeros?)"]
    if (variance < 0).any():
        return ["projection_variance holds negative values"]
    return []


def patch_transform(pool: int, projection: Projection | None, grid: tuple[int, int] | None = None):
    """Full patch tokens (B, L, P, D) on the (h, w) `grid` (None: square) -> the store's patch rows: projected
    (and pooled), or pooled only."""
    if projection is not None:
        return lambda patch: projection.apply(patch, grid)
    return lambda patch: pool_patches(patch, pool, grid)
