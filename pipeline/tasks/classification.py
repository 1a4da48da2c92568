"""Classification (card kinds multilabel and binary): K findings, masked BCE, lr chosen on val macro AUROC.

Targets: the card's label columns with each task's uncertain policy applied (N, K), NaN = masked. A finding
without train positives (or negatives) is left out of lr selection and scored by its training prior. Tables:
predictions.parquet (test image x output) and val_predictions.parquet; results: per-output and macro AUROC/AUPRC
with bootstrap CIs and val-threshold metrics (pipeline.stats.classification); report: Table II and its p-values.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from pipeline.runs.layout import PREDICTIONS_FILE, SURVIVAL_FILE, VAL_PREDICTIONS_FILE
from pipeline.tasks.base import ReportPart, ReportSettings, Task


class ClassificationTask(Task):
    """Binary and multi-label findings: (B, K) logits. The module imports no torch (run folders are told apart
    without it)."""

    name = "classification"
    tables: ClassVar[dict[str, bool]] = {PREDICTIONS_FILE: True, VAL_PREDICTIONS_FILE: True}
    score_column = "val_macro_auroc"
    score_name = "val macro AUROC"
    planted_oracle = True
    report_heads = ("linear", "glori", "mlp")
    wide_metrics = ("auroc", "auprc", "f1", "prevalence")
    hidden_metrics = ("sensitivity", "specificity")

    def outputs(self, card) -> list[str]:
        return list(card.label_columns)

    def targets(self, card, manifest: pd.DataFrame, store: Any = None) -> np.ndarray:
        return card.labels_for_training(manifest)

    def strata(self, targets: np.ndarray) -> np.ndarray | None:
        return targets

    def skipped(self, targets: np.ndarray, outputs: Sequence[str]) -> dict[str, str]:
        from pipeline.probe.data import outputs_without_both_classes

        return outputs_without_both_classes(targets, outputs)

    def loss(self, logits, targets, label_smoothing: float = 0.0, reduction: str = "mean"):
        from heads.batched import masked_bce

        return masked_bce(logits, targets, label_smoothing, reduction=reduction)

    def member_loss_sums(self, logits, targets, label_smoothing: float = 0.0):
        from pipeline.probe.sweep import _member_loss_sums

        return _member_loss_sums(logits, targets, label_smoothing)

    def n_known(self, targets) -> int:
        import torch

        return int((~torch.isnan(targets)).sum())

    def activate(self, logits):
        import torch

        return torch.sigmoid(logits)

    def sweep_table(self, lrs, val_scores, val_targets, skip, rule, losses) -> pd.DataFrame:
        from pipeline.probe.sweep import sweep_table

        return sweep_table(lrs, val_scores, val_targets, skip, rule, losses)

    def rung_score(self, val_scores, val_targets, skip, rule) -> float:
        from pipeline.probe.halving import _score

        return _score(val_scores, val_targets, list(skip), rule)

    def pass_tables(self, data, test_scores, val_scores, identity, seed, lr, skipped, fold=-1, tagged=False):
        from pipeline.probe.results import prediction_frame, with_training_priors

        # A finding without train positives (or negatives) is predicted by its training prior: it stays in the macro.
        out = {}
        for name, positions, scores in ((PREDICTIONS_FILE, data.test, test_scores),
                                        (VAL_PREDICTIONS_FILE, data.val, val_scores)):  # fmt: skip
            probs = with_training_priors(scores, list(data.outputs), skipped)
            frame = prediction_frame(data, positions, probs, identity, seed, lr)
            out[name] = frame.assign(fold=np.int64(fold)) if fold >= 0 else frame
        return out

    def evaluate(self, tables, record, config) -> pd.DataFrame:
        """The probe's rules (pipeline/runs/evaluate.py): skipped outputs scored by their training prior, one fixed
        macro set, val thresholds moved to test as a rate; several seeds or CV passes evaluated one by one."""
        from pipeline.runs.evaluate import evaluate_tables
        from pipeline.runs.passes import evaluate_passes, n_passes

        predictions, val = tables.get(PREDICTIONS_FILE), tables.get(VAL_PREDICTIONS_FILE)
        survival = tables.get(SURVIVAL_FILE)
        transfer = record.threshold_transfer if record is not None else ("quantile" if val is not None else "score")
        skipped = record.skipped_train if record is not None else {}
        if n_passes(predictions, survival) > 1:  # --seeds / --cv: each seed alone, then combined
            results = evaluate_passes(
                predictions, val, survival,
                lambda p, v, s: evaluate_tables(p, v, s, skipped, config, threshold_transfer=transfer),
                combine=config.combine,
            )  # fmt: skip
            return with_pooled_note(results, record)
        return evaluate_tables(predictions, val, survival, skipped, config, threshold_transfer=transfer)

    def headline(self, results: pd.DataFrame) -> float:
        row = results[(results["output"] == "macro") & (results["metric"] == "auroc")]
        return float(row["estimate"].iloc[0]) if len(row) and bool(row["defined"].iloc[0]) else float("nan")

    def compare(self, run_a: Path, run_b: Path, config) -> pd.DataFrame:
        from pipeline.runs.evaluate import compare_predictions_of_runs

        return compare_predictions_of_runs(run_a, run_b, config)

    def report_tables(self, coll, settings: ReportSettings) -> ReportPart:
        """Table II (macro AUPRC/AUROC per data set) and its companion, the adjusted paired-permutation p of each
        column's best model against the others (with a detail CSV)."""
        from pipeline.report.comparisons import best_vs_others
        from pipeline.report.tables import performance_table, pvalue_table

        part = ReportPart(tables=[performance_table(coll)])
        if part.tables[0].is_empty:
            part.missing.append("no classification results (Table II): run `chex probe` on a classification data set")
            return part
        comparisons, problems = best_vs_others(coll, settings.n_permutations, settings.seed, settings.adjust)
        part.missing += problems
        part.tables.append(pvalue_table(coll, comparisons, settings.n_permutations, settings.adjust))
        part.details["table2_pvalues"] = comparisons
        return part


def with_pooled_note(results: pd.DataFrame, record) -> pd.DataFrame:
    """A `--pooled-selection` run's rows say that every seed refitted at one lr chosen on the seeds' pooled val
    scores (without it each seed chose its own lr on its own val)."""
    if record is None or not record.config.get("pooled_selection"):
        return results
    lrs = sorted(set(record.data.get("chosen_lrs", [record.chosen_lr])))
    note = (f"one lr for all seeds (--pooled-selection: lr {', '.join(f'{lr:g}' for lr in lrs)}, chosen by "
            f"{record.config.get('selection', 'auroc')} on the seeds' mean val scores)")  # fmt: skip
    results = results.copy()
    old = results["note"].fillna("").astype(str) if "note" in results.columns else pd.Series([""] * len(results))
    results["note"] = [f"{n}; {note}" if n else note for n in old]
    return results
