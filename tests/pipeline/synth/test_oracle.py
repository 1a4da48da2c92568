"""The oracle ceiling: an ordinary run folder scored by the probe's statistics, a reference row of Tables II and
IV for synthetic data sets only, at its ceiling on the planted cohort and at chance on the null cohort."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from pipeline.errors import ConfigError
from pipeline.report.collect import collect_runs
from pipeline.report.comparisons import best_vs_others
from pipeline.report.index import index_markdown, provenance
from pipeline.report.tables import ORACLE_LABELS, performance_table, pvalue_table, survival_table
from pipeline.runs import read_record
from pipeline.synth import generate_cohort
from pipeline.synth.oracle import oracle_datasets, write_oracle_run, write_oracle_runs
from pipeline.workspace import Workspace

DATASETS = ["chexpert", "jsrt", "plco"]


def _cohort(root, null: bool = False, seed: int = 0, datasets=DATASETS) -> Workspace:
    ws = Workspace(root)
    generate_cohort(ws, size="tiny", seed=seed, null=null, datasets=datasets, image_size=32, progress=False)
    return ws


def _row(folder, metric: str, output: str = "macro") -> pd.Series:
    results = pd.read_parquet(folder / "results.parquet")
    return results[(results["metric"] == metric) & (results["output"] == output)].iloc[0]


@pytest.fixture(scope="module")
def planted(tmp_path_factory) -> Workspace:
    ws = _cohort(tmp_path_factory.mktemp("oracle") / "ws")
    write_oracle_runs(ws, n_resamples=100)
    return ws


def test_oracle_is_an_ordinary_run_folder_at_the_ceiling(planted):
    assert set(oracle_datasets(planted)) == set(DATASETS)
    for dataset in ("chexpert", "jsrt"):
        folder = planted.results_dir(dataset, "oracle", "planted")
        record = read_record(folder)  # the run-folder owner's record: a valid RunRecord
        assert record.head_config["oracle"] is True and record.synthetic is True
        features = record.head_config["features"]
        assert "z_heart" in features and any(f.startswith("shown:") for f in features)
        assert _row(folder, "auroc")["estimate"] >= 0.85
        # the probe's statistics: each output's AUROC is sklearn's on the written test predictions
        predictions = pd.read_parquet(folder / "predictions.parquet")
        assert set(predictions["split"]) == {"test"}
        for output, group in predictions.groupby("output"):
            known = group[group["label"].isin([0.0, 1.0])]
            if known["label"].nunique() == 2:
                expected = roc_auc_score(known["label"], known["score"])
                assert _row(folder, "auroc", output)["estimate"] == pytest.approx(expected)
    survival = pd.read_parquet(planted.results_dir("plco", "oracle", "planted") / "survival.parquet")
    assert set(survival["endpoint"]) == {"cvd", "all_cause"}
    assert _row(planted.results_dir("plco", "oracle", "planted"), "c_index", "all_cause")["estimate"] > 0.6


def test_oracle_rerun_is_a_no_op(planted):
    folder = planted.results_dir("jsrt", "oracle", "planted")
    before = (folder / "results.parquet").stat().st_mtime_ns
    write_oracle_run(planted, "jsrt", n_resamples=100)
    assert (folder / "results.parquet").stat().st_mtime_ns == before


def test_oracle_rows_lead_tables_two_and_four_unbolded_and_uncompared(planted, tmp_path):
    # two "models" to read against the oracle: the oracle's jsrt run copied under other names, random scores
    source = planted.results_dir("jsrt", "oracle", "planted")
    for k, backbone in enumerate(("demo-dino", "demo-random-init")):
        other = planted.results_dir("jsrt", backbone, "linear")
        other.mkdir(parents=True, exist_ok=True)
        for name in ("predictions.parquet", "results.parquet"):
            frame = pd.read_parquet(source / name).assign(backbone=backbone, head="linear")
            if name == "predictions.parquet":
                frame["score"] = np.random.default_rng(k).random(len(frame))
            frame.to_parquet(other / name)
    coll = collect_runs(None, planted, n_resamples=50)
    table = performance_table(coll)
    rows = table.panels[1].rows
    assert rows[0].labels == ORACLE_LABELS
    assert not any(c.bold for c in rows[0].cells)
    assert "oracle" in table.caption
    comparisons, _ = best_vs_others(coll, n_permutations=20)
    assert len(comparisons) and "oracle" not in set(comparisons["backbone"]) | set(comparisons["best_backbone"])
    assert all(r.labels != ORACLE_LABELS for p in pvalue_table(coll, comparisons, 20, "holm").panels for r in p.rows)
    assert survival_table(coll).panels[0].rows[0].labels == ORACLE_LABELS
    # never for a real (non-synthetic) data set, even if an oracle folder were there
    coll.synthetic = set()
    jsrt = list(performance_table(coll).columns).index("JSRT")
    assert not performance_table(coll).panels[1].rows[0].cells[jsrt].has_value


def test_real_data_sets_have_no_oracle(tmp_path):
    ws = _cohort(tmp_path / "ws", datasets=["jsrt"])
    (ws.manifests_dir / "synth" / "jsrt.truth.parquet").unlink()
    assert oracle_datasets(ws) == []
    with pytest.raises(ConfigError, match="only for data sets made by `chex synth`"):
        write_oracle_run(ws, "jsrt")


def test_null_cohort_oracle_is_at_chance_and_logrank_p_spreads(tmp_path):
    """The null control at tiny size: same pixels, labels independent of them."""
    aurocs, pvalues = [], []
    for seed in range(4):
        ws = _cohort(tmp_path / f"null{seed}", null=True, seed=seed, datasets=["chexpert", "plco"])
        for folder in write_oracle_runs(ws, n_resamples=100):
            aurocs.append(_row(folder, "auroc")["estimate"])  # one tiny test split is noisy: judge the mean
            if folder.parts[-3] == "plco":
                pvalues += [_row(folder, "logrank_p", e)["estimate"] for e in ("cvd", "all_cause")]
    assert abs(np.mean(aurocs) - 0.5) < 0.1 and max(aurocs) < 0.85, aurocs
    assert min(pvalues) > 0.001 and max(pvalues) > 0.3, pvalues  # spread over (0, 1), none "significant"


def test_demo_null_flag_reaches_the_null_cohort(monkeypatch, tmp_path):
    import pipeline.demo as demo_module
    from pipeline.cli import app
    from pipeline.demo import DemoSummary

    seen = {}

    def fake(ws, **kwargs):
        seen.update(kwargs)
        return DemoSummary(workspace=ws.root)

    monkeypatch.setattr(demo_module, "run_demo", fake)  # the command imports it when it runs
    result = CliRunner().invoke(app, ["demo", "--size", "tiny", "--null", "--workspace", str(tmp_path / "ws")])
    assert result.exit_code == 0, result.output
    assert seen["null"] is True and "null cohort" in result.output


def test_the_oracle_has_a_provenance_line_of_its_own(planted, tmp_path):
    """Issue 26 item 13: the report said "backbone oracle: checkpoint sha256 unknown (no run.json); store unknown"
    and printed a raw-JSON "planted head config" line per data set."""
    coll = collect_runs(workspace=planted)
    index = index_markdown(coll, [], [], [], provenance(coll, ["results"]), tmp_path)
    (line,) = [x for x in index.splitlines() if x.startswith("- backbone `oracle`")]
    assert "SYNTHETIC reference, not a model" in line and "logistic regression per output" in line
    assert "z_heart" in line and all(f"{d}.truth.parquet" in line for d in DATASETS)
    assert "unknown" not in line and "planted head" not in index and "{" not in index
