"""Shard throughput: `shard_dataset` with 1 and 2 workers next to a bare single-process read + re-encode loop.

Generates N synthetic radiograph-like grey images itself (smooth anatomy-ish field + noise; half 16-bit PNG,
half 8-bit JPEG by default), then prints images/s and source MB/s of each and the ratios to the bare loop.
Timings on a shared machine are noisy: rerun on a quiet one before quoting them.

    python benchmarks/bench_shard.py --n 500 --size 512
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.imageio import read_image
from pipeline.shard import shard_dataset
from pipeline.shard_format import encode_png


def make_images(root: Path, n: int, size: int, source: str, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    rows = []
    for i in range(n):
        cx, cy = 0.5 + rng.normal(0, 0.03), 0.55 + rng.normal(0, 0.03)
        field = np.exp(-(((xx - cx) / 0.35) ** 2 + ((yy - cy) / 0.45) ** 2))
        lungs = np.exp(-(((np.abs(xx - cx) - 0.18) / 0.1) ** 2 + ((yy - cy) / 0.25) ** 2))
        image = 0.25 + 0.6 * field - 0.35 * lungs + rng.normal(0, 0.02, (size, size))
        image = np.clip(image, 0, 1)
        kind = source if source != "mixed" else ("png16" if i % 2 == 0 else "jpeg")
        if kind == "png16":
            name = f"{i}.png"
            Image.fromarray((image * 65535).astype(np.uint16)).save(root / name)
        elif kind == "png8":
            name = f"{i}.png"
            Image.fromarray((image * 255).astype(np.uint8)).save(root / name)
        else:
            name = f"{i}.jpg"
            Image.fromarray((image * 255).astype(np.uint8)).save(root / name, quality=90)
        rows.append({"image_id": f"bench_p{i}_0", "path": name, "patient_id": f"p{i}", "split": "train"})
    return pd.DataFrame(rows)


def bare_loop(root: Path, manifest: pd.DataFrame, max_side: int | None) -> int:
    """The floor to compare with: read + decode + re-encode as PNG, one process, nothing written."""
    total = 0
    for rel in manifest["path"]:
        total += len(encode_png(read_image(root / rel, max_side=max_side)))
    return total


def timed(func: Callable[[], object]) -> float:
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--source", choices=["mixed", "png16", "png8", "jpeg"], default="mixed")
    parser.add_argument("--max-side", type=int, default=None)
    parser.add_argument("--shards", type=int, default=8, help="about this many shards (so 2 workers can share)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench_shard_"))
    try:
        root = work / "images"
        root.mkdir()
        manifest = make_images(root, args.n, args.size, args.source)
        source_mb = sum((root / p).stat().st_size for p in manifest["path"]) / 1e6
        shard_bytes = source_mb * 1e6 * 1.2 / args.shards
        print(f"{args.n} images {args.size}x{args.size} ({args.source}), {source_mb:.1f} MB of source files")

        rows = [("bare read + re-encode (1 process)", timed(lambda: bare_loop(root, manifest, args.max_side)))]
        for workers in (1, 2):
            out = work / f"shards_w{workers}"
            seconds = timed(
                lambda out=out, w=workers: shard_dataset(
                    manifest, root, out, "bench", shard_bytes, max_side=args.max_side, workers=w, progress=False
                )
            )
            rows.append((f"shard_dataset workers={workers}", seconds))
        bare = rows[0][1]
        print(f"{'':36s} {'seconds':>8s} {'images/s':>9s} {'MB/s':>7s} {'x bare':>7s}")
        for label, seconds in rows:
            print(
                f"{label:36s} {seconds:8.2f} {args.n / seconds:9.1f} {source_mb / seconds:7.1f} {bare / seconds:7.2f}"
            )
        print("MB/s counts source bytes read; 'x bare' > 1 means faster than the bare loop.")
        print("Note: plain grey PNG sources are copied into the shard after a full decode (no re-encode).")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
