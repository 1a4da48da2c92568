"""What a feature store holds: its parts, array shapes, chunking and the identity of the backbone that made it."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

TOKEN_PARTS = ("cls", "patch", "registers")
DTYPES = ("float16", "int8", "float32")  # float32: for backbones whose activations exceed float16's range
INT8_PARTS = ("patch", "all")  # which token parts an int8 store quantizes
STORE_FORMAT = 1
_TARGET_CHUNK_BYTES = 4 << 20  # inner chunk: one or a few images
_TARGET_UNIT_BYTES = 256 << 20  # write unit (= Zarr shard): a few hundred images, bounded memory for big models
_MAX_UNIT_ROWS = 256


def square_grid(n_patches: int) -> tuple[int, int] | None:
    """(side, side) when `n_patches` is a square (the grid of stores written before they recorded one), else None."""
    side = math.isqrt(n_patches)
    return (side, side) if side * side == n_patches else None


def pool_problem(pool: int, grid: tuple[int, int] | None) -> str:
    """Why `--pool` cannot average `pool` x `pool` blocks of the (h, w) patch grid ('' when it can): it must
    divide both sides (a non-square grid is pooled on its own rows and columns)."""
    if pool < 1:
        return f"--pool {pool}: must be 1 (no pooling) or more"
    if pool == 1:
        return ""
    if grid is None:
        return f"--pool {pool}: the patch grid is not recorded and its patch count is not a square"
    h, w = grid
    if h % pool or w % pool:
        fits = [str(k) for k in range(2, min(h, w) + 1) if h % k == 0 and w % k == 0]
        which = f"pools that do: {', '.join(fits)}" if fits else "no pool > 1 does"
        return f"--pool {pool} must divide both sides of the {h}x{w} patch grid; {which}"
    return ""


@dataclass(frozen=True)
class StoreLayout:
    """Token shapes per image and the chunking along N (rows = images x views)."""

    n_layers: int
    dim: int
    n_patches: int
    n_registers: int
    dtype: str = "float16"
    chunk_rows: int = 0  # 0: chosen from the bytes per image
    unit_rows: int = 0
    rank: int = 0  # > 0: patch tokens projected on R principal directions (pipeline/store/projection.py)
    pool: int = 1  # > 1: patch grid averaged over pool x pool neighbourhoods
    # int8 stores: "patch" keeps CLS and registers in float16 (a few kB per image; the linear probe reads them
    # unchanged); "all" is how int8 stores were written before (`from_dict` reads those as such)
    int8_parts: str = "patch"
    # (h, w) of the backbone's patch grid, h·w = n_patches; None (stores written before it): a square grid
    patch_grid: tuple[int, int] | None = None

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"store dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.int8_parts not in INT8_PARTS:
            raise ValueError(f"int8_parts must be one of {INT8_PARTS}, got {self.int8_parts!r}")
        if self.patch_grid is not None:
            object.__setattr__(self, "patch_grid", (int(self.patch_grid[0]), int(self.patch_grid[1])))
            if self.patch_grid[0] * self.patch_grid[1] != self.n_patches:
                raise ValueError(f"patch grid {self.patch_grid} does not hold {self.n_patches} patches")
        problem = pool_problem(self.pool, self.patch_grid or square_grid(self.n_patches))
        if problem:
            raise ValueError(problem)
        if not 0 <= self.rank <= self.n_layers * self.dim:
            raise ValueError(f"rank {self.rank} must be in 0..{self.n_layers * self.dim} (layers x dim)")
        per_image = self.bytes_per_image
        unit = self.unit_rows or max(1, min(_MAX_UNIT_ROWS, _TARGET_UNIT_BYTES // per_image))
        chunk = min(unit, self.chunk_rows or max(1, _TARGET_CHUNK_BYTES // per_image))
        unit = unit // chunk * chunk  # a unit (Zarr shard) holds whole inner chunks
        object.__setattr__(self, "chunk_rows", chunk)
        object.__setattr__(self, "unit_rows", unit)

    @property
    def parts(self) -> tuple[str, ...]:
        return TOKEN_PARTS if self.n_registers else TOKEN_PARTS[:2]

    @classmethod
    def from_dict(cls, data: dict) -> StoreLayout:
        """The layout a store's `layout` attribute records (int8 stores written before `int8_parts`: "all")."""
        legacy = {"int8_parts": "all"} if data.get("dtype") == "int8" else {}
        return cls(**{**legacy, **data})

    @property
    def quantized(self) -> bool:
        """Whether any token part is int8 (`part_quantized` says which)."""
        return self.dtype == "int8"

    def part_quantized(self, part: str) -> bool:
        """Whether `part` is stored as int8 with a per-token float32 scale."""
        return self.quantized and (self.int8_parts == "all" or part == "patch")

    def part_dtype(self, part: str) -> str:
        if self.part_quantized(part):
            return "int8"
        return "float32" if self.dtype == "float32" else "float16"

    @property
    def bytes_per_image(self) -> int:
        """Uncompressed bytes of one row's tokens (+ scales of int8 parts)."""
        total = 0
        for part in self.parts:
            shape = self.token_shape(part)
            scales = 4 * math.prod(shape[:-1]) if self.part_quantized(part) else 0
            total += math.prod(shape) * np.dtype(self.part_dtype(part)).itemsize + scales
        return total

    @property
    def stored_patches(self) -> int:
        """Patch tokens per row as stored (after pooling)."""
        return self.n_patches // (self.pool * self.pool)

    @property
    def grid(self) -> tuple[int, int]:
        """(rows, cols) of the stored patch grid: the recorded backbone grid, else a square one."""
        if self.patch_grid is not None:
            return (self.patch_grid[0] // self.pool, self.patch_grid[1] // self.pool)
        side = math.isqrt(self.stored_patches)
        return (side, side) if side * side == self.stored_patches else (1, self.stored_patches)

    @property
    def patch_dim(self) -> int:
        """Width of one stored patch token: R when projected (the L blocks mixed into one token), else D."""
        return self.rank or self.dim

    def token_shape(self, part: str) -> tuple[int, ...]:
        """Shape of one row of `part` (without N). A projected patch row is (1, P', R): one token of R dims."""
        patch = (1, self.stored_patches, self.rank) if self.rank else (self.n_layers, self.stored_patches, self.dim)
        return {
            "cls": (self.n_layers, self.dim),
            "patch": patch,
            "registers": (self.n_layers, self.n_registers, self.dim),
        }[part]

    def to_dict(self) -> dict[str, int | str | list[int]]:
        d = dict(
            n_layers=self.n_layers,
            dim=self.dim,
            n_patches=self.n_patches,
            n_registers=self.n_registers,
            dtype=self.dtype,
            chunk_rows=self.chunk_rows,
            unit_rows=self.unit_rows,
            rank=self.rank,
            pool=self.pool,
            int8_parts=self.int8_parts,
        )
        if self.patch_grid is not None:  # stores written before it: a square grid
            d["patch_grid"] = list(self.patch_grid)
        return d
