"""Tiny workspaces for probe tests: a manifest + card + a real feature store (written through the store's writer)
whose tokens carry planted signal (each finding shifts a few CLS dimensions and a few dimensions of a few
patches), or none (`null=True`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.cards import card_from_dict
from pipeline.manifest import within_horizon, write_manifest
from pipeline.store import Item, StoreLayout, StoreWriter, store_attrs
from pipeline.workspace import Workspace

L, D, P = 2, 16, 16


def make_workspace(
    root,
    dataset: str = "toy",
    kind: str = "multilabel",
    n_patients: int = 80,
    images_per_patient: int = 2,
    null: bool = False,
    with_val: bool = True,
    seed: int = 0,
    strength: float = 2.5,
    views: int = 1,
    missing_from_store: int = 0,
    empty_output: bool = False,
) -> Workspace:
    ws = Workspace(root)
    rng = np.random.default_rng(seed)
    patients = np.repeat([f"p{i:03d}" for i in range(n_patients)], images_per_patient)
    image_k = np.tile(np.arange(images_per_patient), n_patients)
    ids = [f"{dataset}_{p}_{k}" for p, k in zip(patients, image_k, strict=True)]
    u = np.random.default_rng(seed + 1).random(n_patients)
    split_of = np.where(u < 0.6, "train", np.where(u < 0.8, "val" if with_val else "train", "test"))
    split = np.repeat(split_of, images_per_patient)
    n = len(ids)
    frame = pd.DataFrame({"image_id": ids, "path": [f"{i}.png" for i in ids], "patient_id": patients, "split": split})
    if kind == "multilabel":
        columns = ["Cardiomegaly", "Effusion", "Nodule"]
        y = (rng.random((n, 3)) < [0.3, 0.25, 0.2]).astype(float)
        if empty_output:
            y[split == "train", 2] = 0.0
        labels = y.copy()
        labels[rng.random((n, 3)) < 0.1] = np.nan  # missing labels
        for k, c in enumerate(columns):
            frame[c] = labels[:, k]
        tasks = [{"name": "findings", "kind": "multilabel", "columns": columns}]
    elif kind == "binary":
        y = (rng.random((n, 1)) < 0.4).astype(float)
        frame["Tuberculosis"] = y[:, 0]
        tasks = [{"name": "tb", "kind": "binary", "columns": ["Tuberculosis"]}]
    else:  # survival, PLCO-style
        hazard_feature = rng.normal(size=n_patients)
        t_cvd = rng.exponential(15 * np.exp(-hazard_feature))
        t_all = np.minimum(t_cvd, rng.exponential(20 * np.exp(-0.5 * hazard_feature)))
        censor = rng.uniform(5, 20, n_patients)
        rep = lambda a: np.repeat(a, images_per_patient)  # noqa: E731
        frame["time_cvd_years"] = rep(np.minimum(t_cvd, censor))
        frame["death_cvd"] = rep((t_cvd <= censor).astype(float))
        frame["time_all_years"] = rep(np.minimum(t_all, censor))
        frame["death_all"] = rep((t_all <= censor).astype(float))
        frame["death_cvd_12y"] = within_horizon(frame["time_cvd_years"], frame["death_cvd"], 12)
        frame["death_all_12y"] = within_horizon(frame["time_all_years"], frame["death_all"], 12)
        y = np.stack([rep(hazard_feature), rep(hazard_feature)], axis=1)  # the planted, continuous signal
        endpoints = [
            {"name": "cvd", "time_column": "time_cvd_years", "event_column": "death_cvd"},
            {"name": "all_cause", "time_column": "time_all_years", "event_column": "death_all"},
        ]
        columns = ["death_cvd_12y", "death_all_12y"]
        tasks = [
            {"name": "mortality", "kind": "survival", "horizon_years": 12, "columns": columns, "endpoints": endpoints}
        ]
    card = card_from_dict(
        {"name": dataset, "tasks": tasks, "synthetic": True, "probe": {"epochs": 3, "batch_size": 16}}
    )
    card.save(ws.card_path(dataset))
    write_manifest(frame, ws.manifest_path(dataset), card)
    signal = np.zeros_like(y) if null else np.nan_to_num(y)
    keep = slice(missing_from_store, None)
    _write_store(ws.features_dir("toy-vit"), ids[keep], signal[keep], strength, seed, views, split[keep])
    return ws


def _write_store(path, ids, signal, strength, seed, views, split):
    g = torch.Generator().manual_seed(seed)
    layout = StoreLayout(L, D, P, 0, chunk_rows=8, unit_rows=32)
    attrs = store_attrs("toy-vit", {"embed_dim": D}, "ck/model.pt", "c" * 64, [-2, -1], "float16", {"resize": 32})
    writer = StoreWriter.open(path, layout, attrs)
    n_views = [views if s == "train" else 1 for s in split]
    items = [Item(i, v, group="g") for i, k in zip(ids, n_views, strict=True) for v in range(k)]
    position = {i: k for k, i in enumerate(ids)}
    for unit in writer.plan(items):
        assert writer.claim(unit)
        rows = [position[i] for i in unit.image_ids]
        s = torch.as_tensor(signal[rows], dtype=torch.float32)  # (B, K)
        b, k = s.shape
        cls = torch.randn(b, L, D, generator=g)
        patch = torch.randn(b, L, P, D, generator=g)
        for j in range(k):
            cls[:, :, 2 * j] += strength * s[:, j, None]
            patch[:, :, j * 3 : j * 3 + 3, 8 + j] += 2 * strength * s[:, j, None, None]  # local finding
        writer.write_unit(unit, {"cls": cls, "patch": patch})


@pytest.fixture
def toy_workspace(tmp_path):
    return make_workspace(tmp_path / "ws")
