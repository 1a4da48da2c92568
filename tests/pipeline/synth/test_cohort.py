"""The synthetic cohort on disk: layout, cards, splits, labels, determinism, idempotence."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from pipeline.cards import load_card, packaged_card
from pipeline.errors import ConfigError
from pipeline.manifest import read_manifest, within_horizon
from pipeline.synth import DATASETS, generate_cohort, read_params, truth_path
from pipeline.synth.cohort import params_path
from pipeline.synth.findings import has_signature
from pipeline.synth.render import PatientJob, render_pixels
from pipeline.synth.specs import COMMON_PREVALENCE, SPECS, TINY_IMAGES
from pipeline.workspace import Workspace
from tests.pipeline.synth.conftest import image_bytes


def test_tiny_cohort_is_eight_valid_data_sets(tiny_ws):
    assert tiny_ws.datasets() == sorted(DATASETS)
    all_ids = []
    for name in DATASETS:
        card = load_card(tiny_ws.card_path(name))
        assert card.synthetic and card.label_columns == packaged_card(name).label_columns
        manifest = read_manifest(tiny_ws.manifest_path(name), card)
        assert len(manifest) == TINY_IMAGES[name]
        assert manifest["image_id"].str.fullmatch(rf"{name}_p\d{{5}}_\d+").all()
        assert not manifest["image_id"].str.contains(".", regex=False).any()
        assert (manifest["image_id"] + ".png").equals(manifest["path"])
        assert set(manifest["view"]) <= {"PA", "AP"}
        assert manifest.groupby("patient_id")["split"].nunique().max() == 1
        all_ids += list(manifest["image_id"])
        first = tiny_ws.images_dir(name) / manifest["path"].iloc[0]
        with Image.open(first) as image:
            assert image.size == (64, 64)
            assert image.mode == ("I;16" if SPECS[name].bit_depth == 16 else "L")  # JSRT and its SCR masks set
        assert len(list(tiny_ws.images_dir(name).glob("*.png"))) == len(manifest)
    assert len(all_ids) == len(set(all_ids))
    assert 580 <= len(all_ids) <= 680


def test_tiny_val_and_test_hold_positives_of_common_findings(tiny_ws):
    for name in DATASETS:
        spec = SPECS[name]
        manifest = pd.read_parquet(tiny_ws.manifest_path(name))
        for finding, prevalence in spec.prevalence.items():
            if prevalence < COMMON_PREVALENCE:
                continue
            for split in set(manifest["split"]) - {"train"}:
                positives = (manifest.loc[manifest["split"] == split, finding] == 1).sum()
                assert positives >= 2, (name, finding, split, positives)


def test_several_images_per_patient_with_per_image_variation(tiny_ws):
    manifest = pd.read_parquet(tiny_ws.manifest_path("cxrlt24"))
    per_patient = manifest.groupby("patient_id").size()
    assert per_patient.max() >= 3 and 2.0 <= per_patient.mean() <= 3.0
    truth = pd.read_parquet(truth_path(tiny_ws, "cxrlt24"))
    assert truth["image_id"].equals(manifest["image_id"])
    effusion = manifest.groupby("patient_id")["Pleural Effusion"].agg(["min", "max"])
    assert ((effusion["max"] == 1) & (effusion["min"] == 0)).any()  # present on some images only
    # Labels are the painted truth; Normal is exactly "no other finding".
    findings = [c for c in packaged_card("cxrlt24").label_columns if c != "Normal"]
    painted = truth[[f"shown:{f}" for f in findings]].to_numpy()
    assert np.array_equal(painted, manifest[findings].to_numpy())
    assert np.array_equal(manifest["Normal"].to_numpy(), (painted.sum(axis=1) == 0).astype(float))


def test_chexpert_train_labels_have_uncertain_and_blank_values(tiny_ws):
    manifest = pd.read_parquet(tiny_ws.manifest_path("chexpert"))
    columns = packaged_card("chexpert").label_columns
    train = manifest[manifest["split"] == "train"][columns].to_numpy()
    heldout = manifest[manifest["split"] != "train"][columns].to_numpy()
    assert (train == -1).sum() > 0 and np.isnan(train).sum() > 0
    assert set(np.unique(heldout)) <= {0.0, 1.0}


def test_plco_survival_columns_are_consistent(tiny_ws):
    manifest = read_manifest(tiny_ws.manifest_path("plco"), load_card(tiny_ws.card_path("plco")))
    assert manifest["death_all"].sum() > 0
    assert (manifest["death_cvd"] <= manifest["death_all"]).all()  # CVD death is a subset of all deaths
    assert np.allclose(manifest["time_cvd_years"], manifest["time_all_years"])
    expected = within_horizon(manifest["time_all_years"], manifest["death_all"], 12.0)
    assert np.array_equal(manifest["death_all_12y"].to_numpy(), expected, equal_nan=True)
    per_patient = manifest.groupby("patient_id")[["time_all_years", "death_all"]].nunique()
    assert (per_patient == 1).all().all()


def test_every_finding_column_has_a_pixel_signature():
    columns = {c for name in DATASETS for c in packaged_card(name).label_columns}
    columns -= {"Normal", "death_cvd_12y", "death_all_12y"}
    # the 40 CXR-LT findings but Normal (no signature: the absence of all) and RANZCR's 11 line labels
    assert len(columns) == 39 + 11
    plain = PatientJob("cxrlt24", 0, 7, ("x",), ("PA",), ((),), 0.0, 0.0, 96, 8, "")
    base = render_pixels(plain)[0].astype(float)
    for column in sorted(columns):
        assert has_signature(column), column
        job = PatientJob("cxrlt24", 0, 7, ("x",), ("PA",), ((column,),), 0.0, 0.0, 96, 8, "")
        diff = np.abs(render_pixels(job)[0].astype(float) - base)
        assert diff.max() >= 12, (column, diff.max())  # a visible local change (>= ~5% of the range)


def test_same_seed_same_bytes_any_worker_count(tmp_path):
    a, b, c = (Workspace(tmp_path / n) for n in ("a", "b", "c"))
    generate_cohort(a, size="tiny", seed=3, datasets=["cxrlt24", "jsrt"], progress=False)
    generate_cohort(b, size="tiny", seed=3, datasets=["cxrlt24", "jsrt"], workers=2, progress=False)
    generate_cohort(c, size="tiny", seed=4, datasets=["cxrlt24"], progress=False)
    for name in ("cxrlt24", "jsrt"):
        assert image_bytes(a, name) == image_bytes(b, name)
        assert a.manifest_path(name).read_bytes() == b.manifest_path(name).read_bytes()
    assert image_bytes(a, "cxrlt24") != image_bytes(c, "cxrlt24")


def test_rerun_skips_resumes_and_regenerates(tmp_path):
    ws = Workspace(tmp_path / "ws")
    generate_cohort(ws, size="tiny", datasets=["montgomery"], progress=False)
    manifest = ws.manifest_path("montgomery")
    stamp = manifest.stat().st_mtime_ns
    generate_cohort(ws, size="tiny", datasets=["montgomery"], progress=False)
    assert manifest.stat().st_mtime_ns == stamp  # same parameters: skipped
    before = image_bytes(ws, "montgomery")

    # A run killed midway: the sidecar says incomplete, some images are missing; a rerun completes it.
    record = json.loads(params_path(ws, "montgomery").read_text())
    params_path(ws, "montgomery").write_text(json.dumps({**record, "complete": False}))
    for path in sorted(ws.images_dir("montgomery").glob("*.png"))[:10]:
        path.unlink()
    generate_cohort(ws, size="tiny", datasets=["montgomery"], progress=False)
    assert image_bytes(ws, "montgomery") == before
    assert read_params(ws, "montgomery")["complete"] is True

    generate_cohort(ws, size="tiny", datasets=["montgomery"], image_size=48, progress=False)
    assert read_params(ws, "montgomery")["params"]["image_size"] == 48
    with Image.open(next(ws.images_dir("montgomery").glob("*.png"))) as image:
        assert image.size == (48, 48)
    assert len(list(ws.images_dir("montgomery").glob("*.png"))) == TINY_IMAGES["montgomery"]


def test_null_cohort_same_pixels_independent_labels(tmp_path):
    planted, null = Workspace(tmp_path / "p"), Workspace(tmp_path / "n")
    generate_cohort(planted, size="tiny", datasets=["chexpert"], progress=False)
    generate_cohort(null, size="tiny", datasets=["chexpert"], null=True, progress=False)
    assert image_bytes(planted, "chexpert") == image_bytes(null, "chexpert")
    a = pd.read_parquet(planted.manifest_path("chexpert"))
    b = pd.read_parquet(null.manifest_path("chexpert"))
    assert a[["image_id", "patient_id", "split"]].equals(b[["image_id", "patient_id", "split"]])
    assert not a["Pleural Effusion"].equals(b["Pleural Effusion"])
    assert read_params(null, "chexpert")["params"]["null"] is True


def test_bad_options_are_config_errors(tmp_path):
    ws = Workspace(tmp_path / "ws")
    with pytest.raises(ConfigError, match="--size"):
        generate_cohort(ws, size="huge", progress=False)
    with pytest.raises(ConfigError, match="unknown synthetic data set"):
        generate_cohort(ws, size="tiny", datasets=["mnist"], progress=False)
    with pytest.raises(ConfigError, match="--image-size"):
        generate_cohort(ws, size="tiny", image_size=8, progress=False)
    real = ws.manifest_path("jsrt")
    real.parent.mkdir(parents=True)
    real.write_bytes(b"a real manifest")
    with pytest.raises(ConfigError, match="not made by `chex synth`"):
        generate_cohort(ws, size="tiny", datasets=["jsrt"], progress=False)
    assert real.read_bytes() == b"a real manifest"


def test_small_cxrlt24_test_split_has_every_finding(small64):
    manifest = pd.read_parquet(small64[False].manifest_path("cxrlt24"))
    test = manifest[manifest["split"] == "test"]
    columns = packaged_card("cxrlt24").label_columns
    missing = [c for c in columns if (test[c] == 1).sum() == 0]
    assert missing == []
    assert re.fullmatch(r"\d+", str(len(manifest))) and 1000 <= len(manifest) <= 1200


def test_acquisition_variation_is_opt_in_and_label_independent(tmp_path):
    import dataclasses

    plain = PatientJob("cxrlt24", 0, 7, ("x", "y"), ("PA", "PA"), ((), ()), 0.0, 0.0, 96, 8, "")
    varied = dataclasses.replace(plain, variation=True)
    mild, wide = render_pixels(plain), render_pixels(varied)
    assert not np.array_equal(mild[0], wide[0])
    ws = Workspace(tmp_path / "ws")
    generate_cohort(ws, size="tiny", seed=0, datasets=["jsrt"], progress=False)
    before = image_bytes(ws, "jsrt")
    labels = pd.read_parquet(ws.manifest_path("jsrt"))
    generate_cohort(ws, size="tiny", seed=0, datasets=["jsrt"], progress=False, variation=True)
    assert read_params(ws, "jsrt")["params"]["variation"] is True
    assert image_bytes(ws, "jsrt") != before  # other parameters: the images are made again
    assert pd.read_parquet(ws.manifest_path("jsrt")).equals(labels)  # the labels do not depend on it
