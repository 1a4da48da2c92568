"""What a feature store holds: its parts, array shapes, chunking and the identity of the backbone that made it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

TOKEN_PARTS = ("cls", "patch", "registers")
DTYPES = ("float16", "int8")
STORE_FORMAT = 1
_TARGET_CHUNK_BYTES = 4 << 20  # inner chunk: one or a few images
_TARGET_UNIT_BYTES = 256 << 20  # write unit (= Zarr shard): a few hundred images, bounded memory for big models
_MAX_UNIT_ROWS = 256


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

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"store dtype must be one of {DTYPES}, got {self.dtype!r}")
        per_image = self.bytes_per_image
        unit = self.unit_rows or max(1, min(_MAX_UNIT_ROWS, _TARGET_UNIT_BYTES // per_image))
        chunk = min(unit, self.chunk_rows or max(1, _TARGET_CHUNK_BYTES // per_image))
        unit = unit // chunk * chunk  # a unit (Zarr shard) holds whole inner chunks
        object.__setattr__(self, "chunk_rows", chunk)
        object.__setattr__(self, "unit_rows", unit)

    @property
    def parts(self) -> tuple[str, ...]:
        return TOKEN_PARTS if self.n_registers else TOKEN_PARTS[:2]

    @property
    def quantized(self) -> bool:
        return self.dtype == "int8"

    @property
    def bytes_per_image(self) -> int:
        """Uncompressed bytes of one row's tokens (+ scales when int8)."""
        tokens = self.n_layers * (1 + self.n_patches + self.n_registers)
        return tokens * (self.dim * np.dtype(self.dtype).itemsize + (4 if self.quantized else 0))

    def token_shape(self, part: str) -> tuple[int, ...]:
        """Shape of one row of `part` (without N)."""
        return {
            "cls": (self.n_layers, self.dim),
            "patch": (self.n_layers, self.n_patches, self.dim),
            "registers": (self.n_layers, self.n_registers, self.dim),
        }[part]

    def to_dict(self) -> dict[str, int | str]:
        return dict(
            n_layers=self.n_layers,
            dim=self.dim,
            n_patches=self.n_patches,
            n_registers=self.n_registers,
            dtype=self.dtype,
            chunk_rows=self.chunk_rows,
            unit_rows=self.unit_rows,
        )
