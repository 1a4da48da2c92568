"""One evaluation of a run folder, shared by the probe, `chex stats`, `chex compare` and the report.

`evaluate_run(folder)` reads the folder's predictions, val predictions, survival table and RunRecord and
applies the probe's rules: outputs without train positives (or negatives) stay out of the macro averages,
validation thresholds reach test as a positive rate, and the bootstrap uses the run's resamples and seed.
So the same folder gives the same numbers wherever it is evaluated. `compare_runs` tests two runs over the
outputs both runs average, so its macro difference is the one results.parquet gives.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import ConfigError, PredictionsError
from pipeline.runs.io import read_table
from pipeline.runs.layout import PREDICTIONS_FILE, SURVIVAL_FILE, VAL_PREDICTIONS_FILE
from pipeline.runs.passes import evaluate_passes, n_passes
from pipeline.runs.record import RunRecord, read_record
from pipeline.stats import compare_predictions, evaluate_predictions, evaluate_survival
from pipeline.stats.metrics import METRICS
from pipeline.stats.tables import RESULT_COLUMNS, RUN_COLUMNS


@dataclass(frozen=True)
class StatsConfig:
    """Bootstrap settings of a run's results (the `chex stats` options; a probe run's record sets the first two)."""

    n_resamples: int = 1000
    seed: int = 0
    ci_method: str = "percentile"
    by_image: bool = False  # resample images, not patients
    stratified: bool = False
    confidence: float = 0.95
    horizons: tuple[float, ...] = ()  # time-dependent AUROC horizons (years)

    @classmethod
    def for_run(cls, record: RunRecord | None, **given: object) -> StatsConfig:
        """The run's own settings (its resamples and seed), overridden by the `given` values that are not None."""
        base = cls(n_resamples=record.n_resamples, seed=record.seed) if record is not None else cls()
        return dataclasses.replace(base, **{k: v for k, v in given.items() if v is not None})


@dataclass(frozen=True)
class CompareConfig:
    """Settings of a paired permutation test between two runs (the `chex compare` options)."""

    n_permutations: int = 1000
    seed: int = 0
    by_image: bool = False  # swap per image, not per patient
    adjust: str = "holm"


def evaluate_run(folder: Path, config: StatsConfig | None = None, record: RunRecord | None = None) -> pd.DataFrame:
    """results.parquet rows of a run folder (see the module docstring); `record` overrides the folder's run.json
    (the probe passes the record it is about to write)."""
    folder = Path(folder)
    record = record if record is not None else read_record(folder)
    config = config or StatsConfig.for_run(record)
    predictions = read_table(folder / PREDICTIONS_FILE, text_as_categories=True)
    survival = read_table(folder / SURVIVAL_FILE)
    if predictions is None and survival is None:
        raise PredictionsError(f"no {PREDICTIONS_FILE} or {SURVIVAL_FILE} in {folder}; run `chex probe` first")
    val = read_table(folder / VAL_PREDICTIONS_FILE, text_as_categories=True)
    transfer = record.threshold_transfer if record is not None else ("quantile" if val is not None else "score")
    skipped = record.skipped_train if record is not None else {}
    if n_passes(predictions, survival) > 1:  # --seeds / --cv: each seed alone, then combined (pipeline/runs/passes.py)
        results = evaluate_passes(
            predictions, val, survival,
            lambda p, v, s: evaluate_tables(p, v, s, skipped, config, threshold_transfer=transfer),
        )  # fmt: skip
    else:
        results = evaluate_tables(predictions, val, survival, skipped, config, threshold_transfer=transfer)
    if record is not None:  # the record names the run even when the tables lack identity columns
        for column in RUN_COLUMNS:
            results[column] = getattr(record, column)
    return results


def evaluate_tables(
    predictions: pd.DataFrame | None,
    val_predictions: pd.DataFrame | None,
    survival: pd.DataFrame | None,
    skipped: dict[str, str],
    config: StatsConfig,
    threshold_transfer: str = "quantile",
) -> pd.DataFrame:
    """results rows from a run's tables: `skipped` outputs (name -> reason in train) become undefined rows and
    stay out of the macro; survival endpoints add their rows."""
    parts: list[pd.DataFrame] = []
    if predictions is not None and len(predictions):
        keep = _without_outputs(predictions, skipped)
        if len(keep):
            val = val_predictions if val_predictions is None else _without_outputs(val_predictions, skipped)
            parts.append(
                evaluate_predictions(
                    keep,
                    n_resamples=config.n_resamples,
                    seed=config.seed,
                    ci_method=config.ci_method,
                    cluster_column=None if config.by_image else "patient_id",
                    stratified=config.stratified,
                    val_predictions=val,
                    confidence=config.confidence,
                    threshold_transfer=threshold_transfer,
                )
            )
        run = predictions.iloc[0]
        rows = []
        for output, reason in skipped.items():
            labels = predictions.loc[predictions["output"].astype(str) == output, "label"]
            rows += [_undefined_row(run, output, m, labels, f"skipped: {reason} in train") for m in METRICS]
        if not len(keep):
            rows += [_undefined_row(run, "macro", m, predictions["label"], "no output to average") for m in METRICS]
        if rows:
            parts.append(pd.DataFrame(rows))
    if survival is not None and len(survival):
        parts.append(evaluate_survival(survival, horizons=list(config.horizons)))
    results = pd.concat(parts, ignore_index=True)[list(RESULT_COLUMNS)]
    results["defined"] = results["defined"].astype(bool)
    results[["n", "n_pos"]] = results[["n", "n_pos"]].astype("int64")
    return results


def run_predictions(path: Path) -> tuple[pd.DataFrame, RunRecord | None]:
    """A run's test predictions and record, from its folder or its predictions.parquet."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    file = path / PREDICTIONS_FILE if path.is_dir() else path
    frame = read_table(file, text_as_categories=True)
    if frame is None:
        raise ConfigError(f"no {PREDICTIONS_FILE} at {path}; run `chex probe` first")
    return frame, read_record(folder) if file.name == PREDICTIONS_FILE else None


def compare_runs(run_a: Path, run_b: Path, config: CompareConfig | None = None) -> pd.DataFrame:
    """Paired permutation test of two runs (folders or predictions files) over the outputs that both runs
    average, so each macro difference is the one their results.parquet tables give (A minus B)."""
    config = config or CompareConfig()
    pred_a, record_a = run_predictions(run_a)
    pred_b, record_b = run_predictions(run_b)
    for run, pred in ((run_a, pred_a), (run_b, pred_b)):
        if n_passes(pred) > 1:
            raise PredictionsError(
                f"{run} holds {n_passes(pred)} seeds or CV repeats (chex probe --seeds/--cv): the paired test needs "
                "one prediction per image; compare one-seed runs (its seed-to-seed SD is in results.parquet)"
            )
    skipped = sorted({*(record_a.skipped_train if record_a else {}), *(record_b.skipped_train if record_b else {})})
    if skipped:
        pred_a, pred_b = _without_outputs(pred_a, skipped), _without_outputs(pred_b, skipped)
        if not len(pred_a):
            raise PredictionsError(f"every output of {run_a} is skipped in train; nothing to compare")
    result = compare_predictions(
        pred_a,
        pred_b,
        n_permutations=config.n_permutations,
        seed=config.seed,
        cluster_column=None if config.by_image else "patient_id",
        adjust=config.adjust,
    )
    if skipped:
        result["note"] = result["note"] + f"; left out (no train positives or negatives in a run): {', '.join(skipped)}"
    return result


def _without_outputs(frame: pd.DataFrame, outputs: dict[str, str] | list[str]) -> pd.DataFrame:
    """The rows of other outputs; the frame itself (no copy: it may hold millions of rows) when none is dropped."""
    if not outputs:
        return frame
    drop = frame["output"].astype(str).isin(list(outputs)).to_numpy()
    return frame[~drop] if drop.any() else frame


def _undefined_row(run: pd.Series, output: str, metric: str, labels: pd.Series, note: str) -> dict[str, object]:
    known = labels.dropna()
    return {
        **{c: run.get(c, None) for c in RUN_COLUMNS},
        "output": output,
        "metric": metric,
        "estimate": np.nan,
        "ci_low": np.nan,
        "ci_high": np.nan,
        "n": len(known),
        "n_pos": int((known == 1).sum()),
        "defined": False,
        "note": note,
    }
