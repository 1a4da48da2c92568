"""lr selection (issue 25): diverged lrs never win, the one-SE rule goes to the smaller lr among near-ties, and a
val split without one class says so and what chose the lr."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from pipeline.probe import ProbeConfig, run_probe
from pipeline.probe.sweep import SELECTIONS, TrainLosses, macro_auroc_se, sweep_table
from pipeline.stats.delong import auroc_variance
from tests.pipeline.probe.conftest import make_workspace


def _val(n: int = 120, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random((n, 1)) < 0.4).astype(float)
    return y, rng.normal(size=(n, 1))


def _probs(y: np.ndarray, strength: float, seed: int) -> np.ndarray:
    noise = np.random.default_rng(seed).normal(size=y.shape)
    return 1 / (1 + np.exp(-(strength * (y - 0.5) + noise)))


def test_a_diverged_lr_never_wins_under_any_rule():
    y, _ = _val()
    lrs = (1e-4, 1e-3, 5e-3)
    val_probs = np.stack([_probs(y, 1.0, 1), _probs(y, 1.5, 2), _probs(y, 6.0, 3)])  # the last is best on val
    losses = TrainLosses(start=[0.69, 0.69, 0.69], epochs=[[0.6, 0.5], [0.5, 0.4], [0.4, 0.3, 0.9]])  # ... but diverged
    for rule in SELECTIONS:
        table = sweep_table(lrs, val_probs, y, [], rule, losses)
        assert table["diverged"].tolist() == [False, False, True]
        assert not table.loc[table["chosen"], "diverged"].any(), rule
        assert "diverged, not eligible: lr 0.005" in table["selected_by"].iloc[0]
    # without the training losses (as before issue 25) the diverging lr wins on val AUROC
    assert sweep_table(lrs, val_probs, y, [], "auroc")["chosen"].tolist() == [False, False, True]


def test_diverged_means_a_non_finite_loss_or_an_epoch_rising_above_the_start():
    losses = TrainLosses(
        start=[0.7] * 7, epochs=[[0.5, 0.3], [0.5, np.nan], [0.9, 0.8], [0.2, 0.71], [0.3, 1.0, 0.2], [2.0, 0.5], []]
    )  # 0.9, 0.8: a start one batch put low; 1.0 then 0.2: a spike that recovered; 2.0: blew up in epoch 1
    assert losses.diverged().tolist() == [False, True, False, False, True, True, False]


def test_when_every_lr_diverged_all_are_eligible_and_the_note_says_so():
    y, _ = _val()
    val_probs = np.stack([_probs(y, 1.0, 1), _probs(y, 2.0, 2)])
    losses = TrainLosses(start=[0.5, 0.5], epochs=[[np.inf], [1.2]])
    table = sweep_table((1e-3, 1e-2), val_probs, y, [], "auroc", losses)
    assert table["chosen"].sum() == 1
    assert "every lr diverged" in table["selected_by"].iloc[0]


def test_one_se_rule_picks_the_smallest_lr_within_one_standard_error_of_the_best():
    y, _ = _val(n=60)
    lrs = (1e-5, 1e-4, 1e-3, 1e-2)
    val_probs = np.stack([_probs(y, 0.0, 1), _probs(y, 1.6, 2), _probs(y, 1.8, 3), _probs(y, 2.0, 3)])
    table = sweep_table(lrs, val_probs, y, [], "one-se")
    auroc = table["val_macro_auroc"].to_numpy()
    best = int(np.argmax(auroc))
    se = np.sqrt(auroc_variance(y[:, 0], val_probs[best, :, 0])[1])
    assert np.isclose(table["val_auroc_se"].iloc[best], se)
    within = [k for k in range(len(lrs)) if auroc[k] >= auroc[best] - se]
    assert auroc[0] < auroc[best] - se  # the chance-level lr is out
    assert table["chosen"].tolist() == [k == min(within) for k in range(len(lrs))]
    assert lrs[min(within)] < lrs[best]  # a near-tie at a smaller lr was preferred
    assert "one-SE rule" in table["selected_by"].iloc[0]
    assert sweep_table(lrs, val_probs, y, [], "auroc")["chosen"].tolist() == [k == best for k in range(len(lrs))]


def test_macro_se_combines_delong_variances_of_the_outputs():
    rng = np.random.default_rng(3)
    y = (rng.random((80, 2)) < 0.4).astype(float)
    probs = _probs(y, 1.5, 5)
    auroc, se, n = macro_auroc_se(probs, y)
    variances = [auroc_variance(y[:, k], probs[:, k])[1] for k in range(2)]
    assert n == 2
    assert np.isclose(auroc, np.mean([roc_auc_score(y[:, k], probs[:, k]) for k in range(2)]))
    assert np.isclose(se, np.sqrt(sum(variances)) / 2)


def test_val_without_negatives_says_so_and_chooses_on_loss():
    """Issue 25's 17-image folder: val held 3 positives and 0 negatives, so "val macro AUROC n/a" and an lr chosen
    on loss with no word why."""
    y = np.ones((3, 1))
    val_probs = np.stack([np.full((3, 1), 0.6), np.full((3, 1), 0.9)])
    table = sweep_table((1e-4, 1e-3), val_probs, y, [], "auroc")
    note = table["selected_by"].iloc[0]
    assert note.startswith("val_loss")
    assert "val has 3 positives and 0 negatives" in note
    assert table["chosen"].tolist() == [False, True]


def test_probe_records_train_losses_and_never_chooses_a_diverging_lr(tmp_path):
    ws = make_workspace(tmp_path / "ws", n_patients=40)
    config = ProbeConfig(lrs=(1e-3, 30.0), epochs=3, n_resamples=20, selection="auroc")
    summary = run_probe(ws, "toy", "linear", config=config, progress=False)
    table = pd.read_parquet(summary.folder / "sweep.parquet")
    assert table["diverged"].tolist() == [False, True]
    assert summary.chosen_lr == 1e-3
    assert np.isfinite(table["train_loss_start"]).all()


def test_unknown_selection_rule_is_refused():
    from pipeline.errors import ConfigError

    with pytest.raises(ConfigError, match="--selection"):
        ProbeConfig(selection="best")
