"""Does `chex pretrain` learn? A short CPU pretraining run on the synthetic cohort, then a linear probe.

1. Generate the synthetic cohort (`pipeline.synth.generate_cohort`) in a workspace, unless it has manifests.
2. Write the training images of every data set into webdataset shards (the shard contract).
3. Pretrain with the `cpu_small` preset (or --config/--set); record steps/s and the loss curve.
4. Embed every classification data set's images with (a) the same backbone at random init (the student's initial
   weights: same config, same seed) and (b) the pretrained teacher, in the embed stage's plain evaluation view.
5. Linear probes (logistic regression per output on train+val, standardised features) -> macro AUROC on test,
   for the two linear protocols of docs/architecture.md: concatenated CLS of the last 4 blocks, and the same + the mean
   patch token of the last block (DINOv2's avgpool). The headline is the mean over data sets.

Prints the figures; asserts nothing about time (the machine may be shared: timings are indicative). Test sets
of the small cohort are 27-238 images, so one data set's AUROC moves by up to 0.1 between seeds: `--scale 4`
(four times the images, about 25 minutes on 2 cores with two seeds) and `--seeds 0 1` give the figures to quote.
    python benchmarks/bench_pretrain.py [--workspace DIR] [--scale 4] [--seeds 0 1] [--datasets chexpert jsrt]
                                        [--config cpu_small] [--set key=value ...]

Figures, 2026-11-30, generator version 3, `--seeds 0 1 2` at the demo's scale (quiet 2 cores after seed 0, which
shared them): pretrained - random init, mean test macro AUROC over the five sets, CLS +0.034 / +0.036 / +0.045,
CLS+avgpool +0.033 / +0.027 / +0.050. 480 steps took 814 s with the machine shared, ~200 s alone.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import webdataset as wds
from PIL import Image
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import StandardScaler

from pipeline.backbone import build_backbone, load_backbone, preset
from pipeline.backbone.tokens import last_layer_tokens
from pipeline.cards import load_card
from pipeline.embed.preprocess import Preprocessing
from pipeline.pretrain import load_config, pretrain
from pipeline.pretrain.run_folder import read_metrics, step_dir
from pipeline.shard_format import encode_png, sanitize_key
from pipeline.workspace import Workspace

PROTOCOLS = ("cls", "cls+avgpool")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--size", default="small", help="synthetic cohort size passed to generate_cohort")
    parser.add_argument(
        "--scale", type=float, default=1.0, help="images per data set x this (larger test sets, less noise)"
    )
    parser.add_argument(
        "--datasets", nargs="+", default=None, help="probe data sets (default: every classification one)"
    )
    parser.add_argument(
        "--variation", action="store_true", help="cohort with acquisition variation (chex synth --variation)"
    )
    parser.add_argument("--config", default="cpu_small")
    parser.add_argument("--name", default=None, help="run folder under checkpoints/ (default: bench-<preset name>)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="one pretraining run per seed")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument(
        "--step",
        type=int,
        default=None,
        help="probe the teacher saved at this step of an existing run (no pretraining): a learning curve point",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    root = args.workspace or Path(tempfile.mkdtemp(prefix="chex-bench-pretrain-"))
    ws = Workspace(root)
    if not ws.datasets():
        from pipeline.synth import DATASETS, SPECS, generate_cohort
        from pipeline.synth.specs import image_count

        counts = {name: round(args.scale * image_count(SPECS[name], args.size)) for name in DATASETS}
        t0 = time.perf_counter()
        generate_cohort(ws, size=args.size, n_images=counts, workers=2, progress=False, variation=args.variation)
        print(f"cohort generated in {time.perf_counter() - t0:.1f} s at {ws.root}: {counts}")
    datasets = args.datasets or _classification_datasets(ws)
    shard_dir = write_training_shards(ws, ws.root / "shards" / "bench-pretrain")
    n_train_images = sum(json.loads(p.read_text())["n"] for p in shard_dir.glob("*.json"))
    base = load_config(args.config, args.overrides)
    name = args.name or f"bench-{base.name}"
    per_seed = {}
    for seed in args.seeds:
        cfg = load_config(args.config, [*args.overrides, f"train.seed={seed}"])
        run_name = name if len(args.seeds) == 1 else f"{name}-seed{seed}"
        out = ws.checkpoints_dir(run_name)
        per_seed[seed] = pretrain_and_probe(ws, cfg, shard_dir, datasets, out, step=args.step)
        print_seed(ws, cfg, seed, per_seed[seed], datasets, n_train_images)
    if len(per_seed) > 1:
        print_over_seeds(per_seed, datasets)


def pretrain_and_probe(
    ws: Workspace, cfg, shard_dir: Path, datasets: list[str], out: Path, step: int | None = None
) -> dict:
    """Pretrain (or resume) into `out`, then probe the random-init and pretrained backbones on `datasets`.
    With `step`, no pretraining: the teacher saved at that step of the run in `out` is probed."""
    t0 = time.perf_counter()
    if step is None:
        pretrain(
            cfg, sorted(shard_dir.glob("*.tar")), out, resume=(out / "pretrain_config.yaml").exists(), progress=True
        )
        weights = out
    else:
        weights = step_dir(out, step)
        if not (weights / "model.pt").is_file():
            raise SystemExit(f"--step {step}: no saved teacher in {weights}")
    wall = time.perf_counter() - t0
    pretrained, bconfig, _ = load_backbone(weights)
    torch.manual_seed(cfg.train.seed)  # the student's initial weights: same config, same seed, same draw
    random_init = build_backbone(
        preset(cfg.model.backbone, img_size=cfg.crops.global_crops_size, **cfg.model.backbone_overrides),
        drop_path_rate=cfg.model.drop_path_rate,
        dynamic_img_size=True,
    ).eval()
    results: dict[tuple[str, str, str], float] = {}  # (data set, backbone, protocol) -> test macro AUROC
    for dataset in datasets:
        card = load_card(ws.card_path(dataset))
        manifest = pd.read_parquet(ws.manifest_path(dataset))
        for label, model in (("random init", random_init), ("pretrained", pretrained)):
            cls, avgpool = embed(model, bconfig, ws.images_dir(dataset), manifest)
            results[(dataset, label, "cls")] = probe(cls, manifest, card)["macro"]
            both = np.concatenate([cls, avgpool], axis=1)
            results[(dataset, label, "cls+avgpool")] = probe(both, manifest, card)["macro"]
    metrics = [m for m in read_metrics(out / "metrics.jsonl") if step is None or m["step"] <= step]
    return {"wall": wall, "metrics": metrics, "auroc": results}


def print_seed(ws: Workspace, cfg, seed: int, run: dict, datasets: list[str], n_train_images: int) -> None:
    metrics, auroc = run["metrics"], run["auroc"]
    first, last = metrics[: max(1, len(metrics) // 10)], metrics[-max(1, len(metrics) // 10) :]
    print()
    print(
        f"pretraining (seed {seed}): {cfg.name}, {metrics[-1]['step']} steps x {cfg.train.batch_size_per_rank} "
        f"images ({n_train_images} training images in shards), {torch.get_num_threads()} threads"
    )
    print(
        f"  wall {run['wall']:.1f} s (incl. start-up/checkpoints), "
        f"{np.mean([m['steps_per_s'] for m in metrics]):.2f} steps/s, "
        f"{np.mean([m['images_per_s'] for m in metrics]):.1f} images/s"
    )
    n_terms = 2 + 2 * cfg.crops.local_crops_number
    print(
        f"  losses, first/last 10% of logged steps (log K = {np.log(cfg.dino.n_prototypes):.3f}; per-pair DINO "
        f"cross-entropy = dino_global x {n_terms // 2}, dino_local x {n_terms}/{n_terms - 2})"
    )
    for key in ("loss", "dino_global", "dino_local", "ibot", "koleo"):
        a, b = np.mean([m[key] for m in first]), np.mean([m[key] for m in last])
        print(f"    {key:12s} first {a:8.4f}  last {b:8.4f}")
    print("SYNTHETIC cohort, linear probes (logistic regression on train+val), test macro AUROC:")
    print(f"  {'data set':12s} {'n test':>6s}  " + "  ".join(f"{p:>28s}" for p in PROTOCOLS))
    print(f"  {'':12s} {'':6s}  " + "  ".join(f"{'random  pretrained    diff':>28s}" for _ in PROTOCOLS))
    for dataset in [*datasets, "MEAN"]:
        if dataset == "MEAN":
            n_test = ""
            pick = datasets
        else:
            n_test = int((pd.read_parquet(ws.manifest_path(dataset))["split"] == "test").sum())
            pick = [dataset]
        cells = []
        for protocol in PROTOCOLS:
            r = np.mean([auroc[(d, "random init", protocol)] for d in pick])
            p = np.mean([auroc[(d, "pretrained", protocol)] for d in pick])
            cells.append(f"{r:8.3f} {p:10.3f} {p - r:+8.3f}")
        print(f"  {dataset:12s} {n_test!s:>6s}  " + "  ".join(f"{c:>28s}" for c in cells))


def print_over_seeds(per_seed: dict[int, dict], datasets: list[str]) -> None:
    """Pretrained - random, per data set and for the mean over data sets: mean and SD over seeds."""
    print()
    print(f"over {len(per_seed)} seeds ({', '.join(map(str, per_seed))}): pretrained - random init, mean (SD)")
    print(f"  {'data set':12s}  " + "  ".join(f"{p:>22s}" for p in PROTOCOLS))
    for dataset in [*datasets, "MEAN"]:
        pick = datasets if dataset == "MEAN" else [dataset]
        cells = []
        for protocol in PROTOCOLS:
            diffs = [
                np.mean([run["auroc"][(d, "pretrained", protocol)] - run["auroc"][(d, "random init", protocol)]
                         for d in pick])
                for run in per_seed.values()
            ]  # fmt: skip
            wins = sum(d > 0 for d in diffs)
            cells.append(f"{np.mean(diffs):+7.3f} ({np.std(diffs, ddof=1):.3f}) {wins}/{len(diffs)} up")
        print(f"  {dataset:12s}  " + "  ".join(f"{c:>22s}" for c in cells))


def write_training_shards(ws: Workspace, shard_dir: Path, per_shard: int = 500) -> Path:
    """Training-split images of every data set as webdataset shards (key, png, json); reused when present."""
    if any(shard_dir.glob("*.tar")):
        return shard_dir
    shard_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for name in ws.datasets():
        df = pd.read_parquet(ws.manifest_path(name))
        df = df[df["split"] == "train"]
        rows += [(name, r.image_id, r.path) for r in df[["image_id", "path"]].itertuples()]
    for index in range(0, len(rows), per_shard):
        chunk = rows[index : index + per_shard]
        path = shard_dir / f"bench-{index // per_shard:06d}.tar"
        with wds.TarWriter(str(path)) as writer:
            for name, image_id, rel in chunk:
                pixels = read_grey(ws.images_dir(name) / rel)
                meta = json.dumps({"image_id": image_id, "dataset": name}).encode()
                writer.write({"__key__": sanitize_key(image_id), "png": encode_png(pixels), "json": meta})
        path.with_suffix(".json").write_text(json.dumps({"n": len(chunk)}))
    return shard_dir


def read_grey(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        if image.mode.startswith("I"):
            return np.asarray(image).astype(np.uint16)
        return np.asarray(image.convert("L"), dtype=np.uint8)


@torch.no_grad()
def embed(model, bconfig, image_dir: Path, manifest: pd.DataFrame, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(concatenated CLS of the last 4 blocks (N, 4D), mean patch token of the last block (N, D))."""
    prep = Preprocessing(image_size=bconfig.img_size, mean=bconfig.mean, std=bconfig.std)
    cls_rows, avgpool_rows = [], []
    for start in range(0, len(manifest), batch):
        rows = manifest.iloc[start : start + batch]
        x = torch.stack([prep(read_grey(image_dir / p)) for p in rows["path"]])
        cls, patch, _ = last_layer_tokens(model, x, n_layers=min(4, len(model.blocks)))
        cls_rows.append(cls.reshape(len(x), -1).numpy())
        avgpool_rows.append(patch[:, -1].mean(dim=1).numpy())
    return np.concatenate(cls_rows), np.concatenate(avgpool_rows)


def probe(features: np.ndarray, manifest: pd.DataFrame, card) -> dict:
    labels = card.labels_for_training(manifest)
    fit = manifest["split"].isin(["train", "val"]).to_numpy()
    test = (manifest["split"] == "test").to_numpy()
    scaler = StandardScaler().fit(features[fit])
    x_fit, x_test = scaler.transform(features[fit]), scaler.transform(features[test])
    per_output = {}
    for k, column in enumerate(card.label_columns):
        y_fit, y_test = labels[fit, k], labels[test, k]
        ok_fit, ok_test = ~np.isnan(y_fit), ~np.isnan(y_test)
        if len(np.unique(y_fit[ok_fit])) < 2 or len(np.unique(y_test[ok_test])) < 2:
            continue
        clf = LogisticRegression(C=0.1, max_iter=3000).fit(x_fit[ok_fit], y_fit[ok_fit])
        per_output[column] = roc_auc_score(y_test[ok_test], clf.predict_proba(x_test[ok_test])[:, 1])
    return {"macro": float(np.mean(list(per_output.values()))), "per_output": per_output}


def _classification_datasets(ws: Workspace) -> list[str]:
    """Data sets with a binary or multilabel task (the survival set's outcomes need follow-up, not AUROC)."""
    return [
        name
        for name in ws.datasets()
        if any(t.kind in ("binary", "multilabel") for t in load_card(ws.card_path(name)).tasks)
    ]


if __name__ == "__main__":
    main()
