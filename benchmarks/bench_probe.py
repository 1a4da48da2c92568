"""The probe protocol, CheXFound's way vs chex's way, side by side (figures, never asserts).

Protocol per data set and head (the paper's): a 9-lr sweep of E epochs on train, val scoring, then an E-epoch
refit at the chosen lr on train + val, then test predictions.

(a) CheXFound: all lrs' heads share one backbone forward per batch, but the backbone runs on the images on
    every iteration of the sweep, of the refit, and for every evaluation.
(b) chex: one embed of every image into the feature store, then the same head training on the cached tokens
    (read back from the store, streamed or cached in memory).
floor of (b): the embed time + the pure head compute with the features already in memory.

Part 1 measures (a), (b) and the floor end to end at a small CPU shape. Part 2 measures unit costs at the
ViT-L/16-512 shape (backbone forward per image; head step per image for 9 lrs and for 1 lr; the GLoRI embed
Linear alone) and composes them with the protocol's counts for the paper's splits: a MODELLED figure.

    python benchmarks/bench_probe.py                 # both parts (part 2 builds a ViT-L: ~1.3 GB RAM)
    python benchmarks/bench_probe.py --skip-large    # part 1 only
The machine this runs on may be shared: timings are noisy; rerun on a quiet machine for the report.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from heads import HeadStack, build_head, masked_bce
from pipeline.backbone import build_backbone, last_layer_tokens, preset
from pipeline.probe.data import Features
from pipeline.probe.protocol import PAPER_LRS
from pipeline.probe.sweep import TrainSpec, predict_stack, train_stack
from pipeline.store import FeatureStore, Item, StoreLayout, StoreWriter, store_attrs

N_LAYERS = 4
PAPER_SPLITS = {  # train, val, test images; epochs (the paper's data sets, docs/architecture.md)
    "chexpert": (191_027, 202, 518, 10),
    "plco": (133_543, 19_099, 38_058, 10),
    "shenzhen": (463, 65, 134, 100),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=192, help="part 1: images (70/10/20 train/val/test)")
    parser.add_argument("--img-size", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--outputs", type=int, default=5)
    parser.add_argument("--skip-large", action="store_true", help="skip part 2 (ViT-L/16-512 unit costs)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU; timings on a shared machine are noisy")
    for head in ("linear", "glori"):
        part1(head, args)
    if not args.skip_large:
        part2(args.outputs)


# ---- part 1: end to end at a small CPU shape -----------------------------------------------------------------
def part1(head: str, args) -> None:
    config = preset("vit_small_patch16", img_size=args.img_size, depth=6)
    backbone = build_backbone(config).eval()
    n = args.images
    n_train, n_val = int(0.7 * n), int(0.1 * n)
    images = torch.randn(n, 3, args.img_size, args.img_size)
    labels = (torch.rand(n, args.outputs) < 0.3).float().numpy()
    train, val, test = np.arange(n_train), np.arange(n_train, n_train + n_val), np.arange(n_train + n_val, n)
    spec = TrainSpec(PAPER_LRS, args.epochs, args.batch_size)
    make = lambda: build_head(head, dim=config.embed_dim, n_layers=N_LAYERS, n_outputs=args.outputs)  # noqa: E731

    t0 = time.perf_counter()
    chexfound_way(backbone, make, images, labels, train, val, test, spec)
    t_a = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        store = embed_to_store(backbone, images, Path(tmp) / "store", config.embed_dim, config.n_patches)
        t_embed = time.perf_counter() - t0
        ids = [f"img{i}" for i in range(n)]
        parts = ("cls", "patch") if make().needs_patch else ("cls",)
        timings = {}
        for mode, budget in (("streamed", 0), ("in-memory", 2 << 30)):
            t0 = time.perf_counter()
            features = Features(store, ids, parts, cache_bytes=budget)
            run_protocol(make, features, labels, train, val, test, spec)
            timings[mode] = time.perf_counter() - t0
        resident = InMemory(store.read(store.rows(ids), parts))  # the floor: tensors already in memory
        t0 = time.perf_counter()
        run_protocol(make, resident, labels, train, val, test, spec)
        t_heads = time.perf_counter() - t0
    floor = t_embed + t_heads
    shape = f"{n} images {args.img_size}px (ViT-S/16 depth 6, {config.n_patches} patches)"
    protocol = f"{len(PAPER_LRS)} lrs x {args.epochs} epochs + {args.epochs}-epoch refit"
    print(f"\n[part 1, MEASURED end to end] head={head}, {shape}, {protocol}")
    print(f"  (a) CheXFound way (backbone every iteration): {t_a:8.2f} s")
    print(f"  embed once into the store:                      {t_embed:8.2f} s")
    print(f"  pure head compute, features in memory:          {t_heads:8.2f} s")
    for mode, t in timings.items():
        b = t_embed + t
        print(f"  (b) chex way, store {mode:9s}:               {b:8.2f} s   (a)/(b) = {t_a / b:5.2f}   "
              f"(b)/floor = {b / floor:4.2f}")  # fmt: skip


def chexfound_way(backbone, make, images, labels, train, val, test, spec) -> None:
    """Every batch of every epoch (sweep, refit) and every evaluation runs the backbone first."""
    source = BackboneSource(backbone, images)
    run_protocol(make, source, labels, train, val, test, spec)


def run_protocol(make, source, labels, train, val, test, spec) -> None:
    device = torch.device("cpu")
    torch.manual_seed(0)
    sweep = train_stack(HeadStack(make, len(spec.lrs)), source, train, labels, spec, device, progress=False)
    val_probs = predict_stack(sweep, source, val, 64, device)
    best = int(np.nanargmax([np.nanmean(p) for p in val_probs]))  # selection cost is negligible either way
    refit_spec = TrainSpec((spec.lrs[best],), spec.epochs, spec.batch_size)
    refit = train_stack(HeadStack(make, 1), source, np.concatenate([train, val]), labels, refit_spec, device,
                        progress=False)  # fmt: skip
    predict_stack(refit, source, test, 64, device)


class BackboneSource:
    """Batches of tokens computed from the images on demand (CheXFound's data path)."""

    def __init__(self, backbone, images: torch.Tensor) -> None:
        self.backbone, self.images = backbone, images

    @torch.no_grad()
    def batches(self, positions, batch_size, shuffle=False, seed=0, sample_views=False):
        order = np.random.default_rng(seed).permutation(positions) if shuffle else np.asarray(positions)
        for start in range(0, len(order), batch_size):
            pos = order[start : start + batch_size]
            cls, patch, _ = last_layer_tokens(self.backbone, self.images[torch.from_numpy(pos)], N_LAYERS)
            yield pos, {"cls": cls, "patch": patch}


class InMemory:
    """Batches sliced out of tensors already in memory (the floor)."""

    def __init__(self, tokens: dict[str, torch.Tensor]) -> None:
        self.tokens = tokens

    def batches(self, positions, batch_size, shuffle=False, seed=0, sample_views=False):
        order = np.random.default_rng(seed).permutation(positions) if shuffle else np.asarray(positions)
        for start in range(0, len(order), batch_size):
            pos = order[start : start + batch_size]
            index = torch.from_numpy(pos)
            yield pos, {k: v.index_select(0, index) for k, v in self.tokens.items()}


@torch.no_grad()
def embed_to_store(backbone, images, path: Path, dim: int, n_patches: int) -> FeatureStore:
    """Embed every image once through the store's own writer (as `chex embed` does)."""
    layout = StoreLayout(N_LAYERS, dim, n_patches, 0)
    writer = StoreWriter.open(path, layout, store_attrs("bench", {}, "random", "0" * 64, [-4, -3, -2, -1],
                                                        "float16", {}))  # fmt: skip
    for unit in writer.plan(Item(f"img{i}", 0, group="g") for i in range(len(images))):
        writer.claim(unit)
        index = torch.tensor([int(i[3:]) for i in unit.image_ids])
        cls, patch, _ = last_layer_tokens(backbone, images[index], N_LAYERS)
        writer.write_unit(unit, {"cls": cls, "patch": patch})
    return FeatureStore.open(path)


# ---- part 2: unit costs at the ViT-L/16-512 shape, composed by the protocol's counts ---------------------------
def part2(n_outputs: int) -> None:
    print("\n[part 2, MODELLED from measured unit costs] ViT-L/16 at 512 px (1024 patches, D=1024, 4 blocks)")
    config = preset("vit_large_patch16", img_size=512)
    backbone = build_backbone(config).eval()
    x = torch.randn(1, 3, 512, 512)
    fwd = _best_of(lambda: _no_grad(last_layer_tokens, backbone, x, N_LAYERS), reps=2)
    print(f"  backbone forward: {fwd:.2f} s / image")
    backbone = None  # free ~1.2 GB before the head measurements
    b, p, d = 2, config.n_patches, config.embed_dim
    cls, patch = torch.randn(b, N_LAYERS, d), torch.randn(b, N_LAYERS, p, d)
    y = (torch.rand(b, n_outputs) < 0.3).float()
    costs = {}
    for head in ("linear", "glori"):
        make = lambda head=head: build_head(head, dim=d, n_layers=N_LAYERS, n_outputs=n_outputs)  # noqa: E731
        for n_heads in (len(PAPER_LRS), 1):
            stack = HeadStack(make, n_heads)
            opt = torch.optim.AdamW(stack.param_groups([1e-3] * n_heads, 1e-4), fused=True)

            def step(stack=stack, opt=opt):
                opt.zero_grad()
                masked_bce(stack(cls, patch if stack.needs_patch else None), y).backward()
                opt.step()

            costs[head, n_heads] = _best_of(step, reps=2) / b
        print(f"  {head:6s} head step per image: {costs[head, 9]:.4f} s (9 lrs), {costs[head, 1]:.4f} s (1 lr)")
    tokens = patch.permute(0, 2, 1, 3).reshape(b * p, N_LAYERS * d)
    weight = torch.randn(len(PAPER_LRS) * 768, N_LAYERS * d, requires_grad=True)

    def embed_linear():
        out = torch.relu(tokens @ weight.T)
        out.sum().backward()

    t_embed = _best_of(embed_linear, reps=2) / b
    share = t_embed / costs["glori", 9]
    print(f"  GLoRI embed Linear (4096 -> 768 for all 1024 patch tokens, 9 heads, fwd + weight grad): "
          f"{t_embed:.4f} s / image = {share:.0%} of the 9-lr GLoRI step")  # fmt: skip
    print("  protocol: sweep E epochs x train (9 lrs) + val eval; refit E epochs x (train + val) (1 lr); test eval")
    for name, (n_tr, n_val, n_te, epochs) in PAPER_SPLITS.items():
        for head in ("linear", "glori"):
            heads = costs[head, 9] * epochs * n_tr + costs[head, 1] * epochs * (n_tr + n_val)
            a = fwd * (epochs * n_tr + n_val + epochs * (n_tr + n_val) + n_te) + heads
            b_ = fwd * (n_tr + n_val + n_te) + heads
            print(f"  {name:9s} {head:6s}: (a) {_h(a):>9s}  (b) {_h(b_):>9s}  (a)/(b) = {a / b_:5.1f}  "
                  f"[heads are {heads / b_:.0%} of (b)]")  # fmt: skip


def _no_grad(fn, *args):
    with torch.no_grad():
        return fn(*args)


def _best_of(fn, reps: int) -> float:
    fn()  # warm-up
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _h(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds:.0f} s"


if __name__ == "__main__":
    main()
