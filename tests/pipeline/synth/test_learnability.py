"""The planted findings are learnable from simple pixel statistics; in the null cohort they are not;
and the survival layer follows its planted hazard model."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from lifelines import CoxPHFitter

from pipeline.synth import SurvivalModel, simulate_survival, truth_path
from pipeline.synth.specs import SPECS
from tests.pipeline.synth.learnability import chance_se, heldout_auroc, manifest_features

PLANTED = {
    "cxrlt24": [
        "Support Devices",
        "Lung Opacity",
        "Pleural Effusion",
        "Atelectasis",
        "Cardiomegaly",
        "Edema",
        "Pneumonia",
        "Normal",
    ],
    "chexpert": ["Atelectasis", "Cardiomegaly", "Edema", "Pleural Effusion"],
    "shenzhen": ["Tuberculosis"],
    "montgomery": ["Tuberculosis"],
    "jsrt": ["Nodule"],
}


def _aurocs(ws, dataset):
    """Held-out AUROC and its null standard error per planted finding."""
    manifest = pd.read_parquet(ws.manifest_path(dataset))
    features = manifest_features(ws.images_dir(dataset), manifest)
    train = (manifest["split"] == "train").to_numpy()
    out = {}
    for column in PLANTED[dataset]:
        labels = manifest[column].to_numpy()
        out[column] = (heldout_auroc(features, labels, train), chance_se(labels, train))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("dataset", list(PLANTED))
def test_planted_findings_are_learnable_and_null_ones_are_not(small64, dataset):
    planted = _aurocs(small64[False], dataset)
    null = _aurocs(small64[True], dataset)
    print(dataset, {k: round(v[0], 3) for k, v in planted.items()}, {k: round(v[0], 3) for k, v in null.items()})
    for finding, (auroc, se) in planted.items():
        assert auroc >= 0.7 and (auroc - 0.5) / se >= 3.3, (finding, auroc, se)  # one-sided p < 0.0005
    for finding, (auroc, se) in null.items():
        assert abs(auroc - 0.5) / se <= 3.3, (finding, auroc, se)
    z_null = [(auroc - 0.5) / se for auroc, se in null.values()]
    assert abs(np.mean(z_null)) * np.sqrt(len(z_null)) <= 3.3  # pooled: no systematic signal


def test_cox_recovers_the_planted_coefficients():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(4000, 2))
    model = SurvivalModel()
    outcomes = simulate_survival(z, rng, model)
    frame = pd.DataFrame(z, columns=["z_heart", "z_frailty"])
    frame["time"], frame["event"] = outcomes["time_cvd_years"], outcomes["death_cvd"]
    fit = CoxPHFitter().fit(frame, "time", "event")
    assert np.allclose(fit.params_.to_numpy(), model.beta_cvd, atol=0.15)
    assert 0.05 < outcomes["death_cvd"].mean() < outcomes["death_all"].mean() < 0.5
    assert (outcomes["time_all_years"] <= model.follow_up[1]).all()


def test_plco_cohort_hazard_follows_heart_size_and_not_in_null(small64):
    for null, ws in small64.items():
        truth = pd.read_parquet(truth_path(ws, "plco")).drop_duplicates("patient_id")
        frame = truth[["z_heart", "z_frailty", "time_cvd_years", "death_cvd"]]
        fit = CoxPHFitter().fit(frame, "time_cvd_years", "death_cvd")
        if null:  # the pixels' latent features are unrelated to the null outcomes
            assert fit.summary.loc["z_heart", "p"] > 0.001
        else:
            assert fit.params_["z_heart"] > 0.3 and fit.summary.loc["z_heart", "p"] < 0.01
    assert SPECS["plco"].survival


@pytest.mark.slow
def test_plco_heart_size_is_readable_from_pixels(small64):
    ws = small64[False]
    manifest = pd.read_parquet(ws.manifest_path("plco"))
    truth = pd.read_parquet(truth_path(ws, "plco"))
    features = manifest_features(ws.images_dir("plco"), manifest)
    train = (manifest["split"] == "train").to_numpy()
    from sklearn.linear_model import RidgeCV

    model = RidgeCV(alphas=np.logspace(-2, 3, 12)).fit(features[train], truth["z_heart"][train])
    r = np.corrcoef(model.predict(features[~train]), truth["z_heart"][~train])[0, 1]
    assert r > 0.5, r
