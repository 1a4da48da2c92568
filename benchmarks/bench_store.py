"""The projected (low-rank) and pooled patch store: size, read speed, GLoRI cost, and what it does to results.

Four parts (figures, never asserts; a shared CPU makes timings noisy, so compare ratios from one run):

  sizes       bytes per image at the ViT-L/16-512 shape (4 blocks x 1,024 patches x 1,024 dims), full fp16/int8
              and projected R in {64,...,1024} x {fp16,int8} x pool {1,2}: ARITHMETIC from StoreLayout, plus
              the size of CXR-LT 24 (~260k images) and PLCO (190,700 images).
  read        store read throughput (images/s, MB/s) of a full store vs projected ones, MEASURED on a small
              store (--read-images images of a ViT-B/16-224-shaped row) written through the store's own writer.
  cost        MODELLED protocol cost at ViT-L/16-512, as benchmarks/bench_probe.py part 2: measured unit costs
              (backbone forward per image; stacked GLoRI step per image for 9 and 1 lrs on full, projected and
              projected + pooled tokens) composed with the protocol's counts on the paper's splits.
  bound       ANALYTIC: multiply-accumulates (MACs) of a GLoRI training step per image and lr against one ViT-L/16-512
              forward, composed with the protocol's counts: the fewest embed floors the protocol can cost if the
              heads ran as efficiently as the backbone, per rank and pooling, and the largest rank that could
              stay within 1.25 floors. No timing: it says what no implementation can beat.
  quality     on a workspace with manifests and a full store (--workspace, --backbone): compress to each rank
              (--reuse keeps existing ones), run GLoRI and the avgpool linear probe on every data set (--protocol
              demo: the demo's lrs, epochs and widths) for each --seeds, and print test macro AUROC full vs R with
              the paired difference, its 95% paired bootstrap CI and chex's paired permutation p, the mean
              difference over seeds against the full store's own seed-to-seed SD, and the full sweep vs --sweep
              halving (same lr? test AUROC difference when not).

    python benchmarks/bench_store.py sizes read cost bound [--step-batch 8]
    python benchmarks/bench_store.py quality --workspace WS --backbone NAME --ranks 64,128 --pool-rank 128 \
        --protocol demo --seeds 0,1,2

Figures (2 cores; run with PYTHONPATH=. from the repository root). Heads on projected stores keep full-width
weights folded through the basis (heads/base.py); the figures of the earlier free R-wide weights are in git.
  sizes at ViT-L/16-512: full fp16 8.40 MB/image (CXR-LT 24 2.18 TB, PLCO 1.60 TB); R=256 fp16 0.53; R=512 fp16
      1.06; R=1024 fp16 2.11; pool 2: R=256 0.14, R=512 0.27, R=1024 0.53 MB (CXR-LT 24 138 GB, PLCO 102 GB).
      int8 (patch tokens only; CLS stays fp16): R=1024 1.061, R=512 0.537 MB; <= 1 MB unpooled needs R <= 484
      in fp16 (11.8% of L*D) or R <= 964 in int8 (23.5%).
  read, 2026-11-30 (load 0.5-1.3), shuffled batches of 64: ViT-B/16-224 shape, 256 rows: full fp16 213 images/s
      (258 MB/s of tokens), R=256 fp16 1,909 (203 MB/s), R=64 fp16 3,816, R=64 int8 3,606; the demo stores
      (--read-stores): full 1,849 images/s, R=128 fp16 3,732, R=128 int8 4,361 (7.5 kB/image).
  bound (ANALYTIC, MAC counts; ViT-L/16-512 forward 362 G MACs), fewest embed floors at the backbone's efficiency,
      CheXpert (5 outputs) / CXR-LT 24 (40) / PLCO (2): full 2.85 / 2.89 / 2.28; R=1024 1.52 / 1.82 / 1.34;
      R=256 1.18 / 1.55 / 1.10; decoder alone (R -> 0) 1.07 / 1.46 / 1.02; R=1024 pool 2 1.14 / 1.30 / 1.09;
      R=256 pool 2 1.06 / 1.24 / 1.03. CheXFound's way 21.78 / 18.09 / 16.59 floors, so >= 20x needs <= 1.089
      floors on CheXpert and is out of reach on CXR-LT 24 and PLCO (their test images are embedded once either
      way). Within 1.25 floors unpooled: R <= 411 (CheXpert), none (CXR-LT 24: the decoder over 1,024 tokens for
      40 queries costs 0.46 floors alone), R <= 743 (PLCO); with pool 2: R <= 2002 / 417 / 3117.
  cost, 2026-11-30 (load 2.0), --step-batch 8, each data set's own outputs (earlier figures used 14 for all):
      backbone forward 6.39 s/image; 9-lr GLoRI step per image at 5 outputs: full 1.045 s, R=1024 0.414, R=256
      0.286, R=1024 pool 2 0.159, R=256 pool 2 0.115 (fold included, once per step). CheXpert: CheXFound's way
      21.73 floors; chex full store 2.79 floors (7.8x); R=1024 1.71 (12.7x); R=256 1.48 (14.7x); R=1024 pool 2
      1.28 (17.0x); R=512 or 256 pool 2 1.20 (18.1x); + halving: R=1024 1.23 (17.6x), R=256 pool 2 1.07
      (20.4x). CXR-LT 24: full 2.83 (6.4x), R=1024 2.07, R=256 pool 2 1.32 (13.6x). PLCO: full 2.30 (7.2x),
      R=1024 1.53, R=256 1.29, R=1024 pool 2 1.17 (14.2x). Thin unpooled steps run at ~40% of the backbone's MAC
      rate (R=256: 1.48 measured vs 1.18 bound): the memory-bound ReLU, copies and gradient sums over the
      (9 x tokens x 768) memory dominate once the first Linear is narrow.
      Memory (bench_glori_memory.py --rank 256 --pool 2): batch 256 with --micro-batch 8 peaks at 2.34 GB
      (1.03 GB before the step); without micro-batching ~5.1 GB.
  quality, 2026-11-30, the demo's protocol (9 lrs, 25/10 epochs), diff = projected - full test macro AUROC:
    demo pretrained store (L*D = 512; R = 32/64/128/512 keep 98.5/99.47/99.91/100% of the variance):
      linear (avgpool), seed 0, 6 data sets: max |diff| R=32 0.0041, R=64 0.0020, R=128 0.0015, R=512 0.0000;
      every CI covers 0. GLoRI, seed 0: CheXpert and CXR-LT 24 <= 0.0003 at every R; Shenzhen, Montgomery,
      JSRT, PLCO up to 0.023 (R=32), 0.020 (R=64), 0.050 (R=128, validation picked another lr), and the
      lossless rotation R=512 (only fp16 rounding differs) by up to 0.014. Over seeds 0,1,2 (GLoRI), mean
      diff for Shenzhen / Montgomery / JSRT / PLCO: R=64 +0.0056 / -0.0180 / +0.0005 / -0.0052; R=128 -0.0009
      / +0.0027 / -0.0175 (one lr flip, -0.050; the other seeds -0.0015) / +0.0007; R=512 -0.0014 / +0.0018 /
      -0.0002 / -0.0031; the full store's own seed-to-seed SD 0.012 / 0.040 / 0.028 / 0.005.
    random-init ViT-S/16 at 128 px (L*D = 1,536), seed 0, Shenzhen, Montgomery, JSRT, CheXpert, PLCO: R=384
      (25%, 99.96% of the variance) |diff| <= 0.0022 everywhere, linear and GLoRI, every CI covering 0;
      R=192 (12.5%) <= 0.0020 except two GLoRI lr flips (Shenzhen -0.016; Montgomery +0.46, where the full
      store's GLoRI picked lr 5e-5 and scored 0.333); R=1,536 (lossless) 0.0000 except GLoRI Shenzhen -0.011.
    So R = L*D / 4 is the smallest rank within 0.005 on both backbones (seed means; lr flips aside), and the
    recommended one; at 12.5% GLoRI lost 0.018 on Montgomery in all three seeds.
    int8 (--dtype int8), demo store R=128 (25%), seeds 0,1,2, mean diff GLoRI / linear. Raw coordinates with
      int8 CLS (before): CheXpert +0.0001 / -0.0003, JSRT -0.0012 / +0.0002, PLCO +0.0006 / -0.0005,
      Montgomery -0.0085 / 0.0000, Shenzhen -0.079 (two lr flips; the seed that kept its lr -0.038) / -0.0083
      (one lr flip). Whitened coordinates, float16 CLS (now): CheXpert 0.0000 / +0.0001, JSRT -0.0170 (one lr
      flip, -0.0496, as in fp16; the others 0.0000, -0.0015) / +0.0002, PLCO -0.0011 / -0.0007, Montgomery
      +0.0040 / 0.0000, Shenzhen +0.0005 (one lr flip) / -0.0005; the linear probe within 0.0015 in every run.
      Whitened fp16 at R=128, same seeds: CheXpert 0.0000; Montgomery +0.0063; Shenzhen -0.144 (two flips to
      the diverging lr 5e-3). Shenzhen GLoRI over seeds 0-9: the lr flips in 6 / 5 / 6 of 10 runs for raw R=128,
      whitened R=128 and the lossless rotation R=512; same-lr means -0.010 / -0.011 / -0.008.
    pooling: the teacher's 128-px store (8x8 grid, L*D = 512), GLoRI over seeds 0,1,2, mean diff CheXpert /
      Shenzhen / Montgomery / JSRT / PLCO: R=128 (25%) +0.0009 / -0.075 (one lr flip, -0.205) / +0.0040 /
      +0.033 (one lr flip, +0.084) / -0.0014; R=128 pool 2 +0.024 (all three seeds up) / -0.020 / +0.212 /
      +0.003 / +0.013; the full store's own seed-to-seed SD 0.016 / 0.055 / 0.153 / 0.026 / 0.041. The
      linear probe (seed 0): pool 2 with R=64 within 0.0013 everywhere. GLoRI on 16 pooled tokens is another
      model (here mostly a better-trained one), so pooling is measured per study, not assumed free.
    halving (demo store, seed 0): picked the full sweep's lr in 4 of 12 runs; otherwise test AUROC moved by
      -0.19 (Montgomery GLoRI), -0.048, -0.032, -0.025, -0.017, -0.0001, +0.007, +0.022: the full sweep stays
      the default.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd
import torch

from heads import HeadStack, build_head, masked_bce
from pipeline.cards import packaged_card
from pipeline.store import FeatureStore, Item, StoreLayout, StoreWriter, store_attrs
from pipeline.store.projection import random_projection

VITL = dict(n_layers=4, dim=1024, n_patches=1024, n_registers=0)
DATASET_IMAGES = {"CXR-LT 24": 260_000, "PLCO": 190_700}
COST_DATASETS = ("chexpert", "cxrlt24", "plco", "shenzhen")


class PaperProtocol(NamedTuple):
    """A data set's probe protocol at the paper's scale: split sizes, probe epochs, head outputs."""

    train: int
    val: int
    test: int
    epochs: int
    outputs: int

    @property
    def images(self) -> int:
        return self.train + self.val + self.test

    @property
    def head_passes(self) -> int:
        """Head passes per image-lr: the sweep (9 lrs x E epochs x train) and the refit (E epochs x train + val)."""
        return self.epochs * (LRS * self.train + self.train + self.val)

    @property
    def chexfound_forwards(self) -> int:
        """Backbone forwards of CheXFound's way: every epoch of the sweep and of the refit, val and test once."""
        return self.epochs * self.train + self.val + self.epochs * (self.train + self.val) + self.test


def paper_splits() -> dict[str, PaperProtocol]:
    """Each cost data set's protocol, from the data set cards (data_manifests/<ds>.yaml)."""
    cards = {ds: packaged_card(ds) for ds in COST_DATASETS}
    return {
        ds: PaperProtocol(c.paper_splits["train"], c.paper_splits.get("val", 0), c.paper_splits["test"],
                          int(c.probe["epochs"]), len(c.label_columns))
        for ds, c in cards.items()
    }  # fmt: skip


LRS = 9
BATCH = 256  # the paper's probe batch: the optimizer step's cost is shared by this many images


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("parts", nargs="+", choices=("sizes", "read", "cost", "bound", "quality"))
    parser.add_argument("--read-images", type=int, default=256)
    parser.add_argument("--read-stores", default=None, help="read: existing store folders (comma-separated) instead")
    parser.add_argument("--fit-images", type=int, default=2048, help="cost: train images the basis is fitted on")
    parser.add_argument(
        "--step-batch",
        type=int,
        default=2,
        help="cost: images per measured GLoRI step (per-call overheads weigh less at larger batches)",
    )
    parser.add_argument("--workspace", type=Path)
    parser.add_argument("--backbone", default="full")
    parser.add_argument("--datasets", default=None)
    parser.add_argument("--ranks", default="16,32,64,128")
    parser.add_argument("--pool-rank", type=int, default=64, help="quality: also this rank with pool 2 (0: skip)")
    parser.add_argument("--lrs", default="1e-4,1e-3,5e-3")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--glori-dims", default="64,128")
    parser.add_argument("--heads", default="glori,linear")
    parser.add_argument("--resamples", type=int, default=1000)
    parser.add_argument("--protocol", choices=("quick", "demo"), default="quick",
                        help="quality: quick (--lrs, --epochs, --glori-dims) or the demo's (9 lrs, its epochs and "
                        "GLoRI widths per data set, pipeline/demo.py)")  # fmt: skip
    parser.add_argument("--no-halving", action="store_true", help="quality: skip the halving comparison")
    parser.add_argument("--reuse", action="store_true", help="quality: keep projected stores that already exist")
    parser.add_argument("--dtype", default="float16", choices=("float16", "int8"), help="quality: projected stores'")
    parser.add_argument("--seeds", default="0", help="quality: probe seeds (several: mean diff vs seed-to-seed SD)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, load {os.getloadavg()[0]:.1f}")
    for part in args.parts:
        {"sizes": sizes, "read": read, "cost": cost, "bound": bound, "quality": quality}[part](args)


# ---- sizes -----------------------------------------------------------------------------------------------------
def sizes(args) -> None:
    print("\n[sizes, ARITHMETIC from StoreLayout] ViT-L/16-512: 4 blocks x 1024 patches x 1024 dims (+ 4 CLS)")
    rows = [("full", "float16", 0, 1), ("full", "int8", 0, 1)]
    ranks = (64, 128, 256, 512, 1024)
    rows += [(f"R={r}", dt, r, pool) for pool in (1, 2) for r in ranks for dt in ("float16", "int8")]
    rows.insert(2, ("full pool 2", "float16", 0, 2))
    print(f"  {'store':12s} {'dtype':8s} {'pool':>4s} {'MB/image':>9s} {'vs full fp16':>12s} "
          + " ".join(f"{k:>10s}" for k in DATASET_IMAGES))  # fmt: skip
    full = StoreLayout(**VITL).bytes_per_image
    for name, dtype, rank, pool in rows:
        b = StoreLayout(**VITL, dtype=dtype, rank=rank, pool=pool).bytes_per_image
        totals = " ".join(f"{b * n / 1e12:8.2f}TB" if b * n > 1e12 else f"{b * n / 1e9:8.1f}GB"
                          for n in DATASET_IMAGES.values())  # fmt: skip
        print(f"  {name:12s} {dtype:8s} {pool:4d} {b / 1e6:9.3f} {full / b:11.1f}x {totals}")
    print(f"  (R as a fraction of L*D = 4096: {', '.join(f'{r}: {r / 4096:.1%}' for r in ranks)})")
    for dtype in ("float16", "int8"):
        widest = max(r for r in range(1, 4097) if StoreLayout(**VITL, dtype=dtype, rank=r).bytes_per_image <= 1e6)
        print(f"  <= 1 MB per image unpooled in {dtype}: R <= {widest} ({widest / 4096:.1%} of L*D)")


# ---- read ------------------------------------------------------------------------------------------------------
def read(args) -> None:
    from pipeline.embed.compress import compress_store

    if args.read_stores:
        print("\n[read, MEASURED] existing stores, every row, shuffled batches of 64")
        for path in args.read_stores.split(","):
            _time_reads(Path(path).name, Path(path))
        return
    n, shape = args.read_images, dict(n_layers=4, dim=768, n_patches=196, n_registers=0)
    print(f"\n[read, MEASURED] {n} rows of ViT-B/16-224 shape (4 x 196 x 768), low-rank tokens, read in batches of 64")
    with tempfile.TemporaryDirectory() as tmp:
        full_path = Path(tmp) / "full"
        _write_synthetic_store(full_path, n, shape)
        ids = {f"img{i}" for i in range(n)}
        stores = {"full fp16": full_path}
        for rank, dtype in ((64, "float16"), (256, "float16"), (64, "int8")):
            out = Path(tmp) / f"r{rank}{dtype}"
            t0 = time.perf_counter()
            compress_store(full_path, out, ids, rank, dtype=dtype, fit_images=16, progress=False)
            print(f"  compress to R={rank} {dtype} (basis fitted on 16 images): {time.perf_counter() - t0:.1f} s")
            stores[f"R={rank} {dtype}"] = out
        for name, path in stores.items():
            _time_reads(name, path)


def _time_reads(name: str, path: Path) -> None:
    store = FeatureStore.open(path)
    rows = np.sort(store.row_numbers)
    n = len(rows)
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in store.iter_batches(rows, 64, ("cls", "patch"), shuffle=True):
            pass
        best = min(best, time.perf_counter() - t0)
    disk = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    raw = store.layout.bytes_per_image * n
    print(f"  {name:14s}: {n / best:8.0f} images/s, {raw / best / 1e6:8.1f} MB/s of tokens "
          f"({disk / n / 1e3:7.1f} kB/image on disk, {store.layout.bytes_per_image / 1e3:.1f} kB raw)")  # fmt: skip


def _write_synthetic_store(path: Path, n: int, shape: dict) -> None:
    layout = StoreLayout(**shape)
    attrs = store_attrs("bench", {}, "random", "0" * 64, [-4, -3, -2, -1], "float16", {})
    writer = StoreWriter.open(path, layout, attrs)
    f = shape["n_layers"] * shape["dim"]
    g = torch.Generator().manual_seed(0)
    mix = torch.randn(96, f, generator=g) / math.sqrt(96)
    for unit in writer.plan(Item(f"img{i}", 0, group="g") for i in range(n)):
        writer.claim(unit)
        b, p = len(unit.image_ids), shape["n_patches"]
        flat = torch.randn(b * p, 96, generator=g) @ mix + 0.05 * torch.randn(b * p, f, generator=g)
        patch = flat.reshape(b, p, shape["n_layers"], shape["dim"]).permute(0, 2, 1, 3)
        writer.write_unit(unit, {"cls": torch.randn(b, shape["n_layers"], shape["dim"], generator=g), "patch": patch})


# ---- cost ------------------------------------------------------------------------------------------------------
def cost(args) -> None:
    from benchmarks.bench_probe import _best_of, _h, _no_grad
    from pipeline.backbone import build_backbone, last_layer_tokens, preset

    print("\n[cost, MODELLED from measured unit costs] ViT-L/16 at 512 px, GLoRI at the paper's width (768/2048)")
    config = preset("vit_large_patch16", img_size=512)
    backbone = build_backbone(config).eval()
    fwd = _best_of(lambda: _no_grad(last_layer_tokens, backbone, torch.randn(1, 3, 512, 512), 4), reps=1)
    backbone = None
    print(f"  backbone forward: {fwd:.2f} s / image (load {os.getloadavg()[0]:.1f})")
    variants = {"full": (0, 1), "full pool 2": (0, 2), "R=1024": (1024, 1), "R=512": (512, 1), "R=256": (256, 1),
                "R=1024 pool 2": (1024, 2), "R=512 pool 2": (512, 2), "R=256 pool 2": (256, 2)}  # fmt: skip
    splits = paper_splits()
    outputs = sorted({s.outputs for s in splits.values()})
    step: dict[tuple[str, int, int], float] = {}
    print(f"  GLoRI step per image, 9 lrs / 1 lr, s, by the data set's outputs (load {os.getloadavg()[0]:.1f}):")
    print("  " + f"{'tokens':14s} " + "  ".join(f"{f'{k} outputs':>17s}" for k in outputs))
    for name, (rank, pool) in variants.items():
        for k in outputs:
            for n_heads in (LRS, 1):
                step[name, k, n_heads] = _glori_step(rank, pool, n_heads, b=args.step_batch, n_outputs=k)
        cells = (f"{step[name, k, LRS]:.4f} / {step[name, k, 1]:.4f}" for k in outputs)
        print("  " + f"{name:14s} " + "  ".join(f"{c:>17s}" for c in cells), flush=True)
    print(
        f"  (step per image = forward + backward per image, measured at batch {args.step_batch}, + one AdamW step"
        " / 256; projected: + the basis fold and its gradient, once per step, / 256)"
    )
    print("  protocol: sweep E epochs x train (9 lrs) + refit E epochs x (train + val) (1 lr); the embed floor is one"
          " forward per image; halving: 9 lrs for E/8, 4 to E/4, 2 to E/2, 1 to E (stack cost interpolated"
          " linearly between the measured 1- and 9-lr steps)")  # fmt: skip
    for ds, (n_tr, n_val, n_te, epochs, k) in splits.items():
        floor = fwd * splits[ds].images
        fit = fwd * min(args.fit_images, n_tr)  # `chex embed --rank`: one extra forward per fit image
        print(f"  {ds} ({n_tr:,}/{n_val:,}/{n_te:,}, {epochs} epochs, {k} outputs): embed floor {_h(floor)}")

        def heads(name, halving=False, n_tr=n_tr, n_val=n_val, epochs=epochs, k=k):
            c9, c1 = step[name, k, LRS], step[name, k, 1]
            if halving:
                c = lambda h: c1 + (c9 - c1) * (h - 1) / (LRS - 1)  # noqa: E731
                sweep = n_tr * epochs * (c(9) / 8 + c(4) / 8 + c(2) / 4 + c(1) / 2)
            else:
                sweep = c9 * epochs * n_tr
            return sweep + c1 * epochs * (n_tr + n_val)

        chexfound = fwd * splits[ds].chexfound_forwards + heads("full")
        ways = {"CheXFound's way": chexfound, "chex, full store": floor + heads("full"),
                "chex, full store + halving": floor + heads("full", True),
                "chex, full store pool 2": floor + heads("full pool 2")}  # fmt: skip
        for name in variants:
            if name.startswith("R="):
                ways[f"chex, {name}"] = floor + fit + heads(name)
                ways[f"chex, {name} + halving"] = floor + fit + heads(name, True)
        for way, t in ways.items():
            print(f"    {way:30s} {_h(t):>9s}  CheXFound/this = {chexfound / t:5.1f}x  this/floor = {t / floor:5.2f}")


def _glori_step(rank: int, pool: int, n_heads: int, b: int = 2, n_outputs: int = 14) -> float:
    p = 1024 // (pool * pool)
    cls = torch.randn(b, 4, 1024)
    patch = torch.randn(b, 1, p, rank) if rank else torch.randn(b, 4, p, 1024)
    y = (torch.rand(b, n_outputs) < 0.3).float()
    options = {"projection": random_projection(4096, rank)} if rank else {}
    stack = HeadStack(lambda: build_head("glori", dim=1024, n_layers=4, n_outputs=n_outputs, **options), n_heads)
    opt = torch.optim.AdamW(stack.param_groups([1e-3] * n_heads, 1e-4), fused=True)

    def forward_backward():
        stack.zero_grad(set_to_none=True)
        masked_bce(stack(cls, patch), y).backward()

    from benchmarks.bench_probe import _best_of

    stack.hold_fold()  # micro-batched as at the paper's shape: the basis fold runs once per step (heads/batched.py)
    per_image = _best_of(forward_backward, reps=2) / b
    t0 = time.perf_counter()
    stack.release_fold()
    fold = time.perf_counter() - t0 + _best_of(stack.hold_fold, reps=2) if rank else 0.0
    stack.release_fold()
    optimizer = _best_of(opt.step, reps=2)  # once per batch: amortised over the paper's batch of 256
    return per_image + (optimizer + fold) / BATCH


# ---- bound -----------------------------------------------------------------------------------------------------
def vit_forward_macs(n_blocks: int = 24, dim: int = 1024, n_patches: int = 1024, patch: int = 16) -> float:
    """MACs of one ViT forward (ViT-L/16-512 by default): per block 12·T·D² (qkv, output projection, 4x MLP) and
    2·T²·D (attention scores and weighted sum) over T = patches + [CLS] tokens, plus the patch embedding."""
    t = n_patches + 1
    return n_blocks * (12 * t * dim**2 + 2 * t**2 * dim) + n_patches * 3 * patch**2 * dim


def glori_step_macs(
    width: int, tokens: int, n_outputs: int, embed: int = 768, ffn: int = 2048, heads: int = 8
) -> float:
    """MACs of one GLoRI training step (forward + backward) per image and lr, as heads/glori.py computes it with
    few queries (n_outputs·heads < embed: key/value projections folded into the queries)."""
    rows = n_outputs * heads
    if rows >= embed:
        raise ValueError(f"{n_outputs} outputs x {heads} heads >= {embed}: the unfolded attention path")
    first = 2 * tokens * width * embed  # forward + weight gradient (the tokens are data: no input gradient)
    attention = 6 * rows * tokens * embed  # scores and weighted sum: forward, and the gradient of both operands
    queries = 9 * n_outputs * embed**2 + 6 * n_outputs * embed * ffn  # query/out projections and FFN, x3 with bwd
    return first + attention + queries


def bound(args) -> None:
    backbone = vit_forward_macs()
    splits = paper_splits()
    print(f"\n[bound, ANALYTIC] MACs: ViT-L/16-512 forward {backbone / 1e9:.0f} G; GLoRI (768/2048) step per image "
          "and lr, forward + backward, with each data set's outputs (in brackets); heads assumed as efficient as "
          "the backbone")  # fmt: skip
    variants = {"full": (4096, 1), "R=1024": (1024, 1), "R=512": (512, 1), "R=256": (256, 1), "R=64": (64, 1),
                "R=0 (decoder only)": (0, 1), "full pool 2": (4096, 2), "R=1024 pool 2": (1024, 2),
                "R=512 pool 2": (512, 2), "R=256 pool 2": (256, 2)}  # fmt: skip

    def floors(ds: str, macs_per_step: float) -> float:
        return 1 + splits[ds].head_passes * macs_per_step / (splits[ds].images * backbone)

    print("  fewest embed floors the protocol can cost (sweep 9 lrs x E epochs x train + refit E epochs x train+val):")
    print("  " + f"{'tokens':20s} " + "  ".join(f"{f'{ds} ({s.outputs})':>14s}" for ds, s in splits.items()))
    for name, (width, pool) in variants.items():
        row = [floors(ds, glori_step_macs(width, 1024 // pool**2, s.outputs)) for ds, s in splits.items()]
        print("  " + f"{name:20s} " + "  ".join(f"{f:14.2f}" for f in row))
    print("  per data set: CheXFound's way (the backbone in every epoch) and what >= 20x needs; the widest first-Linear"
          " input (of L*D 4,096) within 1.25 floors at each pooling")  # fmt: skip
    for ds, protocol in splits.items():
        k = protocol.outputs
        chexfound = protocol.chexfound_forwards / protocol.images + floors(ds, glori_step_macs(4096, 1024, k)) - 1
        budget = 0.25 * protocol.images * backbone / protocol.head_passes
        widest = [max(0, (budget - glori_step_macs(0, 1024 // p**2, k)) / (2 * 1024 // p**2 * 768)) for p in (1, 2)]
        print(f"    {ds:9s} CheXFound's way {chexfound:6.2f} floors (>= 20x needs <= {chexfound / 20:.3f}); widest "
              f"R within 1.25 floors: {widest[0]:5.0f} unpooled, {widest[1]:5.0f} with pool 2")  # fmt: skip


# ---- quality ---------------------------------------------------------------------------------------------------
def quality(args) -> None:
    from pipeline.embed.compress import compress_store, train_image_ids
    from pipeline.probe import run_probe
    from pipeline.workspace import Workspace

    ws = Workspace(args.workspace)
    names = args.datasets.split(",") if args.datasets else ws.datasets()
    full = args.backbone
    source = FeatureStore.open(ws.features_dir(full))
    f = source.n_layers * source.dim
    tag = "" if args.dtype == "float16" else f"-{args.dtype}"
    variants = {f"{full}-r{r}{tag}": (int(r), 1) for r in args.ranks.split(",")}
    if args.pool_rank:
        variants[f"{full}-r{args.pool_rank}p2{tag}"] = (args.pool_rank, 2)
    print(f"\n[quality, MEASURED] workspace {ws.root}, store {full} (L*D = {f}); load {os.getloadavg()[0]:.1f}")
    train = train_image_ids(ws, names)
    for name, (rank, pool) in variants.items():
        t0 = time.perf_counter()
        if not (args.reuse and (ws.features_dir(name) / "zarr.json").is_file()):
            compress_store(ws.features_dir(full), ws.features_dir(name), train, rank, pool=pool, fit_images=0,
                           dtype=args.dtype, progress=False)  # fmt: skip
        s = FeatureStore.open(ws.features_dir(name))
        print(f"  {name}: rank {rank} ({rank / f:.1%} of L*D), pool {pool}, variance kept "
              f"{s.projection.variance_kept:.4f}, {s.layout.bytes_per_image / 1e3:.1f} kB/image vs "
              f"{source.layout.bytes_per_image / 1e3:.1f} "
              f"({time.perf_counter() - t0:.0f} s)")  # fmt: skip
    rows, halving_rows = [], []
    seeds = [int(x) for x in args.seeds.split(",")]
    for ds, head, seed in ((d, h, s) for d in names for h in args.heads.split(",") for s in seeds):
        config = dataclasses.replace(_quality_config(args, ds, head), seed=seed)
        if not args.no_halving:
            halved = _halving_run(ws, ds, head, full, config)  # first: it shares the full sweep's run folder
        t0 = time.perf_counter()
        base = run_probe(ws, ds, head, full, config, force=True, progress=False)
        t_full = time.perf_counter() - t0
        if not args.no_halving:
            halving_rows.append(
                {
                    "dataset": ds,
                    "head": head,
                    "lr_full": base.chosen_lr,
                    "lr_halving": halved.chosen_lr,
                    **_paired(base.folder, halved.folder, args),
                }
            )
            print("  " + _fmt_halving(halving_rows[-1]), flush=True)
        for name in variants:
            t0 = time.perf_counter()
            run = run_probe(ws, ds, head, name, config, force=True, progress=False)
            t_run = time.perf_counter() - t0
            rows.append({"dataset": ds, "head": head, "store": name, "seed": seed,
                         **_paired(base.folder, run.folder, args),
                         "lr_a": base.chosen_lr, "lr_b": run.chosen_lr, "seconds_full": t_full,
                         "seconds": t_run})  # fmt: skip
            print("  " + _fmt_row(rows[-1]), flush=True)
    table = pd.DataFrame(rows)
    print(
        "\n  test macro AUROC, full store vs projected (diff = projected - full; paired 95% bootstrap CI, "
        "permutation p)"
    )
    for r in rows:
        print("  " + _fmt_row(r))
    for name in variants:
        sub = table[table["store"] == name]
        ok = ((sub["ci_low"] <= 0) & (sub["ci_high"] >= 0) & (sub["diff"].abs() <= 0.005)).all()
        covers = ((sub["ci_low"] <= 0) & (sub["ci_high"] >= 0)).mean()
        print(
            f"  {name:16s}: CI covers 0 in {covers:.0%} of runs, max |diff| {sub['diff'].abs().max():.4f}, "
            f"mean diff {sub['diff'].mean():+.4f}; rule (CI covers 0 and |diff| <= 0.005 everywhere): {ok}"
        )
    if len(seeds) > 1:
        print(f"\n  over seeds {args.seeds}: mean diff (SD of the diff) and the full store's own seed-to-seed SD")
        for (ds, head, name), sub in table.groupby(["dataset", "head", "store"], sort=False):
            print(f"  {ds:11s} {head:6s} {name:18s} mean diff {sub['diff'].mean():+.4f} ({sub['diff'].std():.4f}); "
                  f"full store {sub['auroc_a'].mean():.4f}, seed SD {sub['auroc_a'].std():.4f}")  # fmt: skip
    print("\n  full sweep vs --sweep halving (same store, same lrs)")
    same = 0
    for r in halving_rows:
        same += r["lr_full"] == r["lr_halving"]
        print("  " + _fmt_halving(r))
    print(f"  halving picked the full sweep's lr in {same} of {len(halving_rows)} runs")


def _quality_config(args, dataset: str, head: str):
    """The probe configuration of one quality run: the quick one, or the demo's (its lrs, epochs, batch and
    GLoRI width for this data set; the avgpool linear probe)."""
    from pipeline.demo import SIZES, SMALL_SETS, _head_options
    from pipeline.probe import ProbeConfig

    if args.protocol == "demo":
        plan = SIZES["small"]
        epochs = plan.epochs_small if dataset in SMALL_SETS else plan.epochs_large
        return ProbeConfig(lrs=plan.lrs, epochs=epochs, batch_size=plan.batch_size, n_resamples=200,
                           head_options=_head_options(head, plan, dataset))  # fmt: skip
    e, ffn = (int(x) for x in args.glori_dims.split(","))
    options = {"embed_dim": e, "ffn_dim": ffn} if head == "glori" else {"avgpool": True}
    lrs = tuple(float(x) for x in args.lrs.split(","))
    return ProbeConfig(lrs=lrs, epochs=args.epochs, n_resamples=200, head_options=options, batch_size=32)


def _halving_run(ws, ds, head, backbone, config):
    """A --sweep halving run, moved to a sibling folder (`<head>-halving`) so the full sweep's run can follow."""
    from pipeline.probe import run_probe

    run = run_probe(ws, ds, head, backbone, dataclasses.replace(config, sweep="halving"), force=True, progress=False)
    target = run.folder.with_name(run.folder.name + "-halving")
    shutil.rmtree(target, ignore_errors=True)
    shutil.move(run.folder, target)
    return dataclasses.replace(run, folder=target)


def _paired(folder_a: Path, folder_b: Path, args) -> dict:
    """Test macro AUROC of both runs, paired bootstrap CI of b - a (same resamples), paired permutation p."""
    from pipeline.stats.bootstrap import bootstrap_metrics
    from pipeline.stats.evaluate import compare_predictions
    from pipeline.stats.tables import pivot

    a = pd.read_parquet(folder_a / "predictions.parquet")
    b = pd.read_parquet(folder_b / "predictions.parquet")
    cmp = compare_predictions(b, a, n_permutations=args.resamples)
    macro = cmp[(cmp["output"] == "macro") & (cmp["metric"] == "auroc")].iloc[0]
    ta, tb = pivot(a, "a"), pivot(b, "b")
    order = [tb.outputs.index(o) for o in ta.outputs]
    rows_b = pd.Index(tb.image_ids).get_indexer(ta.image_ids)
    clusters = a.drop_duplicates("image_id").set_index("image_id").loc[ta.image_ids, "patient_id"].to_numpy()
    boot = {name: bootstrap_metrics(ta.labels, s, clusters, n_resamples=args.resamples, seed=0)
            for name, s in (("a", ta.scores), ("b", tb.scores[rows_b][:, order]))}  # fmt: skip
    diff = boot["b"].replicates["auroc"][:, -1] - boot["a"].replicates["auroc"][:, -1]
    lo, hi = np.nanpercentile(diff, [2.5, 97.5])
    return {"auroc_a": float(macro["estimate_b"]), "auroc_b": float(macro["estimate_a"]), "diff": float(macro["diff"]),
            "ci_low": float(lo), "ci_high": float(hi), "p": float(macro["p_value"])}  # fmt: skip


def _fmt_halving(r: dict) -> str:
    return (f"{r['dataset']:11s} {r['head']:6s} halving: lr full {r['lr_full']:g} halving {r['lr_halving']:g}  "
            f"test AUROC {r['auroc_a']:.4f} vs {r['auroc_b']:.4f} diff {r['diff']:+.4f} "
            f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] p={r['p']:.3f}")  # fmt: skip


def _fmt_row(r: dict) -> str:
    return (f"{r['dataset']:11s} {r['head']:6s} {r['store']:16s} seed {r['seed']} lr {r['lr_a']:g}/{r['lr_b']:g} "
            f"full {r['auroc_a']:.4f} proj {r['auroc_b']:.4f} "
            f"diff {r['diff']:+.4f} [{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] p={r['p']:.3f} "
            f"({r['seconds_full']:.0f} s vs {r['seconds']:.0f} s)")  # fmt: skip


if __name__ == "__main__":
    main()
