"""Fabricate a workspace of probe run folders, written through `pipeline.runs` (the run-folder contract).

Several backbones x heads x data sets, with known model quality (the score separates classes by `QUALITY`),
PLCO survival, label-fraction runs, GLoRI attention maps, manifests, images and synthetic cards, and a few
runs left out on purpose so the report has something to name as missing.
"""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.cards import packaged_card
from pipeline.manifest import within_horizon
from pipeline.runs import (
    RunFolder,
    RunRecord,
    StatsConfig,
    finish_run,
    write_attention,
)
from pipeline.workspace import Workspace

BACKBONES = ("vits-a", "vits-b")
HEADS = ("linear", "glori", "mlp")
QUALITY = {
    ("vits-a", "linear"): 1.2,
    ("vits-a", "glori"): 2.2,
    ("vits-a", "mlp"): 1.6,
    ("vits-b", "linear"): 0.5,
    ("vits-b", "glori"): 0.9,
    ("vits-b", "mlp"): 0.7,
}
FRACTIONS = (0.01, 0.1)
# Left out on purpose: the report must name them.
SKIPPED = {("jsrt", "vits-b", "glori", 1.0), ("shenzhen", "vits-b", "mlp", 0.01)}
EXTRA_MANIFESTS = ("montgomery",)  # a data set with a manifest but no runs at all
ATTENTION_GRID = 4
SHA = {"vits-a": "a" * 64, "vits-b": "b" * 64}


def fabricate_workspace(root: Path, n_resamples: int = 30, synthetic: bool = True) -> Workspace:
    ws = Workspace(Path(root))
    cxr = packaged_card("cxrlt24")
    prevalence = np.geomspace(0.35, 0.03, len(cxr.label_columns))
    _classification(ws, "cxrlt24", list(cxr.label_columns), prevalence, n_patients=70, n_resamples=n_resamples)
    _classification(ws, "shenzhen", ["Tuberculosis"], np.array([0.4]), 80, n_resamples, fractions=FRACTIONS)
    _classification(ws, "jsrt", ["Nodule"], np.array([0.5]), 40, n_resamples)
    _survival(ws, "plco", n_subjects=160, n_resamples=n_resamples)
    for name in ("cxrlt24", "shenzhen", "jsrt", "plco", *EXTRA_MANIFESTS):
        packaged_card(name).with_synthetic(synthetic).save(ws.card_path(name))
    _manifest(ws, "montgomery", ["Tuberculosis"], np.array([0.3]), 10)
    _attention(ws, "cxrlt24", "vits-a", list(cxr.label_columns))
    return ws


def run_dir(ws: Workspace, dataset: str, backbone: str, head: str, fraction: float = 1.0) -> Path:
    return RunFolder.of(ws, dataset, backbone, head, fraction).root


def _rng(*key: object) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32("/".join(map(str, key)).encode()))


def _manifest(
    ws: Workspace, dataset: str, outputs: list[str], prevalence: np.ndarray, n_patients: int, images_per: int = 2
) -> pd.DataFrame:
    """Test-split manifest with patient-level labels; writes the PNG images too."""
    rng = _rng("manifest", dataset)
    labels = (rng.random((n_patients, len(outputs))) < prevalence).astype(float)
    labels[0, :] = 1.0  # every output has a positive and a negative
    labels[1, :] = 0.0
    rows = []
    for p in range(n_patients):
        for k in range(images_per):
            image_id = f"{dataset}_{p:04d}_{k}"
            rows.append(
                {
                    "image_id": image_id,
                    "path": f"{image_id}.png",
                    "patient_id": f"{dataset}_{p:04d}",
                    "split": "test",
                    **dict(zip(outputs, labels[p], strict=True)),
                }
            )
    manifest = pd.DataFrame(rows)
    ws.manifests_dir.mkdir(parents=True, exist_ok=True)
    manifest.to_parquet(ws.manifest_path(dataset), index=False)
    images = ws.images_dir(dataset)
    images.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[0:48, 0:48]
    for row in rows[:12]:
        pixels = (
            60
            + 120 * np.exp(-((xx - 16) ** 2 + (yy - 24) ** 2) / 120)
            + 120 * np.exp(-((xx - 32) ** 2 + (yy - 24) ** 2) / 120)
        )
        Image.fromarray(pixels.astype(np.uint8)).save(images / row["path"])
    return manifest


def _scores(labels: np.ndarray, quality: float, rng: np.random.Generator) -> np.ndarray:
    logits = quality * (2 * labels - 1) + rng.normal(size=labels.shape)
    return 1.0 / (1.0 + np.exp(-logits))


def _classification(
    ws: Workspace,
    dataset: str,
    outputs: list[str],
    prevalence: np.ndarray,
    n_patients: int,
    n_resamples: int,
    fractions: tuple[float, ...] = (),
) -> None:
    manifest = _manifest(ws, dataset, outputs, prevalence, n_patients)
    for backbone in BACKBONES:
        for head in HEADS:
            for fraction in (1.0, *fractions):
                if (dataset, backbone, head, fraction) in SKIPPED:
                    continue
                quality = QUALITY[(backbone, head)] * (0.4 + 0.6 * fraction)
                rng = _rng(dataset, backbone, head, fraction)
                long = manifest.melt(
                    id_vars=["image_id", "patient_id", "split"],
                    value_vars=outputs,
                    var_name="output",
                    value_name="label",
                )
                long["score"] = _scores(long["label"].to_numpy(), quality, rng)
                predictions = long.assign(
                    dataset=dataset, backbone=backbone, head=head, label_fraction=fraction, seed=0, lr=1e-3
                )
                _write_run(ws, dataset, backbone, head, fraction, predictions, None, n_resamples)


def _survival(ws: Workspace, dataset: str, n_subjects: int, n_resamples: int) -> None:
    rng = _rng("survival", dataset)
    z = rng.normal(size=n_subjects)
    split = np.where(np.arange(n_subjects) < n_subjects // 4, "val", "test")
    censor = rng.uniform(8, 15, n_subjects)
    endpoints = {}
    for endpoint, base in (("cvd", 0.02), ("all_cause", 0.06)):
        event_time = rng.exponential(1.0 / (base * np.exp(1.2 * z)))
        endpoints[endpoint] = (np.minimum(event_time, censor), (event_time <= censor).astype(float))
    card = packaged_card(dataset)
    columns = {"cvd": "death_cvd_12y", "all_cause": "death_all_12y"}
    _manifest(ws, dataset, list(card.label_columns), np.array([0.2, 0.4]), 5, images_per=1)
    for backbone in BACKBONES:
        for head in HEADS:
            quality = QUALITY[(backbone, head)]
            r = _rng(dataset, backbone, head)
            risk = quality * z + r.normal(size=n_subjects)
            pred_rows, surv_rows = [], []
            for endpoint, (time, event) in endpoints.items():
                label = within_horizon(time, event, 12.0)
                for i in range(n_subjects):
                    patient = f"{dataset}_{i:04d}"
                    pred_rows.append(
                        {
                            "image_id": f"{patient}_0",
                            "patient_id": patient,
                            "split": split[i],
                            "output": columns[endpoint],
                            "label": label[i],
                            "score": 1 / (1 + np.exp(-risk[i])),
                        }
                    )
                    surv_rows.append(
                        {
                            "patient_id": patient,
                            "split": split[i],
                            "endpoint": endpoint,
                            "risk_score": risk[i],
                            "time": time[i],
                            "event": event[i],
                        }
                    )
            ident = {"dataset": dataset, "backbone": backbone, "head": head, "label_fraction": 1.0}
            predictions = pd.DataFrame(pred_rows).assign(**ident, seed=0, lr=1e-3)
            survival = pd.DataFrame(surv_rows).assign(**ident)
            _write_run(ws, dataset, backbone, head, 1.0, predictions, survival, n_resamples)


def fabricated_record(dataset: str, backbone: str, head: str, fraction: float, outputs: list[str], n_resamples: int,
                      root: Path) -> RunRecord:  # fmt: skip
    """The RunRecord a probe would write for this fabricated run (every field through the dataclass)."""
    glori = {"embed_dim": 768, "num_heads": 8, "ffn_dim": 2048, "dropout": 0.1, "train_queries": False}
    return RunRecord(
        key=f"fab-{dataset}-{backbone}-{head}-{fraction:g}", dataset=dataset, backbone=backbone, head=head,
        label_fraction=fraction, seed=0, n_resamples=n_resamples, chosen_lr=1e-3, val_macro_auroc=0.8,
        test_macro_auroc=float("nan"), selected_by="val macro AUROC", epochs=10, batch_size=256, train_views=1,
        head_config={"name": head, **(glori if head == "glori" else {})}, config={"seed": 0}, outputs=outputs,
        skipped_train={}, skipped_test={}, threshold_transfer="quantile", store_path=str(root / backbone),
        checkpoint=f"checkpoints/{backbone}/model.pt", checkpoint_sha256=SHA[backbone], synthetic=False,
        versions={"chex": "0.1.0"}, files=["predictions.parquet", "results.parquet", "sweep.parquet", "run.json"],
    )  # fmt: skip


def _write_run(ws, dataset, backbone, head, fraction, predictions, survival, n_resamples) -> Path:
    folder = run_dir(ws, dataset, backbone, head, fraction)
    outputs = list(pd.unique(predictions["output"].astype(str)))
    record = fabricated_record(dataset, backbone, head, fraction, outputs, n_resamples, ws.root / "features")
    sweep = pd.DataFrame({"lr": [1e-4, 1e-3], "val_macro_auroc": [0.7, 0.8], "chosen": [False, True]})
    tables = {"predictions.parquet": predictions, "survival.parquet": survival, "sweep.parquet": sweep}
    finish_run(folder, record, tables, StatsConfig.for_run(record))
    return folder


def _attention(ws: Workspace, dataset: str, backbone: str, outputs: list[str]) -> None:
    """The probe's attention/attention.npz: image_id (N,), output (K,), attention (N, K, P), grid, score (N, K);
    output k's map peaks at grid cell (k % g, k // g % g)."""
    manifest = pd.read_parquet(ws.manifest_path(dataset))
    ids = list(manifest["image_id"][:12])
    g = ATTENTION_GRID
    maps = np.full((len(ids), len(outputs), g, g), 0.01, dtype=np.float32)
    for k in range(len(outputs)):
        maps[:, k, k % g, (k // g) % g] = 1.0
    path = RunFolder.of(ws, dataset, backbone, "glori", 1.0).attention_path
    write_attention(
        path, ids, outputs, maps.reshape(len(ids), len(outputs), g * g), np.full((len(ids), len(outputs)), 0.5)
    )
