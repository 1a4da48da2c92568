"""GLoRI attention of abnormal tubes with the planted tip marked (pipeline/report/tubes.py), on a tiny synthetic
RANZCR cohort and a GLoRI run folder written through pipeline.runs whose maps are known."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pandas as pd
import pytest

from pipeline.probe.results import attention_positions
from pipeline.report import write_report
from pipeline.report.tubes import tip_attention
from pipeline.runs import RunFolder, StatsConfig, evaluate_run, write_attention, write_parquet, write_record
from pipeline.synth import generate_cohort
from pipeline.synth.tips import planted_tips
from pipeline.workspace import Workspace
from tests.pipeline.report.fabricate import fabricated_record

SIZE, GRID = 64, 8
ABNORMAL = ("ETT - Abnormal", "NGT - Abnormal", "CVC - Abnormal")


def test_uniform_attention_puts_the_uniform_share_near_the_tip_and_a_peak_puts_all():
    box = (0, 0, 64, 64)  # 8 px patches
    tips = np.array([[27.5, 35.5], [3.5, 59.5]])  # patch centres: (row 4, col 3); the corner (row 7, col 0)
    uniform = np.ones((2, GRID, GRID))
    near, share = tip_attention(uniform, tips, box)
    assert np.allclose(near, share)
    assert share[0] == pytest.approx(5 / 64)  # its own patch and the four edge neighbours within one patch
    assert share[1] == pytest.approx(3 / 64)  # in a corner: itself and two neighbours
    peak = np.zeros((2, GRID, GRID))
    peak[0, 4, 3] = 2.0  # (row, col) of the tip's patch
    peak[1, 0, 0] = 1.0  # far from the second tip
    near, _ = tip_attention(peak, tips, box)
    assert near[0] == pytest.approx(1.0) and near[1] == pytest.approx(0.0)
    # a crop box: the grid spans a centred square, so the same tip falls one patch further up-left
    near, _ = tip_attention(peak[:1], tips[:1] + 8, (8, 8, 64, 64))
    assert near[0] == pytest.approx(1.0)


def test_attention_images_take_the_positives_of_each_output_in_turns_rarest_first():
    labels = np.zeros((10, 3))
    labels[:, 0] = 1  # common
    labels[7, 1] = 1  # rare: only the 8th image
    labels[9, 2] = np.nan
    labels[5, 2] = 1
    positions = np.arange(100, 110)
    assert list(attention_positions(labels, 2, positions)) == [105, 107]  # the two rarest outputs' positives
    assert list(attention_positions(labels, 4, positions)) == [100, 101, 105, 107]  # then the first others
    assert list(attention_positions(labels, 20, positions)) == list(positions)
    labels[8, 1] = 1  # a second positive of a rare output comes before the common output's second
    assert list(attention_positions(labels, 4, positions)) == [100, 105, 107, 108]


@pytest.fixture(scope="module")
def tube_report(tmp_path_factory):
    """A 120-image 64-px synthetic RANZCR cohort and one GLoRI run whose abnormal queries attend to the tip's
    patch on half the abnormal test images (uniform elsewhere)."""
    ws = Workspace(tmp_path_factory.mktemp("tubes") / "ws")
    generate_cohort(ws, size="tiny", datasets=["ranzcr"], n_images={"ranzcr": 120}, image_size=SIZE, progress=False)
    manifest = pd.read_parquet(ws.manifest_path("ranzcr"))
    outputs = [c for c in manifest.columns if " - " in c or c.startswith("Swan")]
    test = manifest[manifest["split"] == "test"].reset_index(drop=True)
    long = test.melt(id_vars=["image_id", "patient_id", "split"], value_vars=outputs, var_name="output",
                     value_name="label")  # fmt: skip
    rng = np.random.default_rng(0)
    long["score"] = 1 / (1 + np.exp(-(2 * long["label"] - 1 + rng.normal(size=len(long)))))
    folder = RunFolder.of(ws, "ranzcr", "vits-a", "glori", 1.0).root
    write_parquet(long.assign(dataset="ranzcr", backbone="vits-a", head="glori", label_fraction=1.0, seed=0,
                              lr=1e-3), folder / "predictions.parquet")  # fmt: skip
    record = dataclasses.replace(
        fabricated_record("ranzcr", "vits-a", "glori", 1.0, outputs, 20, ws.root / "features"), synthetic=True,
    )  # fmt: skip
    write_parquet(evaluate_run(folder, StatsConfig.for_run(record), record), folder / "results.parquet")
    write_record(record, folder)

    ids = list(test["image_id"])
    tips = planted_tips(ws, "ranzcr", ids)
    maps = np.full((len(ids), len(outputs), GRID * GRID), 1.0 / GRID**2, dtype=np.float32)
    attended = []
    for finding in ABNORMAL:
        mine = tips[(tips["finding"] == finding) & tips["on_image"]].reset_index(drop=True)
        for j, row in mine.iterrows():
            if j % 2 == 0:  # every other abnormal image: all attention on the tip's patch
                patch = SIZE / GRID  # pixel c spans [c, c + 1): the tip's continuous position is c + 0.5
                cell = int((row["y"] + 0.5) // patch) * GRID + int((row["x"] + 0.5) // patch)
                k, i = outputs.index(finding), ids.index(row["image_id"])
                maps[i, k] = 0.0
                maps[i, k, cell] = 1.0
                attended.append((finding, row["image_id"]))
    write_attention(RunFolder(folder).attention_path, ids, outputs, maps, np.full((len(ids), len(outputs)), 0.5),
                    grid=(GRID, GRID))  # fmt: skip
    report = write_report(ws, progress=False, n_resamples=20, n_permutations=20)
    return ws, report, tips[tips["image_id"].isin(ids) & tips["on_image"]], attended


def test_the_report_marks_abnormal_tips_and_measures_attention_there(tube_report):
    _, report, tips, attended = tube_report
    (figure,) = [f for f in report.figures if f.name == "tube_tips_ranzcr_vits-a"]
    assert all(p.is_file() and p.stat().st_size > 0 for p in figure.paths)
    assert figure.title.startswith("SYNTHETIC") and "cyan ring marks the planted tip" in figure.caption
    assert "RANZCR CLiP" in figure.title and report.tables["table2_performance"].columns == ["RANZCR CLiP"]
    measured = 0
    for finding in ABNORMAL:
        n = int((tips["finding"] == finding).sum())
        sentence = re.search(rf"{re.escape(finding)}: (\d+)% of the query's attention lies within 8 px of the "
                             rf"planted tip, against (\d+)% for uniform attention.*?\((\d+) abnormal test image",
                             figure.caption)  # fmt: skip
        if n == 0:
            assert sentence is None
            assert any(f"'{finding}' tip" in m for m in report.missing)
            continue
        measured += 1
        near, uniform, count = (int(g) for g in sentence.groups())
        assert count == n
        # the attended images put all their mass on the tip's own patch, the others the uniform share
        mine = tips[tips["finding"] == finding]
        hit = mine["image_id"].isin([i for f, i in attended if f == finding]).to_numpy()
        _, share = tip_attention(np.ones((n, GRID, GRID)), mine[["x", "y"]].to_numpy(float), (0, 0, SIZE, SIZE))
        assert near == round(100 * np.where(hit, 1.0, share).mean())
        assert uniform == round(100 * share.mean()) and near > uniform
    assert measured >= 2
    index = (report.out_dir / "index.md").read_text()
    assert "attention at abnormal tube tips" in index and "tube_tips_ranzcr_vits-a.png" in index


@pytest.mark.slow
def test_a_tiny_embedded_and_probed_ranzcr_run_gets_the_tip_figure(tmp_path):
    """The whole path on a tiny synthetic cohort: embed (random-init tiny ViT, 4x4 grid), GLoRI probe saving maps
    of a positive of each finding, report with the planted tips marked."""
    from pipeline.embed import EmbedOptions, embed_datasets
    from pipeline.probe import ProbeConfig, run_probe
    from tests.pipeline.embed.helpers import make_checkpoint

    ws = Workspace(tmp_path / "ws")
    generate_cohort(ws, size="tiny", datasets=["ranzcr"], n_images={"ranzcr": 120}, image_size=SIZE, progress=False)
    make_checkpoint(ws)
    embed_datasets(ws, ["ranzcr"], ws.checkpoints_dir("tiny"), backbone_name="tiny",
                   options=EmbedOptions(workers=0, batch_size=32, progress=False))  # fmt: skip
    config = ProbeConfig(n_resamples=20, epochs=2, lrs=(1e-3,), save_attention=12,
                         head_options={"embed_dim": 16, "ffn_dim": 32})  # fmt: skip
    run_probe(ws, "ranzcr", "glori", backbone="tiny", config=config, progress=False)
    report = write_report(ws, progress=False, n_resamples=20, n_permutations=20)
    (figure,) = [f for f in report.figures if f.name == "tube_tips_ranzcr_tiny"]
    assert "(4x4) on the highest-scored test image whose planted tip is abnormal" in figure.caption
    assert re.search(r"- Abnormal: \d+% of the query's attention lies within 16 px of the planted tip", figure.caption)
