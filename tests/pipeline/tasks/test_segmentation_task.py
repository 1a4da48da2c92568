"""The segmentation task end to end on a tiny planted workspace: `chex probe` trains both segmentation heads on
patch tokens that carry the mask, the run folder holds per-image scores at the mask's resolution and the prior and
oracle rows, `evaluate_run` gives the probe's numbers, `compare_runs` tests two runs, and the report writes the
Dice table (prior first) and the contour figure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from pipeline.cards import card_from_dict
from pipeline.embed.preprocess import Preprocessing
from pipeline.manifest import write_manifest
from pipeline.masks.align import to_input
from pipeline.masks.workspace import write_image_masks
from pipeline.store import Item, StoreLayout, StoreWriter, store_attrs
from pipeline.workspace import Workspace

L, D, GRID = 2, 8, 4
PRE = Preprocessing(image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3)  # short side to 32, centre crop
STRUCTURES = ["heart", "lungs"]


def _seg_workspace(root, n: int = 40) -> Workspace:
    """n one-image patients, 32 x 40 images (the crop drops 4 columns a side); the heart a random box, the lungs a
    fixed band; each patch token's first features hold its share of heart and lungs on the model's input."""
    ws = Workspace(root)
    rng = np.random.default_rng(0)
    ids = [f"seg_{k:03d}" for k in range(n)]
    split = np.where(np.arange(n) < 24, "train", np.where(np.arange(n) < 30, "val", "test"))
    frame = pd.DataFrame({"image_id": ids, "path": [f"{i}.png" for i in ids], "patient_id": ids, "split": split})
    task = {"name": "anatomy", "kind": "segmentation", "structures": STRUCTURES}
    card = card_from_dict({"name": "seg", "synthetic": True, "probe": {"epochs": 20, "batch_size": 8}, "tasks": [task]})
    card.save(ws.card_path("seg"))
    write_manifest(frame, ws.manifest_path("seg"), card)
    tokens = []
    for image_id in ids:
        top, left = rng.integers(4, 16), rng.integers(8, 22)
        heart = np.zeros((32, 40), bool)
        heart[top : top + 12, left : left + 12] = True
        lungs = np.zeros((32, 40), bool)
        lungs[2:10, 6:34] = True
        write_image_masks(ws.root, "seg", image_id, {"heart": heart, "lungs": lungs})
        ws.images_dir("seg").mkdir(parents=True, exist_ok=True)
        Image.fromarray((80 + 120 * heart + 40 * lungs).astype(np.uint8)).save(ws.images_dir("seg") / f"{image_id}.png")
        share = torch.nn.functional.avg_pool2d(to_input(np.stack([heart, lungs]), PRE)[None], 32 // GRID)[0]
        patch = torch.randn(L, GRID * GRID, D) * 0.1
        patch[:, :, 0] += 3 * share[0].flatten()
        patch[:, :, 1] += 3 * share[1].flatten()
        tokens.append(patch)
    layout = StoreLayout(L, D, GRID * GRID, 0, chunk_rows=8, unit_rows=16, patch_grid=(GRID, GRID))
    attrs = store_attrs("toy-vit", {"embed_dim": D}, "ck/model.pt", "c" * 64, [-2, -1], "float16", PRE.to_dict())
    writer = StoreWriter.open(ws.features_dir("toy-vit"), layout, attrs)
    for unit in writer.plan([Item(i, 0, group="g") for i in ids]):
        assert writer.claim(unit)
        rows = [ids.index(i) for i in unit.image_ids]
        patch = torch.stack([tokens[r] for r in rows])
        writer.write_unit(unit, {"cls": patch.mean(dim=2), "patch": patch})
    return ws


@pytest.fixture(scope="module")
def seg_runs(tmp_path_factory):
    from pipeline.probe.protocol import ProbeConfig, run_probe

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is fastest on a loaded machine
    ws = _seg_workspace(tmp_path_factory.mktemp("seg") / "ws")
    config = ProbeConfig(n_resamples=200)
    runs = {h: run_probe(ws, "seg", h, "toy-vit", config, progress=False) for h in ("seg_linear", "seg_decoder")}
    yield ws, runs
    torch.set_num_threads(threads)


def test_probe_writes_scores_at_mask_resolution_and_beats_the_prior(seg_runs):
    from pipeline.tasks.segmentation import MAPS_FILE, REFERENCE_FILE, SCORES_FILE

    _, runs = seg_runs
    for head, summary in runs.items():
        folder = summary.folder
        assert folder.name == head  # the heads' own lr grid is their default configuration: no tag
        scores = pd.read_parquet(folder / SCORES_FILE)
        assert len(scores) == 10 * 2 and (scores["pixels"] == 32 * 32).all()  # the 32 x 32 crop of 32 x 40 masks
        sweep = pd.read_parquet(folder / "sweep.parquet")
        assert sweep["lr"].tolist() == [3e-3, 1e-2, 3e-2, 1e-1] and sweep["chosen"].sum() == 1
        reference = pd.read_parquet(folder / REFERENCE_FILE)
        heart = reference["structure"] == "heart"
        prior = reference[heart & (reference["reference"] == "prior")]["dice"].mean()
        assert reference[reference["reference"] == "oracle"]["dice"].mean() > 0.97
        model = scores[scores["structure"] == "heart"]["dice"].mean()  # the heart moves: the prior cannot follow
        assert model > prior + 0.1, (head, model, prior)
        assert pd.read_parquet(folder / MAPS_FILE)["image_id"].nunique() == 4
    assert runs["seg_decoder"].test_macro_auroc > 0.8


def test_stats_and_compare_give_the_probes_numbers(seg_runs):
    from pipeline.runs import CompareConfig, compare_runs, evaluate_run
    from pipeline.tasks.base import COMPARE_COLUMNS

    _, runs = seg_runs
    folder = runs["seg_decoder"].folder
    results = pd.read_parquet(folder / "results.parquet")
    pd.testing.assert_frame_equal(
        results.reset_index(drop=True), evaluate_run(folder).reset_index(drop=True), check_dtype=False
    )
    mean = results[(results["output"] == "mean") & (results["metric"] == "dice")].iloc[0]
    assert mean["n"] == 10 and mean["ci_low"] <= mean["estimate"] <= mean["ci_high"]
    compared = compare_runs(folder, runs["seg_linear"].folder, CompareConfig(n_permutations=200))
    assert set(COMPARE_COLUMNS) <= set(compared.columns)
    row = compared[(compared["output"] == "mean") & (compared["metric"] == "dice")].iloc[0]
    assert row["diff"] == pytest.approx(row["estimate_a"] - row["estimate_b"]) and 0 < row["p_value"] <= 1


def test_report_has_the_dice_table_with_prior_first_and_the_contour_figure(seg_runs):
    from pipeline.report.write import write_report

    ws, _ = seg_runs
    summary = write_report(ws, progress=False, n_resamples=100, n_permutations=100)
    table = summary.tables["segmentation_seg"]
    labels = [row.labels[0] for row in table.panels[0].rows]
    assert labels[0].startswith("prior") and labels[-1].startswith("oracle") and len(labels) == 4
    assert table.columns == ["heart", "lungs", "mean"]
    assert any(f.name == "segmentation_seg" for f in summary.figures)
    assert not any("seg" in m and ("Linear" in m or "GLoRI" in m) for m in summary.missing)


def test_a_classification_head_on_a_segmentation_set_is_refused(seg_runs):
    from pipeline.errors import ConfigError
    from pipeline.probe.protocol import run_probe

    ws, _ = seg_runs
    with pytest.raises(ConfigError, match="segmentation task, trained on a map: use --head seg_linear or seg_decoder"):
        run_probe(ws, "seg", "linear", "toy-vit", progress=False)
