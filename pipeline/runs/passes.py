"""Results of a run folder that holds several passes of the protocol: `chex probe --seeds N` (one pass per seed) or
`--cv K --cv-repeats R` (one pass per fold; each repeat's folds together predict every image once).

Each seed (each CV repeat, its folds pooled) is evaluated alone, exactly as a one-seed run, and the rows are then
combined: `estimate` is the mean over seeds, `ci_low`/`ci_high` the mean of the seeds' own test-set intervals (the
test-sampling uncertainty of one seed's model; the seeds share the test set, so their mean's interval is about as
wide), `seed_sd` the SD over seeds (ddof 1: training randomness, i.e. splits carved by seed, inits, shuffling),
`n_seeds` how many seeds had the row defined, and the note says when the seed SD exceeds the interval's half-width.

`combine="ensemble"` (`chex stats --combine ensemble`, seeds only) evaluates instead the seeds' ensemble: each
image's score averaged over the seeds (risk scores too), scored once with its own test-set interval, one model
made of N probes and not the paper's single probe (say so when reporting it); the note gives the single seeds'
SD, `seed_sd` is left empty (it is not the ensemble's), `n_seeds` counts the seeds. On the small demo's
Shenzhen GLoRI (seeds 0-24) a single seed's test AUROC had a seed SD of 0.048, a 5-seed mean 0.023, the 5-seed
ensemble 0.0045 (benchmarks/bench_protocol_seeds.py --blocks).

With CV, AUROC and AUPRC rows take the corrected repeated-CV t interval instead (Nadeau & Bengio 2003, as
Bouckaert & Frank 2004 use it): over the J = K·R per-fold values, mean ± t(J-1) · sqrt((1/J + n_test/n_train) · S²),
which widens the naive fold-to-fold interval for the overlap of the folds' training sets; the estimate is then the
mean of the per-fold values (a macro per fold averages the outputs defined in that fold).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats
from sklearn.metrics import average_precision_score, roc_auc_score

from pipeline.errors import ConfigError

SEED_COLUMN = "seed"
FOLD_COLUMN = "fold"
COMBINE_RULES = ("mean", "ensemble")
SCORE_COLUMNS = ("score", "risk_score")  # averaged over the seeds by the ensemble
FOLD_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "auroc": roc_auc_score,
    "auprc": average_precision_score,
}


def n_passes(predictions: pd.DataFrame | None, survival: pd.DataFrame | None = None) -> int:
    """Distinct seeds in the run's tables (1 for a one-seed run or tables without a seed column)."""
    for frame in (predictions, survival):
        if frame is not None and SEED_COLUMN in frame.columns and len(frame):
            return int(frame[SEED_COLUMN].nunique())
    return 1


def evaluate_passes(
    predictions: pd.DataFrame | None,
    val_predictions: pd.DataFrame | None,
    survival: pd.DataFrame | None,
    evaluate_one: Callable[[pd.DataFrame | None, pd.DataFrame | None, pd.DataFrame | None], pd.DataFrame],
    combine: str = "mean",
) -> pd.DataFrame:
    """results rows of a multi-pass run: `evaluate_one(predictions, val, survival)` per seed, then combined by
    `combine` (COMBINE_RULES; see the module docstring)."""
    if combine not in COMBINE_RULES:
        raise ConfigError(f"--combine {combine!r}: must be one of {', '.join(COMBINE_RULES)}")
    if combine == "ensemble" and predictions is not None and FOLD_COLUMN in predictions.columns:
        raise ConfigError(
            "--combine ensemble averages each image's score over seeds; a --cv run predicts each image in one fold "
            "per repeat, so use --combine mean (the corrected CV interval) for it"
        )
    seeds = sorted(set(_column(predictions, SEED_COLUMN)) | set(_column(survival, SEED_COLUMN)), key=lambda s: int(s))
    per_seed = []
    for seed in seeds:
        val = _seed_rows(val_predictions, seed)
        if val is not None:  # CV: an image may be in the val split of several folds; its first fold's row stays
            val = val.drop_duplicates(["image_id", "output"])
        one = evaluate_one(_seed_rows(predictions, seed), val, _seed_rows(survival, seed))
        per_seed.append(one.assign(_seed=seed))
    results = combine_seeds(pd.concat(per_seed, ignore_index=True))
    if predictions is not None and FOLD_COLUMN in predictions.columns:
        results = with_cv_intervals(results, predictions)
    if combine == "ensemble":
        results = ensemble_results(evaluate_one(*(ensembled(f) for f in (predictions, val_predictions, survival))),
                                   results, len(seeds))  # fmt: skip
    return results


def ensembled(frame: pd.DataFrame | None) -> pd.DataFrame | None:
    """One row per image (and output or endpoint): its SCORE_COLUMNS averaged over the seeds, the seed and lr
    columns dropped (the seeds' lrs may differ), every other column as it was."""
    if frame is None or SEED_COLUMN not in frame.columns:
        return frame
    scores = [c for c in SCORE_COLUMNS if c in frame.columns]
    keys = [c for c in frame.columns if c not in (SEED_COLUMN, "lr", *scores)]
    out = frame.groupby(keys, sort=False, observed=True, dropna=False)[scores].mean().reset_index()
    return out[[c for c in frame.columns if c in out.columns]]


def ensemble_results(ensemble: pd.DataFrame, per_seed: pd.DataFrame, n_seeds: int) -> pd.DataFrame:
    """The ensemble's rows with a note saying what was done and the single seeds' SD. `seed_sd` is NaN: the
    single seeds' SD is not the ensemble's (a report would print it beside the ensemble's CI as if it were)."""
    spread = per_seed.set_index(["output", "metric"])[["seed_sd", "n_seeds"]]
    out = ensemble.join(spread, on=["output", "metric"])
    out["n_seeds"] = out["n_seeds"].fillna(0).astype("int64")
    summary = [
        f"ensemble of {n_seeds} seeds (each image's score averaged over them); single-seed SD {_fmt(sd)}"
        for sd in out["seed_sd"].to_numpy(dtype=np.float64)
    ]
    out["seed_sd"] = np.nan
    notes = out["note"].fillna("").astype(str) if "note" in out.columns else pd.Series([""] * len(out))
    out["note"] = [f"{note}; {extra}" if note else extra for note, extra in zip(notes, summary, strict=True)]
    return out


def combine_seeds(rows: pd.DataFrame) -> pd.DataFrame:
    """One row per (output, metric): mean estimate and interval bounds over the seeds where it is defined, the
    seed SD, and a note (rows of `rows` carry their seed in `_seed`)."""
    keys = ["output", "metric"]
    out = []
    for _, group in rows.groupby(keys, sort=False):
        first = group.iloc[0].to_dict()
        defined = group[group["defined"].astype(bool) & group["estimate"].notna()]
        n_seeds = len(group)
        if len(defined):
            estimate = float(defined["estimate"].mean())
            low, high = float(defined["ci_low"].mean()), float(defined["ci_high"].mean())
            sd = float(defined["estimate"].std(ddof=1)) if len(defined) > 1 else float("nan")
        else:
            estimate = low = high = sd = float("nan")
        note = str(first.get("note") or "")
        summary = f"mean over {len(defined)} of {n_seeds} seeds; seed SD {_fmt(sd)}"
        half = (high - low) / 2 if np.isfinite(low) and np.isfinite(high) else float("nan")
        if np.isfinite(sd) and np.isfinite(half) and sd > half:
            summary += f", above the CI half-width {half:.4f}: the seed matters more than the test sample"
        first.update(
            estimate=estimate,
            ci_low=low,
            ci_high=high,
            defined=bool(len(defined)),
            seed_sd=sd,
            n_seeds=len(defined),
            note=f"{note}; {summary}" if note else summary,
        )
        out.append(first)
    frame = pd.DataFrame(out).drop(columns="_seed")
    frame["n_seeds"] = frame["n_seeds"].astype("int64")
    return frame


def with_cv_intervals(results: pd.DataFrame, predictions: pd.DataFrame) -> pd.DataFrame:
    """AUROC and AUPRC rows (per output and macro) with the corrected repeated-CV t interval (module docstring)."""
    folds = fold_values(predictions, [o for o in results["output"].unique() if o != "macro"])
    results = results.copy()
    n_total = predictions["image_id"].nunique()
    for (output, metric), values in folds.groupby(["output", "metric"]):
        mask = (results["output"] == output) & (results["metric"] == metric)
        if not mask.any() or not bool(results.loc[mask, "defined"].iloc[0]):
            continue
        v = values["value"].to_numpy(dtype=np.float64)
        v = v[np.isfinite(v)]
        if len(v) < 2:
            continue
        n_test = float(values["n_test"].mean())
        ratio = n_test / max(1.0, n_total - n_test)
        mean, half = corrected_t_interval(v, ratio)
        results.loc[mask, ["estimate", "ci_low", "ci_high"]] = [mean, mean - half, mean + half]
        results.loc[mask, "note"] = results.loc[mask, "note"].astype(str) + (
            f"; CV: mean of {len(v)} per-fold values, corrected repeated-CV t interval (Nadeau-Bengio, "
            f"n_test/n_train {ratio:.2f})"
        )
    return results


def corrected_t_interval(values: np.ndarray, test_train_ratio: float, confidence: float = 0.95) -> tuple[float, float]:
    """(mean, half-width) of Nadeau & Bengio's corrected resampled t interval over J per-fold values."""
    j = len(values)
    variance = (1.0 / j + test_train_ratio) * float(np.var(values, ddof=1))
    return float(np.mean(values)), float(scipy_stats.t.ppf(0.5 + confidence / 2, j - 1) * np.sqrt(variance))


def fold_values(predictions: pd.DataFrame, outputs: list[str]) -> pd.DataFrame:
    """output, metric, seed, fold, value, n_test: each fold's AUROC/AUPRC per output (NaN without both classes)
    and the fold's macro over the outputs defined in it."""
    rows = []
    test = predictions[predictions["split"].astype(str) == "test"] if "split" in predictions else predictions
    for (seed, fold), part in test.groupby([SEED_COLUMN, FOLD_COLUMN], sort=True):
        n_test = part["image_id"].nunique()
        per_metric: dict[str, list[float]] = {m: [] for m in FOLD_METRICS}
        for output in outputs:
            rows_o = part[part["output"].astype(str) == output]
            y = rows_o["label"].to_numpy(dtype=np.float64)
            keep = (y == 0) | (y == 1)
            y, score = y[keep], rows_o["score"].to_numpy(dtype=np.float64)[keep]
            both = len(np.unique(y)) == 2
            for metric, fn in FOLD_METRICS.items():
                value = float(fn(y, score)) if both else float("nan")
                per_metric[metric].append(value)
                rows.append(dict(output=output, metric=metric, seed=seed, fold=fold, value=value, n_test=n_test))
        for metric, values in per_metric.items():
            finite = [v for v in values if np.isfinite(v)]
            macro = float(np.mean(finite)) if finite else float("nan")
            rows.append(dict(output="macro", metric=metric, seed=seed, fold=fold, value=macro, n_test=n_test))
    return pd.DataFrame(rows)


def _column(frame: pd.DataFrame | None, column: str) -> list:
    if frame is None or column not in frame.columns:
        return []
    return list(pd.unique(frame[column]))


def _seed_rows(frame: pd.DataFrame | None, seed) -> pd.DataFrame | None:
    if frame is None:
        return None
    if SEED_COLUMN not in frame.columns:
        return frame
    rows = frame[frame[SEED_COLUMN] == seed]
    return rows.drop(columns=[c for c in (FOLD_COLUMN,) if c in rows.columns]).reset_index(drop=True)


def _fmt(value: float) -> str:
    return "n/a" if not np.isfinite(value) else f"{value:.4f}"
