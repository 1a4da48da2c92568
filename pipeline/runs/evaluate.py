"""One evaluation of a run folder, shared by the probe, `chex stats`, `chex compare` and the report.

`evaluate_run(folder)` reads the folder's RunRecord and the tables of the run's task (pipeline/tasks/) and asks
the task for the rows. The classification and survival tasks read predictions, val predictions and the survival
table and apply the probe's rules here (`evaluate_tables`): the macro of a data set averages one fixed set of
findings in every run and label fraction (those with test positives and negatives); an output without train
positives (or negatives) is scored by its training prior (0, or 1: a constant, AUROC 0.5) and stays in that set;
validation thresholds reach test as a positive rate, and the bootstrap uses the run's resamples and seed. So the
same folder gives the same numbers wherever it is evaluated. `compare_runs` asks the runs' task for the paired
test; the classification one (`compare_predictions_of_runs`) tests every output, each scored as its
results.parquet scores it, so its macro difference is the one results.parquet gives.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.errors import ConfigError, PredictionsError
from pipeline.runs.io import read_table
from pipeline.runs.layout import (
    FRACTION_PREFIX,
    PREDICTIONS_FILE,
    RECORD_FILE,
    VAL_PREDICTIONS_FILE,
    RunFolder,
    head_folder,
)
from pipeline.runs.passes import COMBINE_RULES, n_passes
from pipeline.runs.record import RunRecord, read_record
from pipeline.stats import compare_predictions, evaluate_predictions, evaluate_survival
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
    combine: str = "mean"  # a --seeds run: the mean over seeds, or their ensemble (pipeline.runs.passes)

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
    """results.parquet rows of a run folder, by the run's task (pipeline/tasks/: the classification task's rules
    are the module docstring's); `record` overrides the folder's run.json (the probe passes the record it is about
    to write)."""
    from pipeline.tasks import task_of_run
    from pipeline.tasks.run import table_files

    folder = Path(folder)
    record = record if record is not None else read_record(folder)
    config = config or StatsConfig.for_run(record)
    if config.combine not in COMBINE_RULES:
        raise ConfigError(f"--combine {config.combine!r}: must be one of {', '.join(COMBINE_RULES)}")
    task = task_of_run(folder, record)
    tables = task.read_tables(folder)
    if all(frame is None for frame in tables.values()) or not any(
        tables.get(name) is not None for name in task.tables if name != VAL_PREDICTIONS_FILE
    ):
        raise PredictionsError(f"no {' or '.join(n for n in table_files() if n != VAL_PREDICTIONS_FILE)} in {folder}; "
                               "run `chex probe` first")  # fmt: skip
    results = task.evaluate(tables, record, config)
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
    """results rows from a run's tables: `skipped` outputs (name -> reason in train) are scored by their training
    prior (`prior_scored`) and stay in the macro, which averages the outputs with test positives and negatives;
    survival endpoints add their rows."""
    parts: list[pd.DataFrame] = []
    if predictions is not None and len(predictions):
        val = val_predictions if val_predictions is None else prior_scored(val_predictions, skipped)
        parts.append(
            evaluate_predictions(
                prior_scored(predictions, skipped),
                n_resamples=config.n_resamples,
                seed=config.seed,
                ci_method=config.ci_method,
                cluster_column=None if config.by_image else "patient_id",
                stratified=config.stratified,
                val_predictions=val,
                confidence=config.confidence,
                threshold_transfer=threshold_transfer,
                prior_scored=skipped,
            )
        )
    if survival is not None and len(survival):
        parts.append(evaluate_survival(survival, horizons=list(config.horizons)))
    results = pd.concat(parts, ignore_index=True)[list(RESULT_COLUMNS)]
    results["defined"] = results["defined"].astype(bool)
    results[["n", "n_pos"]] = results[["n", "n_pos"]].astype("int64")
    return results


def training_prior(reason: str) -> float:
    """The training prior of an output whose train labels are of one class (`reason` as
    pipeline.probe.data.outputs_without_both_classes words it): 0 without positives, 1 without negatives."""
    return 1.0 if reason == "no negative labels" else 0.0


def prior_scored(frame: pd.DataFrame, skipped: dict[str, str]) -> pd.DataFrame:
    """`frame` with each skipped output's scores replaced by its training prior (the frame itself when none is):
    what a head predicts for a finding it never saw a positive (or negative) of, whatever an older probe wrote."""
    if not skipped or not len(frame):
        return frame
    names = frame["output"].astype(str).to_numpy()
    score = frame["score"].to_numpy(dtype=np.float64, copy=True)
    for output, reason in skipped.items():
        score[names == output] = training_prior(reason)
    return frame.assign(score=score)


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
    """Paired permutation test of two runs (folders or predictions files) of one task, by that task's per-unit
    score (A minus B); ConfigError when the two runs are of different tasks."""
    from pipeline.tasks import task_of_run

    config = config or CompareConfig()
    tasks = []
    for run in (Path(run_a), Path(run_b)):
        folder = run if run.is_dir() else run.parent
        tasks.append(task_of_run(folder, read_record(folder) if (folder / RECORD_FILE).is_file() else None))
    a, b = tasks
    if not (isinstance(a, type(b)) or isinstance(b, type(a))):  # survival runs hold classification outputs too
        raise ConfigError(f"{run_a} is a {a.name} run and {run_b} a {b.name} run: compare two runs of one task")
    return tasks[0].compare(Path(run_a), Path(run_b), config)


def compare_predictions_of_runs(run_a: Path, run_b: Path, config: CompareConfig | None = None) -> pd.DataFrame:
    """The classification task's paired permutation test of two runs (folders or predictions files) over every
    output, each run's skipped outputs scored by their training prior as its results.parquet scores them, so each
    macro difference is the one their results.parquet tables give (A minus B)."""
    config = config or CompareConfig()
    pred_a, record_a = run_predictions(run_a)
    pred_b, record_b = run_predictions(run_b)
    for run, pred in ((run_a, pred_a), (run_b, pred_b)):
        if n_passes(pred) > 1:
            raise PredictionsError(
                f"{run} holds {n_passes(pred)} seeds or CV repeats (chex probe --seeds/--cv): the paired test needs "
                "one prediction per image; compare one-seed runs (its seed-to-seed SD is in results.parquet)"
            )
    skipped_a = record_a.skipped_train if record_a else {}
    skipped_b = record_b.skipped_train if record_b else {}
    result = compare_predictions(
        prior_scored(pred_a, skipped_a),
        prior_scored(pred_b, skipped_b),
        n_permutations=config.n_permutations,
        seed=config.seed,
        cluster_column=None if config.by_image else "patient_id",
        adjust=config.adjust,
    )
    for name, skipped in (("A", skipped_a), ("B", skipped_b)):
        if skipped:
            result["note"] = result["note"] + f"; scored by the training prior in run {name}: {', '.join(skipped)}"
    if len(result) and result["model_a"].iloc[0] == result["model_b"].iloc[0]:  # e.g. two configurations of a head
        result["model_a"], result["model_b"] = _folder_name(Path(run_a)), _folder_name(Path(run_b))
    return result


def _folder_name(path: Path) -> str:
    """backbone/head folder (with its configuration tag)[/label_fraction=f] of a run folder or one of its files."""
    names = RunFolder(path if path.is_dir() else path.parent).path_names()
    parts = [names.get("backbone"), head_folder(names.get("head") or "", names.get("config_tag") or "")]
    if names.get("label_fraction"):
        parts.append(f"{FRACTION_PREFIX}{float(names['label_fraction']):g}")
    return "/".join(p for p in parts if p)
