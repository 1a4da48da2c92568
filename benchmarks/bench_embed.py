"""Embed speed vs a bare forward_intermediates loop, store bytes per image, read throughput, int8 error.

Run: python benchmarks/bench_embed.py [--arch vit_small_patch16 --image-size 224 --images 96]
Prints figures and ratios; asserts nothing. Timings on a shared machine are noisy: rerun on a quiet one.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from pipeline.backbone import build_backbone, preset
from pipeline.backbone.families._vit import vit_backbone
from pipeline.embed.runner import embed_batches
from pipeline.store import FeatureStore, Item, StoreLayout, StoreWriter, store_attrs


def bare_loop(model, batches, n_layers: int) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        for x in batches:
            model.forward_intermediates(
                x, indices=n_layers, norm=True, output_fmt="NLC", intermediates_only=True, return_prefix_tokens=True
            )
    return time.perf_counter() - start


def chex_loop(backbone, batches, config, n_layers: int, store: Path, dtype: str) -> float:
    layout = StoreLayout(n_layers, config.embed_dim, config.n_patches, config.num_registers, dtype)
    attrs = store_attrs("bench", config.to_dict(), "random", "0" * 64, list(range(n_layers)), dtype, {})
    return timed_embed(backbone, batches, layout, attrs, store)


def timed_embed(model, batches, layout: StoreLayout, attrs: dict, store: Path) -> float:
    """Seconds chex's embed loop (`embed_batches`: tokens + store writes) takes over `batches` into a new store at
    `store`, the units planned and claimed beforehand (not timed)."""
    n = sum(len(x) for x in batches)
    writer = StoreWriter.open(store, layout, attrs)
    units = {u.index: u for u in writer.plan(Item(f"img{i}") for i in range(n))}
    for u in units.values():
        writer.claim(u)
    order = [(u.index, r) for u in sorted(units.values(), key=lambda u: u.index) for r in range(len(u.image_ids))]
    feed, k = [], 0
    for x in batches:
        pairs = order[k : k + len(x)]
        feed.append({"x": x, "unit": [p[0] for p in pairs], "row": [p[1] for p in pairs]})
        k += len(x)
    start = time.perf_counter()
    embed_batches(model, feed, units, writer, layout.n_layers, torch.device("cpu"))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--arch", default="vit_small_patch16")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    torch.manual_seed(0)
    config = preset(args.arch, img_size=args.image_size)
    model = build_backbone(config).eval()
    backbone = vit_backbone("chex", model.state_dict(), config, "0" * 64, "bench")  # what `chex embed` runs
    images = torch.randn(args.images, 3, args.image_size, args.image_size)
    batches = list(images.split(args.batch_size))
    print(
        f"{args.arch} @ {args.image_size}px, {args.images} images, batch {args.batch_size}, "
        f"{torch.get_num_threads()} threads (shared machine: timings are noisy)"
    )
    bare_loop(model, batches[:1], args.layers)  # warm-up

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bare, chex = [], []
        for r in range(args.repeats):  # interleave to share the noise
            bare.append(bare_loop(model, batches, args.layers))
            chex.append(chex_loop(backbone, batches, config, args.layers, tmp / f"f16-{r}", "float16"))
        b, c = args.images / min(bare), args.images / min(chex)
        print(
            f"embed speed: bare forward_intermediates {b:.1f} img/s, chex embed (+fp16 store) {c:.1f} img/s, "
            f"ratio {c / b:.3f} (goal >= 0.9)"
        )
        chex_loop(backbone, batches, config, args.layers, tmp / "i8", "int8")

        raw = args.layers * (1 + config.n_patches + config.num_registers) * config.embed_dim * 4
        stores = {"float16": FeatureStore.open(tmp / "f16-0"), "int8": FeatureStore.open(tmp / "i8")}
        for name, store in stores.items():
            info = store.info()
            print(
                f"store {name}: {info['bytes_per_row'] / 1e6:.3f} MB/image on disk vs raw fp32 {raw / 1e6:.3f} MB "
                f"({info['bytes_per_row'] / raw:.3f} of raw)"
            )
        for name, store in stores.items():
            rows = store.rows([f"img{i}" for i in range(args.images)])
            start = time.perf_counter()
            n_bytes = 0
            for _, tokens in store.iter_batches(rows, args.batch_size, shuffle=True):
                n_bytes += sum(t.numel() * 4 for t in tokens.values())
            dt = time.perf_counter() - start
            print(
                f"read {name} (cls+patch, shuffled batches of {args.batch_size}): {args.images / dt:.1f} img/s, "
                f"{n_bytes / dt / 1e6:.0f} MB/s of float32 tokens"
            )
        ids = [f"img{i}" for i in range(args.images)]
        f16 = stores["float16"].read(stores["float16"].rows(ids))
        i8 = stores["int8"].read(stores["int8"].rows(ids))
        with torch.inference_mode():
            from pipeline.backbone import last_layer_tokens

            exact = last_layer_tokens(model, images[: args.batch_size], args.layers)
        n = args.batch_size
        for part, ref in (("cls", exact[0]), ("patch", exact[1])):
            e8 = (i8[part][:n] - ref).abs().max().item()
            e16 = (f16[part][:n] - ref).abs().max().item()
            print(
                f"max abs token error vs fp32 ({part}): int8 {e8:.4f}, fp16 {e16:.5f}; int8 vs fp16 "
                f"{(i8[part] - f16[part]).abs().max().item():.4f} (token max |x| {ref.abs().max().item():.2f})"
            )


if __name__ == "__main__":
    main()
