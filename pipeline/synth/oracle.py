"""The oracle ceiling of a synthetic data set: what a perfect reader of the planted image features reaches.

The cohort knows, per image, which findings were painted (`shown:<finding>`) and the patient's latent features
(`z_heart`, `z_frailty`) in `manifests/synth/<dataset>.truth.parquet`. The oracle fits, on those features only,
a logistic regression per classification output and a Cox model per survival endpoint (its horizon output is
1 - S(horizon | features)), on train for the val predictions and on train + val for the test predictions, like
the probe's sweep and refit. It writes an ordinary run folder through `pipeline.runs` (backbone `oracle`, head
`planted`, a `RunRecord` whose head_config says `oracle: true`) scored by the same `evaluate_run`, so the report
reads it like any other row and labels it "planted features (oracle)". Real data sets have no truth file, so
they never get one.

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
from pipeline.probe.data import ProbeData, load_probe_data
from pipeline.probe.protocol import ProbeConfig
from pipeline.runs import RECORD_FILE, RESULTS_FILE, RunFolder, RunRecord, finish_run, is_complete
from pipeline.synth.cohort import read_params, truth_path
from pipeline.synth.specs import ORACLE_BACKBONE, ORACLE_HEAD
from pipeline.workspace import Workspace

log = logging.getLogger(__name__)

LATENTS = ("z_heart", "z_frailty")
ORACLE_MODEL = "logistic regression per output (C=1, standardised); Cox (penalizer 0.01) per survival endpoint"
ORACLE_VERSION = 1


def oracle_datasets(workspace: Workspace) -> list[str]:
    """Data sets of the workspace made by `chex synth` (a truth file and generation parameters)."""
    return [d for d in workspace.datasets() if truth_path(workspace, d).is_file() and read_params(workspace, d)]


def write_oracle_runs(
    workspace: Workspace, datasets: list[str] | None = None, n_resamples: int = 1000, seed: int = 0
) -> list[Path]:
    """Write (or keep, when already current) the oracle run folder of each synthetic data set; returns them."""
    names = datasets if datasets is not None else oracle_datasets(workspace)
    names = [d for d in names if _task(workspace, d).planted_oracle]  # others give their reference rows themselves
    return [write_oracle_run(workspace, d, n_resamples=n_resamples, seed=seed) for d in names]


def _task(workspace: Workspace, dataset: str):
    from pipeline.cards import read_card
    from pipeline.tasks import task_for_card

    return task_for_card(read_card(workspace, dataset))


def write_oracle_run(workspace: Workspace, dataset: str, n_resamples: int = 1000, seed: int = 0) -> Path:
    """The oracle run of one synthetic data set: results/<dataset>/oracle/planted/."""
    path = truth_path(workspace, dataset)
    params = read_params(workspace, dataset)
    if not path.is_file() or not params:
        raise ConfigError(
            f"{dataset}: no planted-feature file {path}; the oracle exists only for data sets made by `chex synth`"
        )
    if not _task(workspace, dataset).planted_oracle:
        raise ConfigError(f"{dataset}: its task ({_task(workspace, dataset).name}) has no planted-feature oracle run")
    folder = RunFolder.of(workspace, dataset, ORACLE_BACKBONE, ORACLE_HEAD, 1.0)
    data = load_probe_data(workspace, dataset, seed=seed)
    truth = pd.read_parquet(path)
    key = _key(params, data, n_resamples, seed)
    if is_complete(folder.root, key):
        return folder.root
    features = planted_features(truth, data)
    fit_test = np.concatenate([data.train, data.refit_val])
    val_probs = np.full((len(data.val), len(data.outputs)), 0.5)
    test_probs = np.full((len(data.test), len(data.outputs)), 0.5)
    skipped = data.task.skipped(data.labels[data.train], data.outputs)
    survival_outputs = _survival_outputs(data)
    for k, output in enumerate(data.outputs):
        if output in survival_outputs:
            endpoint, horizon = survival_outputs[output]
            val_probs[:, k] = _cox_risk(data, features, endpoint, horizon, data.train, data.val)
            test_probs[:, k] = _cox_risk(data, features, endpoint, horizon, fit_test, data.test)
        elif output not in skipped:
            val_probs[:, k] = _logistic(features, data.labels[:, k], data.train, data.val, seed)
            test_probs[:, k] = _logistic(features, data.labels[:, k], fit_test, data.test, seed)
    # The task's tables, as the probe writes them: a finding without train positives is predicted by its training
    # prior (and evaluated so).
    identity = dict(dataset=dataset, backbone=ORACLE_BACKBONE, head=ORACLE_HEAD, label_fraction=1.0)
    tables = data.task.pass_tables(data, test_probs, val_probs, identity, seed, 0.0, skipped)
    files = [*(name for name, frame in tables.items() if frame is not None), RESULTS_FILE]
    record = RunRecord(
        key=key, **identity, seed=seed, n_resamples=n_resamples, chosen_lr=0.0, val_macro_auroc=float("nan"),
        test_macro_auroc=float("nan"), selected_by="none (no sweep: fitted on planted features)", epochs=0,
        batch_size=0, train_views=0,
        head_config={"name": ORACLE_HEAD, "oracle": True, "features": list(features.columns), "model": ORACLE_MODEL},
        config=ProbeConfig(seed=seed, n_resamples=n_resamples).identity(), outputs=list(data.outputs),
        skipped_train=skipped, skipped_test=data.task.skipped(data.labels[data.test], data.outputs),
        threshold_transfer="quantile", synthetic=True, store_path=str(path),  # the features: the truth file
        store_attrs={"synth": params.get("params", {})},
        data={"n_train": len(data.train), "n_val": len(data.val), "n_refit": len(fit_test),
              "n_test": len(data.test), **data.notes},
        files=[*files, RECORD_FILE], task=data.task.name,
    )  # fmt: skip
    finish_run(folder.root, record, tables)
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
        for endpoint in task.endpoints:
            out[task.endpoint_output(endpoint)] = (endpoint, task.horizon_years or 12.0)
    return out


def _cox_risk(data, features, endpoint, horizon: float, fit: np.ndarray, score: np.ndarray) -> np.ndarray:
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
