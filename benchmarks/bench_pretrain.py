"""Does `chex pretrain` learn? A short CPU pretraining run on the synthetic cohort, then a linear probe.

1. Generate the synthetic cohort (`pipeline.synth.generate_cohort`) in a workspace, unless it has manifests.
2. Write the training images of every data set into webdataset shards (the shard contract).
3. Pretrain with the `cpu_small` preset (or --config/--set); record steps/s and the loss curve.
4. Embed the probe data set's images with (a) the same backbone at random init (the student's initial weights:
   same config, same seed) and (b) the pretrained teacher: concatenated CLS of the last 4 blocks, the
   embed stage's plain evaluation view.
5. Linear probe (logistic regression per finding on train+val, standardised features) -> macro AUROC on test.

Prints the figures; asserts nothing about time (the machine may be shared: timings are indicative).
    python benchmarks/bench_pretrain.py [--workspace DIR] [--size small] [--dataset chexpert] [--set k=v ...]
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
from pipeline.pretrain.run_folder import read_metrics
from pipeline.shard_format import encode_png, sanitize_key
from pipeline.workspace import Workspace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--size", default="small", help="synthetic cohort size passed to generate_cohort")
    parser.add_argument("--dataset", default=None, help="probe data set (default: first multilabel one)")
    parser.add_argument("--config", default="cpu_small")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    root = args.workspace or Path(tempfile.mkdtemp(prefix="chex-bench-pretrain-"))
    ws = Workspace(root)
    if not ws.datasets():
        from pipeline.synth import generate_cohort

        t0 = time.perf_counter()
        generate_cohort(ws, size=args.size, progress=False)
        print(f"cohort generated in {time.perf_counter() - t0:.1f} s at {ws.root}")
    dataset = args.dataset or _multilabel_dataset(ws)
    shard_dir = write_training_shards(ws, ws.root / "shards" / "bench-pretrain")

    cfg = load_config(args.config, args.overrides)
    out = ws.checkpoints_dir(f"bench-{cfg.name}")
    resume = (out / "pretrain_config.yaml").exists()
    t0 = time.perf_counter()
    pretrain(cfg, sorted(shard_dir.glob("*.tar")), out, resume=resume, progress=True)
    wall = time.perf_counter() - t0
    metrics = read_metrics(out / "metrics.jsonl")

    card = load_card(ws.card_path(dataset))
    manifest = pd.read_parquet(ws.manifest_path(dataset))
    pretrained, bconfig, _ = load_backbone(out)
    torch.manual_seed(cfg.train.seed)  # the student's initial weights: same config, same seed, same draw
    random_init = build_backbone(
        preset(cfg.model.backbone, img_size=cfg.crops.global_crops_size, **cfg.model.backbone_overrides),
        drop_path_rate=cfg.model.drop_path_rate,
        dynamic_img_size=True,
    ).eval()
    results = {}
    for label, model in (("random init", random_init), ("pretrained", pretrained)):
        feats = embed(model, bconfig, ws.images_dir(dataset), manifest)
        results[label] = probe(feats, manifest, card)

    n_train_images = sum(json.loads(p.read_text())["n"] for p in shard_dir.glob("*.json"))
    first, last = metrics[: max(1, len(metrics) // 10)], metrics[-max(1, len(metrics) // 10) :]
    print()
    print(f"SYNTHETIC cohort, probe data set {dataset}: {len(manifest)} images, outputs {card.label_columns}")
    print(
        f"pretraining: {cfg.name}, {metrics[-1]['step']} steps x {cfg.train.batch_size_per_rank} images "
        f"({n_train_images} training images in shards), {torch.get_num_threads()} threads"
    )
    print(
        f"  wall {wall:.1f} s (incl. start-up/checkpoints), {np.mean([m['steps_per_s'] for m in metrics]):.2f} "
        f"steps/s, {np.mean([m['images_per_s'] for m in metrics]):.1f} images/s"
    )
    for key in ("loss", "dino_global", "dino_local", "ibot", "koleo"):
        a, b = np.mean([m[key] for m in first]), np.mean([m[key] for m in last])
        print(f"  {key:12s} first {a:8.4f}  last {b:8.4f}")
    print("linear probe (concatenated CLS of the last 4 blocks, logistic regression), test macro AUROC:")
    for label, res in results.items():
        per = ", ".join(f"{k} {v:.3f}" for k, v in res["per_output"].items())
        print(f"  {label:12s} {res['macro']:.4f}   ({per})")
    gain = results["pretrained"]["macro"] - results["random init"]["macro"]
    print(f"  difference   {gain:+.4f}")


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
def embed(model, bconfig, image_dir: Path, manifest: pd.DataFrame, batch: int = 64) -> np.ndarray:
    prep = Preprocessing(image_size=bconfig.img_size, mean=bconfig.mean, std=bconfig.std)
    out = []
    for start in range(0, len(manifest), batch):
        rows = manifest.iloc[start : start + batch]
        x = torch.stack([prep(read_grey(image_dir / p)) for p in rows["path"]])
        cls, _, _ = last_layer_tokens(model, x, n_layers=min(4, len(model.blocks)))
        out.append(cls.reshape(len(x), -1).numpy())
    return np.concatenate(out)


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


def _multilabel_dataset(ws: Workspace) -> str:
    for name in ws.datasets():
        card = load_card(ws.card_path(name))
        if any(t.kind == "multilabel" for t in card.tasks):
            return name
    return ws.datasets()[0]


if __name__ == "__main__":
    main()
