"""The comparison layout (issue 23): Holm within a column against statsmodels, the bold rule and the tested best
agree, and the provenance names each backbone's family and weights sha256."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from pipeline.report.collect import collect_runs
from pipeline.report.comparisons import best_vs_others
from pipeline.report.index import provenance
from pipeline.report.missing import missing_inputs
from pipeline.report.tables import performance_table, pvalue_table
from pipeline.stats import compare_predictions
from pipeline.stats.classification import TOO_FEW
from pipeline.workspace import Workspace
from tests.pipeline.report.conftest import PERMUTATIONS as PERMUTATIONS_REPORT
from tests.pipeline.report.fabricate import FAMILY, SHA, run_dir

PERMUTATIONS = 20
HEAD_LABEL = {"linear": "Linear", "glori": "GLoRI", "mlp": "MLP"}


def test_pvalues_are_holm_adjusted_within_each_column_as_statsmodels(report):
    detail = pd.read_csv(report.out_dir / "tables" / "table2_pvalues_detail.csv", float_precision="round_trip")
    families = list(detail.groupby(["dataset", "metric"]))
    assert len(families) == 6  # 3 data sets (columns) x 2 metrics (panels)
    for (dataset, metric), family in families:
        assert family["best_backbone"].nunique() == 1 and family["best_head"].nunique() == 1
        tested = family["p_value"].notna().to_numpy()
        expected = multipletests(family["p_value"].to_numpy()[tested], method="holm")[1]
        assert np.allclose(family["p_adjusted"].to_numpy()[tested], expected), (dataset, metric)
        # a column's family is never pooled with another column's
        assert len(family) == 4 if dataset == "jsrt" else 5
    caption = report.tables["table2_pvalues"].caption
    assert "Holm-adjusted" in caption and "within each column" in caption


def _withhold_ci(folder, metric: str) -> None:
    """Make `folder`'s macro `metric` an estimate too uncertain to rank (its CI withheld, as the stats do)."""
    path = folder / "results.parquet"
    results = pd.read_parquet(path)
    row = (results["output"] == "macro") & (results["metric"] == metric)
    results.loc[row, ["ci_low", "ci_high"]] = math.nan
    results.loc[row, "note"] = f"{TOO_FEW} test positives (2) for a CI"
    results.to_parquet(path, index=False)


def test_a_best_whose_interval_is_withheld_is_neither_bold_nor_the_tested_best(workspace, tmp_path):
    """The best of Shenzhen's AUROC column (vits-a GLoRI) has its CI withheld: Table II bolds the next one, and the
    p-value table must test that same model against the others (it used to test the unbolded one)."""
    copy = tmp_path / "ws"
    shutil.copytree(workspace.root / "results" / "shenzhen", copy / "results" / "shenzhen")
    _withhold_ci(copy / run_dir(workspace, "shenzhen", "vits-a", "glori").relative_to(workspace.root), "auroc")
    coll = collect_runs([copy / "results"])
    table2 = performance_table(coll)
    bold = [row.labels for row in next(p for p in table2.panels if p.title == "AUROC").rows if row.cells[0].bold]
    assert bold and ("vits-a", "GLoRI") not in bold
    comparisons, problems = best_vs_others(coll, n_permutations=PERMUTATIONS)
    assert not problems
    family = comparisons[(comparisons["dataset"] == "shenzhen") & (comparisons["metric"] == "auroc")]
    best = family[["best_backbone", "best_head"]].drop_duplicates()
    assert len(best) == 1
    assert (best.iloc[0]["best_backbone"], HEAD_LABEL[best.iloc[0]["best_head"]]) == bold[0]
    # the unrankable model is still compared against the best (a row of its own), never called best
    assert ((family["backbone"] == "vits-a") & (family["head"] == "glori")).sum() == 1
    pvalues = pvalue_table(coll, comparisons, PERMUTATIONS, "holm")
    cells = {row.labels: row.cells[0] for row in next(p for p in pvalues.panels if p.title == "AUROC").rows}
    assert cells[bold[0]].text == "best"
    assert cells[("vits-a", "GLoRI")].text != "best" and cells[("vits-a", "GLoRI")].has_value


def test_provenance_names_each_backbones_family_and_weights_sha256(workspace, report):
    coll = collect_runs(None, workspace)
    prov = provenance(coll, [str(workspace.root / "results")])
    for backbone in ("vits-a", "vits-b"):
        entry = prov["backbones"][backbone]
        assert entry["family"] == [FAMILY[backbone]]
        assert entry["checkpoint_sha256"] == [SHA[backbone]]  # the weights file's sha256
    index = (report.out_dir / "index.md").read_text()
    for backbone in ("vits-a", "vits-b"):
        line = next(x for x in index.splitlines() if x.startswith(f"- backbone `{backbone}`"))
        # the whole digest: a reader can check the weights file with sha256sum
        assert f"family {FAMILY[backbone]}, weights sha256 `{SHA[backbone]}`" in line


@pytest.mark.parametrize("with_store", [False, True])
def test_provenance_reads_the_store_record_when_run_json_lacks_it(workspace, with_store):
    """Runs written before the store recorded its family say 'family unknown' rather than guess."""
    coll = collect_runs(None, workspace)
    for run in coll.runs:
        if run.record is not None and not with_store:
            run.record = type(run.record)(**{**run.record.to_dict(), "store_attrs": {}})
    prov = provenance(coll, ["x"])
    families = prov["backbones"]["vits-a"]["family"]
    assert families == ([FAMILY["vits-a"]] if with_store else [])


def test_an_embedded_backbone_without_runs_is_named_with_its_family(workspace, tmp_path):
    """Every embedded backbone belongs in the comparison: a store without probe runs is named, not silently left out."""
    ws = Workspace(tmp_path / "ws")
    shutil.copytree(workspace.root / "results" / "jsrt", ws.root / "results" / "jsrt")
    for name, attributes in (("convnext-22k", {"family": "convnext"}), ("old-store", {})):
        ws.features_dir(name).mkdir(parents=True)
        (ws.features_dir(name) / "zarr.json").write_text(
            json.dumps({"zarr_format": 3, "node_type": "group", "attributes": attributes})
        )
    missing = missing_inputs(collect_runs(None, ws))
    assert (
        "backbone convnext-22k (family convnext) is embedded (features/convnext-22k) but has no probe runs, so the "
        "comparison tables lack it: run `chex probe --head linear --dataset jsrt --backbone convnext-22k` "
        "(and --head glori)"
    ) in missing
    assert any(m.startswith("backbone old-store (family not recorded) is embedded") for m in missing)
    assert not any(m.startswith(f"backbone {b} ") for b in ("vits-a", "vits-b") for m in missing)


def test_table4_companion_tests_each_endpoints_best_with_holm_within_a_column(workspace, report):
    """Table IV's rows get their paired permutation p against the column's best too (AUPRC / AUROC of death within
    the horizon, per endpoint), Holm-adjusted within each column."""
    table4 = report.tables["table4_survival"]
    companion = report.tables["table4_pvalues"]
    detail = pd.read_csv(report.out_dir / "tables" / "table4_pvalues_detail.csv", float_precision="round_trip")
    assert set(detail["endpoint"]) == {"cvd", "all_cause"} and set(detail["metric"]) == {"auprc", "auroc"}
    assert "Holm-adjusted within each column" in companion.caption
    for (endpoint, metric), column in detail.groupby(["endpoint", "metric"]):
        assert len(column) == 5  # 6 models: the best vs the 5 others
        expected = multipletests(column["p_value"].to_numpy(), method="holm")[1]
        assert np.allclose(column["p_adjusted"], expected)
        panel = {"cvd": "CVD mortality", "all_cause": "All-cause mortality"}[endpoint]
        name = {"auprc": "AUPRC", "auroc": "AUROC"}[metric]
        best = (column["best_backbone"].iloc[0], HEAD_LABEL[column["best_head"].iloc[0]])
        assert table4.cell(panel, best, name).bold  # the tested best is Table IV's bold cell
        assert companion.cell(panel, best, name).text == "best"
        for _, row in column.iterrows():
            cell = companion.cell(panel, (row["backbone"], HEAD_LABEL[row["head"]]), name)
            assert cell.value == pytest.approx(row["p_adjusted"])
    # the raw p of one pair is the stats library's paired permutation test of the endpoint's binary output
    one = detail[(detail["endpoint"] == "cvd") & (detail["metric"] == "auroc")].iloc[0]
    best = (one["best_backbone"], one["best_head"])
    direct = compare_predictions(
        pd.read_parquet(run_dir(workspace, "plco", *best) / "predictions.parquet"),
        pd.read_parquet(run_dir(workspace, "plco", one["backbone"], one["head"]) / "predictions.parquet"),
        n_permutations=PERMUTATIONS_REPORT,
    )
    want = direct[(direct["output"] == one["output"]) & (direct["metric"] == "auroc")]["p_value"].iloc[0]
    assert one["output"] == "death_cvd_12y" and one["p_value"] == pytest.approx(want)
