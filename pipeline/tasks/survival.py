"""Survival (card kind survival, with any classification columns beside it): the horizon outputs train as
classification does ("event within the horizon", masked BCE, val macro AUROC); the run adds survival.parquet, one
row per test subject and endpoint (mean risk score over the subject's images, follow-up time, event), whose rows
(C-index, hazard ratio, log-rank, Kaplan-Meier) join the classification rows and make the report's Table IV."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from pipeline.runs.layout import PREDICTIONS_FILE, SURVIVAL_FILE
from pipeline.tasks.base import ReportPart, ReportSettings
from pipeline.tasks.classification import ClassificationTask


class SurvivalTask(ClassificationTask):
    """Classification of the horizon outputs plus the per-subject survival table."""

    name = "survival"
    tables: ClassVar[dict[str, bool]] = {**ClassificationTask.tables, SURVIVAL_FILE: False}

    def pass_tables(self, data, test_scores, val_scores, identity, seed, lr, skipped, fold=-1, tagged=False):
        from pipeline.probe.results import survival_frame

        out = super().pass_tables(data, test_scores, val_scores, identity, seed, lr, skipped, fold, tagged)
        # Test subjects only: the low/high split is at their median risk. The val subjects' scores come from the
        # sweep head, not the refit head that scored test, and the two heads' scales differ.
        frame = survival_frame(data, out[PREDICTIONS_FILE], identity)
        if frame is not None and tagged:
            frame = frame.assign(seed=np.int64(seed))
            frame = frame.assign(fold=np.int64(fold)) if fold >= 0 else frame
        out[SURVIVAL_FILE] = frame
        return out

    def report_tables(self, coll, settings: ReportSettings) -> ReportPart:
        """Table IV: per endpoint, AUPRC/AUROC of the horizon output, C-index, HR, log-rank p, KM survival; and its
        companion, the adjusted paired-permutation p of each column's best model against the others (detail CSV)."""
        from pipeline.report.comparisons import survival_best_vs_others
        from pipeline.report.missing import survival_hint
        from pipeline.report.tables import survival_pvalue_table, survival_table

        table = survival_table(coll)
        if table.is_empty:
            return ReportPart(tables=[table], missing=[survival_hint(coll)])
        part = ReportPart(tables=[table])
        comparisons, problems = survival_best_vs_others(coll, settings.n_permutations, settings.seed, settings.adjust)
        part.missing += problems
        if len(comparisons):
            part.tables.append(survival_pvalue_table(coll, comparisons, settings.n_permutations, settings.adjust))
            part.details["table4_pvalues"] = comparisons
        return part
