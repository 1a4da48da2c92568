"""`compare_predictions`: the paired permutation test (and DeLong cross-check) between two runs scored on the
same test images, with multiple-comparison adjustment over the outputs."""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.errors import PredictionsError
from pipeline.stats.delong import delong_test
from pipeline.stats.multiple import adjust_pvalues
from pipeline.stats.permutation import MACRO, PERMUTATION_METRICS, paired_permutation_test
from pipeline.stats.tables import PREDICTION_COLUMNS, clusters_of, model_name, pivot, require, split_rows


def compare_predictions(
    pred_a: pd.DataFrame,
    pred_b: pd.DataFrame,
    n_permutations: int = 1000,
    seed: int = 0,
    cluster_column: str | None = "patient_id",
    metrics: tuple[str, ...] = PERMUTATION_METRICS,
    adjust: str = "holm",
) -> pd.DataFrame:
    """Paired permutation test of run A vs run B on the same test images, per output and macro.

    Rows: output, metric, estimate_a, estimate_b, diff (A - B), p_value, p_adjusted (`adjust` over the outputs
    of one metric; the macro row is its own single test), delong_p (AUROC rows: DeLong's analytic test per
    output, Obuchowski's clustered form when patients hold several images), n_permutations, exact, n_units,
    min_p (the smallest attainable p), n, n_pos, model_a, model_b, note. Raises PredictionsError when the two
    tables do not hold the same (image_id, output) test pairs or disagree on a label.
    """
    for name, frame in (("A", pred_a), ("B", pred_b)):
        require(frame, PREDICTION_COLUMNS, f"predictions {name}")
    test_a = split_rows(pred_a, "test", fallback_all=True)
    test_b = split_rows(pred_b, "test", fallback_all=True)
    _check_same_images(test_a, test_b)
    table_a = pivot(test_a, "predictions A")
    table_b = pivot(test_b, "predictions B")
    order = [table_b.outputs.index(o) for o in table_a.outputs]
    rows_b = pd.Index(table_b.image_ids).get_indexer(table_a.image_ids)
    labels_b = table_b.labels[rows_b][:, order]
    scores_b = table_b.scores[rows_b][:, order]
    both = ~np.isnan(table_a.labels) & ~np.isnan(labels_b)
    if (table_a.labels[both] != labels_b[both]).any() or (np.isnan(table_a.labels) != np.isnan(labels_b)).any():
        raise PredictionsError(
            "runs A and B hold different labels for the same test images (another label policy or manifest?); "
            "compare runs made from the same manifest"
        )
    clusters, unit_name = clusters_of(test_a, table_a.image_ids, cluster_column)
    result = paired_permutation_test(
        table_a.labels,
        table_a.scores,
        scores_b,
        groups=clusters,
        n_permutations=n_permutations,
        seed=seed,
        metrics=metrics,
        outputs=table_a.outputs,
    )
    result["p_adjusted"] = np.nan
    for metric in metrics:
        per_output = (result["metric"] == metric) & (result["output"] != MACRO)
        result.loc[per_output, "p_adjusted"] = adjust_pvalues(result.loc[per_output, "p_value"].to_numpy(), adjust)
        result.loc[(result["metric"] == metric) & (result["output"] == MACRO), "p_adjusted"] = result.loc[
            (result["metric"] == metric) & (result["output"] == MACRO), "p_value"
        ]
    result["delong_p"] = np.nan
    if "auroc" in metrics:
        for j, name in enumerate(table_a.outputs):
            row = (result["metric"] == "auroc") & (result["output"] == name)
            result.loc[row, "delong_p"] = delong_test(
                table_a.labels[:, j], table_a.scores[:, j], scores_b[:, j], clusters=clusters
            ).p_value
    result["model_a"] = model_name(pred_a)
    result["model_b"] = model_name(pred_b)
    result["note"] = f"scores swapped per {unit_name}; p_adjusted: {adjust} over outputs; " + (
        "DeLong clustered by patient (Obuchowski 1997)" if clusters is not None else "DeLong per image"
    )
    return result


def _check_same_images(test_a: pd.DataFrame, test_b: pd.DataFrame) -> None:
    keys_a = set(zip(test_a["image_id"].astype(str), test_a["output"].astype(str), strict=True))
    keys_b = set(zip(test_b["image_id"].astype(str), test_b["output"].astype(str), strict=True))
    if keys_a == keys_b:
        return
    only_a, only_b = sorted(keys_a - keys_b), sorted(keys_b - keys_a)
    raise PredictionsError(
        "runs A and B were not scored on the same test images: "
        f"{len(only_a)} (image_id, output) pairs only in A (e.g. {only_a[:3]}), "
        f"{len(only_b)} only in B (e.g. {only_b[:3]}); a paired test needs both runs on one test split"
    )
