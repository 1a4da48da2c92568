"""From a probe's scores to the run folder's tables: predictions, per-subject survival risk, attention maps
(the statistics are `pipeline.runs.evaluate_run`'s)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from pipeline.device import autocast
from pipeline.probe.data import Features, ProbeData
from pipeline.runs import write_attention
from pipeline.runs.evaluate import training_prior

log = logging.getLogger(__name__)


def prediction_frame(
    data: ProbeData, positions: np.ndarray, probs: np.ndarray, identity: dict[str, Any], seed: int, lr: float
) -> pd.DataFrame:
    """One row per (image, output): identity columns, seed, lr, image_id, patient_id, split, output, score, label."""
    rows = data.manifest.iloc[positions]
    n, k = len(positions), len(data.outputs)
    frame = pd.DataFrame(
        {
            **{name: np.repeat(value, n * k) for name, value in identity.items()},
            "seed": np.int64(seed),
            "lr": float(lr),
            "image_id": np.repeat(rows["image_id"].astype(str).to_numpy(), k),
            "patient_id": np.repeat(rows["patient_id"].astype(str).to_numpy(), k),
            "split": np.repeat(rows["split"].astype(str).to_numpy(), k),
            "output": np.tile(np.array(data.outputs, dtype=object), n),
            "score": probs.reshape(-1).astype(np.float64),
            "label": data.labels[positions].reshape(-1).astype(np.float64),
        }
    )
    return frame


def with_training_priors(probs: np.ndarray, outputs: list[str], skipped: dict[str, str]) -> np.ndarray:
    """(n, K) scores with each `skipped` output (name -> reason in train) scored by its training prior (0 without
    train positives, 1 without negatives): every finding gets a prediction, a constant for one never seen."""
    if not skipped:
        return probs
    probs = np.array(probs, dtype=np.float64, copy=True)
    for name, reason in skipped.items():
        probs[:, outputs.index(name)] = training_prior(reason)
    return probs


def survival_frame(data: ProbeData, predictions: pd.DataFrame, identity: dict[str, Any]) -> pd.DataFrame | None:
    """One row per (subject, endpoint): the mean score of the endpoint's horizon output over the subject's images,
    with the subject's follow-up time and event; None for data sets without survival tasks."""
    tasks = data.card.survival_tasks
    if not tasks:
        return None
    first = data.manifest.drop_duplicates("patient_id")
    manifest = first.set_index(first["patient_id"].astype(str))
    frames = []
    for task in tasks:
        for endpoint in task.endpoints:
            output = task.endpoint_output(endpoint)
            scores = predictions[predictions["output"] == output]
            risk = scores.groupby("patient_id", sort=False).agg(risk_score=("score", "mean"), split=("split", "first"))
            subjects = manifest.loc[risk.index]
            frames.append(
                pd.DataFrame(
                    {
                        **identity,
                        "patient_id": risk.index.to_numpy(),
                        "split": risk["split"].to_numpy(),
                        "endpoint": endpoint.name,
                        "output": output,
                        "risk_score": risk["risk_score"].to_numpy(),
                        "time": subjects[endpoint.time_column].to_numpy(dtype=np.float64),
                        "event": subjects[endpoint.event_column].to_numpy(dtype=np.float64),
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def attention_positions(labels: np.ndarray, n: int, positions: np.ndarray) -> np.ndarray:
    """`n` of the test `positions` (labels (N, K), NaN = masked) for attention maps: the outputs' positives in
    turns, rarest output first (one positive of each, then a second of each, ...: the findings the first n
    images most often miss, e.g. a malpositioned tube), each image once, then the first remaining images; in
    test order."""
    positives = np.nan_to_num(labels, nan=0.0) == 1
    queues = [list(np.flatnonzero(positives[:, k])) for k in np.argsort(positives.sum(axis=0), kind="stable")]
    chosen: dict[int, None] = {}
    while len(chosen) < n and any(queues):
        for queue in queues:
            while queue and queue[0] in chosen:
                queue.pop(0)
            if queue and len(chosen) < n:
                chosen[int(queue.pop(0))] = None
    rest = [i for i in range(len(positions)) if i not in chosen][: max(0, n - len(chosen))]
    return positions[np.sort(np.asarray([*chosen, *rest], dtype=np.int64))]


def attention_maps(
    head: torch.nn.Module, features: Features, data: ProbeData, n: int, device: torch.device, path: Path
) -> str:
    """Save the GLoRI attention maps of `n` test images (`attention_positions`); returns the file's path in the
    run folder."""
    positions = attention_positions(data.labels[data.test], n, data.test)
    ids, maps, scores = [], [], []
    head.eval().to(device)
    with torch.no_grad():
        for batch_pos, tokens in features.batches(positions, 32):
            with autocast(device):
                logits, weights = head(tokens["cls"].to(device), tokens["patch"].to(device), return_attention=True)
            ids += list(data.image_ids[batch_pos])
            maps.append(weights.float().cpu().numpy())
            scores.append(torch.sigmoid(logits.float()).cpu().numpy())
    grid = features.store.layout.grid  # the backbone's patch grid as the store records it (may be non-square)
    write_attention(path, ids, data.outputs, np.concatenate(maps), np.concatenate(scores), grid=grid)
    log.info("attention maps of %d test images -> %s", len(ids), path)
    return f"{path.parent.name}/{path.name}"
