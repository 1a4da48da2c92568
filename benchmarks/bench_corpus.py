"""Corpus hashing throughput and the projected time to hash CXR-1M (1,005,733 images).

Writes `--n` smooth grey test images of `--size` px (8-bit PNG, and 16-bit when `--bits 16`) to a temporary
folder, then measures per image: decode only, decode + content hash, decode + content hash + pHash (what
`chex corpus build` does), with 1 process and with `--workers` processes through `hash_manifest`. It also times
the near-duplicate search on 1,005,733 random 64-bit hashes. Projections assume hashing scales linearly with
cores (it is CPU-bound for PNG/JPEG decode; on network storage reading may dominate instead).

Usage: python benchmarks/bench_corpus.py [--n 200] [--size 1024] [--bits 8] [--workers 2] [--project 16 64]
The machine it was written on was shared by several jobs: rerun on a quiet machine for figures to quote.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.corpus.hashing import content_hash, hash_manifest, perceptual_hash
from pipeline.corpus.nearsearch import self_pairs
from pipeline.corpus.sources import PAPER_TOTAL
from pipeline.imageio import read_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="images to hash")
    parser.add_argument("--size", type=int, default=1024, help="image side in pixels")
    parser.add_argument("--bits", type=int, default=8, choices=(8, 16))
    parser.add_argument("--workers", type=int, default=2, help="worker processes for the parallel run")
    parser.add_argument("--project", type=int, nargs="*", default=[16, 64], help="worker counts to project to")
    parser.add_argument("--near-threshold", type=int, default=4)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = _write_images(root / "images", args.n, args.size, args.bits)
        print(f"{args.n} images, {args.size}x{args.size} px, {args.bits}-bit PNG, mean {_mean_kb(paths):.0f} kB")
        decode = _rate(paths, lambda p: read_image(p))
        chash = _rate(paths, lambda p: content_hash(read_image(p)))
        full = _rate(paths, lambda p: (lambda x: (content_hash(x), perceptual_hash(x)))(read_image(p)))
        print(f"1 process: decode {decode:.1f} img/s; + content hash {chash:.1f} img/s; + pHash {full:.1f} img/s")

        manifest = pd.DataFrame({"image_id": [p.stem for p in paths], "path": [p.name for p in paths]})
        start = time.perf_counter()
        hash_manifest(manifest, root / "images", root / "cache", workers=args.workers, batch_size=64, progress=False)
        parallel = args.n / (time.perf_counter() - start)
        print(
            f"hash_manifest, {args.workers} worker processes (start-up + cache writes included): {parallel:.1f} img/s"
        )

    per_core = full
    print(f"\nProjected time to hash {PAPER_TOTAL:,} images at this size:")
    print(f"  1 core : {_hours(PAPER_TOTAL / per_core)}")
    print(f"  2 cores (linear from 1 core): {_hours(PAPER_TOTAL / (2 * per_core))}")
    print(f"  {args.workers} processes (measured rate, this machine's load included): {_hours(PAPER_TOTAL / parallel)}")
    for workers in args.project:
        print(f"  {workers} workers (linear from 1 core): {_hours(PAPER_TOTAL / (per_core * workers))}")

    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, size=PAPER_TOTAL, dtype=np.uint64) * np.uint64(2)
    start = time.perf_counter()
    i, _, _ = self_pairs(hashes, args.near_threshold)
    print(
        f"\nnear-duplicate search, {PAPER_TOTAL:,} random 64-bit hashes, threshold {args.near_threshold}: "
        f"{time.perf_counter() - start:.1f} s ({len(i)} pairs; brute force: {PAPER_TOTAL**2 // 2:.2e} comparisons)"
    )


def _write_images(folder: Path, n: int, size: int, bits: int) -> list[Path]:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:size, 0:size] / size
    paths = []
    for k in range(n):
        field = np.zeros((size, size), dtype=np.float32)
        for _ in range(4):
            fx, fy = rng.uniform(-4, 4, size=2)
            field += rng.normal() * np.cos(2 * np.pi * (fx * x + fy * y) + rng.uniform(0, 2 * np.pi))
        field += rng.normal(0, 0.05, size=field.shape).astype(np.float32)  # detector noise: realistic PNG sizes
        field = (field - field.min()) / (field.max() - field.min())
        pixels = np.rint(field * (255 if bits == 8 else 4095)).astype(np.uint8 if bits == 8 else np.uint16)
        path = folder / f"img{k:05d}.png"
        Image.fromarray(pixels).save(path, compress_level=6)
        paths.append(path)
    return paths


def _rate(paths: list[Path], func) -> float:
    start = time.perf_counter()
    for path in paths:
        func(path)
    return len(paths) / (time.perf_counter() - start)


def _mean_kb(paths: list[Path]) -> float:
    return float(np.mean([p.stat().st_size for p in paths])) / 1024


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h ({seconds:,.0f} s)"


if __name__ == "__main__":
    main()
