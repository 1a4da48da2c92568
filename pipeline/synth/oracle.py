"""The oracle ceiling of a synthetic data set: what a perfect reader of the planted image features reaches.

The cohort knows, per image, which findings were painted (`shown:<finding>`) and the patient's latent features
(`z_heart`, `z_frailty`) in `manifests/synth/<dataset>.truth.parquet`. The oracle fits, on those features only,
a logistic regression per classification output and a Cox model per survival endpoint (its horizon output is
1 - S(horizon | features)), on train for the val predictions and on train + val for the test predictions, like
the probe's sweep and refit. It writes an ordinary probe run folder (backbone `oracle`, head `planted`) scored by
the probe's own statistics (`evaluate_run`), so the report reads it like any other row and labels it
"planted features (oracle)". Real data sets have no truth file, so they never get one.

In the null cohort the pixels (and so the planted features) are unrelated to the labels: the oracle is at chance.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from lifelines import CoxPHFitter
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from pipeline.errors import ConfigError
from pipeline.probe.data import ProbeData, load_probe_data, outputs_without_both_classes
from pipeline.probe.outputs import RunFolder, write_json, write_parquet
from pipeline.probe.protocol import ProbeConfig
from pipeline.probe.results import endpoint_output, evaluate_run, prediction_frame, survival_frame
from pipeline.synth.cohort import read_params, truth_path
from pipeline.synth.specs import ORACLE_BACKBONE, ORACLE_HEAD
from pipeline.workspace import Workspace

log = logging.getLogger(__name__)

LATENTS = ("z_heart", "z_frailty")
ORACLE_VERSION = 1


def oracle_datasets(workspace: Workspace) -> list[str]:
    """Data sets of the workspace made by `chex synth` (a truth file and generation parameters)."""
    return [d for d in workspace.datasets() if truth_path(workspace, d).is_file() and read_params(workspace, d)]


def write_oracle_runs(
    workspace: Workspace, datasets: list[str] | None = None, n_resamples: int = 1000, seed: int = 0
) -> list[Path]:
    """Write (or keep, when already current) the oracle run folder of each synthetic data set; returns them."""
    names = datasets if datasets is not None else oracle_datasets(workspace)
    return [write_oracle_run(workspace, d, n_resamples=n_resamples, seed=seed) for d in names]


def write_oracle_run(workspace: Workspace, dataset: str, n_resamples: int = 1000, seed: int = 0) -> Path:
    """The oracle run of one synthetic data set: results/<dataset>/oracle/planted/."""
    path = truth_path(workspace, dataset)
    params = read_params(workspace, dataset)
    if not path.is_file() or not params:
        raise ConfigError(
            f"{dataset}: no planted-feature file {path}; the oracle exists only for data sets made by `chex synth`"
        )
    folder = RunFolder.of(workspace, dataset, ORACLE_BACKBONE, ORACLE_HEAD, 1.0)
    data = load_probe_data(workspace, dataset, seed=seed)
    truth = pd.read_parquet(path)
    key = _key(params, data, n_resamples, seed)
    if folder.is_complete(key):
        return folder.root
    features = planted_features(truth, data)
    config = ProbeConfig(seed=seed, n_resamples=n_resamples)
    fit_val, fit_test = data.train, np.concatenate([data.train, data.refit_val])
    val_probs, test_probs = (
        np.full((len(data.val), len(data.outputs)), 0.5),
        np.full((len(data.test), len(data.outputs)), 0.5),
    )
    skipped = outputs_without_both_classes(data.labels[data.train], data.outputs)
    survival_outputs = _survival_outputs(data)
    for k, output in enumerate(data.outputs):
        if output in survival_outputs:
            endpoint, horizon = survival_outputs[output]
            val_probs[:, k] = _cox_risk(data, features, truth, endpoint, horizon, data.train, data.val)
            test_probs[:, k] = _cox_risk(data, features, truth, endpoint, horizon, fit_test, data.test)
        elif output not in skipped:
            val_probs[:, k] = _logistic(features, data.labels[:, k], fit_val, data.val, seed)
            test_probs[:, k] = _logistic(features, data.labels[:, k], fit_test, data.test, seed)
    identity = dict(dataset=dataset, backbone=ORACLE_BACKBONE, head=ORACLE_HEAD, label_fraction=1.0)
    predictions = prediction_frame(data, data.test, test_probs, identity, seed, 0.0)
    val_predictions = prediction_frame(data, data.val, val_probs, identity, seed, 0.0)
    survival = survival_frame(data, predictions, identity)
    results = evaluate_run(predictions, val_predictions, survival, skipped, config)
    files = ["predictions.parquet", "val_predictions.parquet", "results.parquet"]
    write_parquet(predictions, folder / "predictions.parquet")
    write_parquet(val_predictions, folder / "val_predictions.parquet")
    write_parquet(results, folder / "results.parquet")
    if survival is not None:
        write_parquet(survival, folder / "survival.parquet")
        files.append("survival.parquet")
    macro = results[(results["output"] == "macro") & (results["metric"] == "auroc")]["estimate"]
    run = {
        "key": key, **identity, "seed": seed, "oracle": True, "synthetic": True,
        "features": list(features.columns), "synth": params.get("params", {}),
        "model": "logistic regression per output (C=1, standardised); Cox (penalizer 0.01) per survival endpoint",
        "test_macro_auroc": float(macro.iloc[0]) if len(macro) else float("nan"),
        "config": config.identity(), "files": [*files, "run.json"],
        "data": {"n_train": len(data.train), "n_val": len(data.val), "n_test": len(data.test),
                 "outputs": data.outputs, **data.notes},
    }  # fmt: skip
    write_json(run, folder / "run.json")
    log.info("%s: oracle (planted features) -> %s", dataset, folder.root)
    return folder.root


def planted_features(truth: pd.DataFrame, data: ProbeData) -> pd.DataFrame:
    """The planted features of `data`'s manifest rows, in manifest order: painted findings and latents."""
    indexed = truth.set_index("image_id")
    ids = data.manifest["image_id"].astype(str)
    missing = ids[~ids.isin(indexed.index)]
    if len(missing):
        raise ConfigError(
            f"{data.dataset}: {len(missing)} manifest images (e.g. {missing.iloc[0]!r}) have no planted features; "
            "regenerate the cohort with `chex synth`"
        )
    columns = [c for c in truth.columns if c.startswith("shown:")] + [c for c in LATENTS if c in truth.columns]
    return indexed.loc[ids, columns].astype(np.float64).reset_index(drop=True)


def _logistic(features: pd.DataFrame, labels: np.ndarray, fit: np.ndarray, score: np.ndarray, seed: int):
    known = fit[np.isin(labels[fit], (0.0, 1.0))]
    scaler = StandardScaler().fit(features.to_numpy()[known])
    model = LogisticRegression(C=1.0, max_iter=2000, random_state=seed)
    model.fit(scaler.transform(features.to_numpy()[known]), labels[known])
    return model.predict_proba(scaler.transform(features.to_numpy()[score]))[:, 1]


def _survival_outputs(data: ProbeData) -> dict[str, tuple[object, float]]:
    """Horizon output -> (endpoint, horizon in years) for the card's survival tasks."""
    out = {}
    for task in data.card.survival_tasks:
        for i, endpoint in enumerate(task.endpoints):
            out[endpoint_output(task.columns, endpoint.event_column, i)] = (endpoint, task.horizon_years or 12.0)
    return out


def _cox_risk(data, features, truth, endpoint, horizon: float, fit: np.ndarray, score: np.ndarray) -> np.ndarray:
    """1 - S(horizon | latents) of a Cox model of the endpoint fitted on one row per patient of `fit`."""
    latents = [c for c in LATENTS if c in features.columns]
    frame = features[latents].copy()
    frame["time"] = data.manifest[endpoint.time_column].to_numpy(dtype=np.float64)
    frame["event"] = data.manifest[endpoint.event_column].to_numpy(dtype=np.float64)
    frame["patient"] = data.manifest["patient_id"].astype(str).to_numpy()
    train = frame.iloc[fit].drop_duplicates("patient").drop(columns="patient")
    model = CoxPHFitter(penalizer=0.01).fit(train, "time", "event")
    surv = model.predict_survival_function(frame.iloc[score][latents], times=[horizon])
    return 1.0 - surv.to_numpy()[0]


def _key(params: dict, data: ProbeData, n_resamples: int, seed: int) -> str:
    manifest_hash = int(pd.util.hash_pandas_object(data.manifest, index=False).sum()) & (2**63 - 1)
    payload = {"synth": params.get("params"), "manifest": manifest_hash, "n_resamples": n_resamples, "seed": seed,
               "version": ORACLE_VERSION}  # fmt: skip
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
