"""The task-kind seam: cards choose their task, and a task kind registered here (a fake regression task, defined
only in this file) goes through `chex probe`'s protocol, the run folder's finish, `chex stats` (evaluate_run) and
`chex compare` without any other code knowing it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline.cards import card_from_dict, load_card
from pipeline.errors import ConfigError
from pipeline.probe import ProbeConfig, run_probe
from pipeline.probe.sweep import TrainLosses
from pipeline.report import write_report
from pipeline.report.cells import Panel, ReportTable, Row
from pipeline.report.tables import result_cell
from pipeline.runs import RESULTS_FILE, CompareConfig, compare_runs, evaluate_run, is_complete, read_record
from pipeline.stats.tables import RESULT_COLUMNS
from pipeline.tasks import TaskEntry, register_task, task_for_card, task_of_run, unregister_task
from pipeline.tasks.base import COMPARE_COLUMNS, ReportPart, Task
from tests.pipeline.probe.conftest import make_workspace

TABLE = "regression.parquet"


def _card(*kinds: str):
    tasks = [{"name": f"t{i}", "kind": k, "columns": [f"c{i}"]} for i, k in enumerate(kinds)]
    return card_from_dict({"name": "x", "tasks": tasks})


def test_cards_choose_their_task():
    assert task_for_card(_card("multilabel")).name == "classification"
    assert task_for_card(_card("binary")).name == "classification"
    assert task_for_card(_card("survival")).name == "survival"
    assert task_for_card(_card("binary", "survival")).name == "survival"  # survival carries classification columns
    with pytest.raises(ConfigError, match="task kind must be one of multilabel, binary, survival"):
        _card("regression")


class RegressionTask(Task):
    """A task no other code knows: continuous targets, MSE, lr chosen on val MSE, its own table and rows."""

    name = "regression"
    tables = {TABLE: True}  # noqa: RUF012
    score_column = "val_neg_mse"
    score_name = "val -MSE"
    headline_name = "macro MSE"

    def outputs(self, card):
        return list(card.label_columns)

    def targets(self, card, manifest, store=None):
        return manifest[card.label_columns].to_numpy(dtype=np.float32)

    def loss(self, logits, targets, label_smoothing=0.0, reduction="mean"):
        known = ~torch.isnan(targets)
        err = torch.where(known, logits - torch.nan_to_num(targets), torch.zeros_like(logits)) ** 2
        return err.sum() if reduction == "sum" else err.sum() / known.sum().clamp_min(1)

    def member_loss_sums(self, logits, targets, label_smoothing=0.0):
        known = ~torch.isnan(targets)
        err = torch.where(known, logits - torch.nan_to_num(targets), torch.zeros_like(logits)) ** 2
        return err.sum(dim=(1, 2)).double().cpu(), int(known.sum())

    def n_known(self, targets):
        return int((~torch.isnan(targets)).sum())

    def activate(self, logits):
        return logits

    def sweep_table(self, lrs, val_scores, val_targets, skip, rule, losses):
        mse = [float(np.nanmean((s - val_targets) ** 2)) for s in val_scores]
        diverged = losses.diverged() if isinstance(losses, TrainLosses) else np.zeros(len(lrs), dtype=bool)
        score = np.where(diverged, -np.inf, -np.asarray(mse))
        return pd.DataFrame(
            {
                "lr": list(lrs),
                "val_neg_mse": [-m for m in mse],
                "val_loss": mse,
                "diverged": diverged,
                "chosen": np.arange(len(lrs)) == int(np.argmax(score)),
                "selected_by": "val_neg_mse",
            }
        )

    def rung_score(self, val_scores, val_targets, skip, rule):
        return -float(np.nanmean((val_scores - val_targets) ** 2))

    def pass_tables(self, data, test_scores, val_scores, identity, seed, lr, skipped, fold=-1, tagged=False):
        rows = data.manifest.iloc[data.test]
        k = len(data.outputs)
        frame = pd.DataFrame({**identity, "seed": seed, "image_id": np.repeat(rows["image_id"].to_numpy(), k),
                              "patient_id": np.repeat(rows["patient_id"].to_numpy(), k),
                              "output": np.tile(data.outputs, len(rows)),
                              "prediction": test_scores.reshape(-1).astype(np.float64),
                              "target": data.labels[data.test].reshape(-1).astype(np.float64)})  # fmt: skip
        return {TABLE: frame}

    def evaluate(self, tables, record, config):
        frame = tables[TABLE].dropna(subset=["target"])
        err = (frame["prediction"] - frame["target"]) ** 2
        rows = [{"output": str(o), "metric": "mse", "estimate": float(e.mean()), "n": len(e)}
                for o, e in err.groupby(frame["output"].astype(str), observed=True)]  # fmt: skip
        rows.append({"output": "macro", "metric": "mse", "estimate": float(np.mean([r["estimate"] for r in rows])),
                     "n": len(frame)})  # fmt: skip
        out = pd.DataFrame(rows).assign(ci_low=np.nan, ci_high=np.nan, n_pos=0, defined=True, note="",
                                        dataset=None, backbone=None, head=None, label_fraction=np.nan)  # fmt: skip
        return out[list(RESULT_COLUMNS)]

    def headline(self, results):
        return float(results.loc[results["output"] == "macro", "estimate"].iloc[0])

    def compare(self, run_a, run_b, config):
        a, b = (pd.read_parquet(r / TABLE).dropna(subset=["target"]) for r in (run_a, run_b))
        sq_a, sq_b = ((f["prediction"] - f["target"]) ** 2 for f in (a, b))
        diff = sq_a.to_numpy() - sq_b.to_numpy()
        signs = np.random.default_rng(config.seed).choice([-1.0, 1.0], size=(config.n_permutations, len(diff)))
        p = (1 + np.sum(np.abs((signs * diff).mean(axis=1)) >= abs(diff.mean()))) / (1 + config.n_permutations)
        row = {
            "output": "macro",
            "metric": "mse",
            "estimate_a": sq_a.mean(),
            "estimate_b": sq_b.mean(),
            "diff": diff.mean(),
            "p_value": p,
            "p_adjusted": p,
            "delong_p": np.nan,
            "n_permutations": config.n_permutations,
            "model_a": "A",
            "model_b": "B",
            "note": "per image",
        }
        return pd.DataFrame([row])[list(COMPARE_COLUMNS)]

    has_figures = True

    def report_figures(self, coll, out_dir, settings):
        import matplotlib.pyplot as plt

        from pipeline.report.figures import FigureResult, save_figure

        fig, ax = plt.subplots()
        ax.plot([0, 1], [0, 1])
        paths = save_figure(fig, out_dir, "regression_fit")
        plt.close(fig)
        return ReportPart(figures=[FigureResult("regression_fit", "Predicted vs true.", paths)])

    def report_tables(self, coll, settings):
        datasets = coll.datasets_of(self)
        rows = [
            Row(model, [result_cell(coll.run(d, model).results, "mse") for d in datasets])
            for model in coll.models(coll.full_runs())
            if all(coll.run(d, model) for d in datasets)
        ]
        table = ReportTable(
            name="table_regression",
            title="Regression: macro MSE",
            caption="Test MSE.",
            row_header=["Backbone", "Head"],
            columns=datasets,
            panels=[Panel(None, rows)],
        )
        return ReportPart(tables=[table], missing=[] if rows else ["no regression results"])


@pytest.fixture
def regression(tmp_path):
    register_task(TaskEntry("regression", ("regression",), RegressionTask))
    try:
        ws = make_workspace(tmp_path / "ws", kind="binary")
        path = ws.card_path("toy")
        path.write_text(path.read_text().replace("kind: binary", "kind: regression"))
        assert load_card(path).tasks[0].kind == "regression"
        yield ws
    finally:
        unregister_task("regression")


def test_a_registered_task_kind_runs_through_probe_stats_and_compare(regression):
    ws = regression
    config = ProbeConfig(n_resamples=10, epochs=2, lrs=(1e-3, 1e-1))
    summary = run_probe(ws, "toy", "linear", config=config, progress=False)
    folder = summary.folder
    assert (summary.val_name, summary.test_name) == ("val -MSE", "test macro MSE")  # what `chex probe` prints
    record = read_record(folder)
    assert record.task == "regression" and task_of_run(folder, record).name == "regression"
    assert (folder / TABLE).is_file() and not (folder / "predictions.parquet").exists()
    sweep = pd.read_parquet(folder / "sweep.parquet")
    assert sweep["chosen"].sum() == 1 and "val_neg_mse" in sweep  # chosen on the task's own score
    assert record.val_macro_auroc == pytest.approx(float(sweep.loc[sweep["chosen"], "val_neg_mse"].iloc[0]))
    results = pd.read_parquet(folder / RESULTS_FILE)
    assert set(results["metric"]) == {"mse"} and results["dataset"].eq("toy").all()
    macro = float(results.loc[results["output"] == "macro", "estimate"].iloc[0])
    assert record.test_macro_auroc == pytest.approx(macro)
    assert is_complete(folder, record.key)
    pd.testing.assert_frame_equal(evaluate_run(folder), results)  # `chex stats` gives the probe's rows
    halving = run_probe(ws, "toy", "mlp", config=ProbeConfig(n_resamples=10, epochs=2, lrs=(1e-3, 1e-1),
                                                             sweep="halving"), progress=False)  # fmt: skip
    table = compare_runs(folder, halving.folder, CompareConfig(n_permutations=50))
    assert list(table.columns) == list(COMPARE_COLUMNS) and 0 < table["p_value"].iloc[0] <= 1
    summary = write_report(ws, formats=("md", "csv"), n_permutations=20, progress=False)
    assert "table_regression" in summary.tables  # the task's own table, asked for by the report
    assert not any(name.startswith(("table2", "table4")) for name in summary.tables)  # no other task's tables
    text = (summary.out_dir / "tables" / "table_regression.md").read_text()
    assert "| linear | 0." in text and "| mlp | 0." in text
    assert [f.name for f in summary.figures] == ["regression_fit"]  # the task's figure, and no other task's
    assert "regression_fit" in (summary.out_dir / "index.md").read_text()


def test_runs_of_different_tasks_are_not_compared(regression, tmp_path):
    config = ProbeConfig(n_resamples=10, epochs=1, lrs=(1e-3,))
    mine = run_probe(regression, "toy", "linear", config=config, progress=False)
    other = make_workspace(tmp_path / "other", kind="binary")
    theirs = run_probe(other, "toy", "linear", config=config, progress=False)
    with pytest.raises(ConfigError, match="compare two runs of one task"):
        compare_runs(mine.folder, theirs.folder)


def test_a_head_of_another_output_is_refused_before_training(regression, monkeypatch):
    monkeypatch.setattr(RegressionTask, "head_output", "map")  # the task trains (B, K, h, w) maps
    with pytest.raises(ConfigError, match=r"--head linear outputs a vector per image.*regression task"):
        run_probe(regression, "toy", "linear", config=ProbeConfig(n_resamples=10, epochs=1), progress=False)
