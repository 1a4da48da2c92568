"""Zero-shot end to end through the CLI, for each CLIP family: tiny random-init models built and saved by the
original libraries in their release layouts (with tokenizer files), `chex embed`, then `chex zeroshot`; the
probabilities in predictions.parquet equal the library's own zero-shot (softmax over the positive / negative
prompt similarities times its logit scale, on its own preprocessing) to fp16 storage error, and the run folder
goes through `chex stats` like a probe run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from typer.testing import CliRunner

from pipeline.cards import card_from_dict
from pipeline.cli import app
from pipeline.manifest import write_manifest
from pipeline.workspace import Workspace
from tests.pipeline.zeroshot import release_models

open_clip = pytest.importorskip("open_clip")
transformers = pytest.importorskip("transformers")
runner = CliRunner()
FINDINGS = ["Pleural_Effusion", "Cardiomegaly"]
PREDICTION_COLUMNS = ["dataset", "backbone", "head", "label_fraction", "seed", "lr", "image_id", "patient_id", "split",
                      "output", "score", "label"]  # fmt: skip


def _workspace(root, side: int) -> Workspace:
    """12 patients, one grey square image each (side x side, so every family's resize is the identity),
    train / val / test, two findings with both classes in val and test."""
    ws = Workspace(root)
    rng = np.random.default_rng(0)
    images = ws.images_dir("cxr")
    images.mkdir(parents=True)
    rows = []
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (side, side), dtype=np.uint8), mode="L").save(images / f"p{i}.png")
        split = "train" if i < 4 else "val" if i < 8 else "test"
        rows.append({"image_id": f"cxr_{i}", "path": f"p{i}.png", "patient_id": f"p{i}", "split": split,
                     FINDINGS[0]: float(i % 2), FINDINGS[1]: float(i % 4 < 2)})  # fmt: skip
    card = card_from_dict({"name": "cxr", "tasks": [{"name": "findings", "kind": "multilabel", "columns": FINDINGS}]})
    ws.manifests_dir.mkdir(parents=True, exist_ok=True)
    card.save(ws.card_path("cxr"))
    write_manifest(pd.DataFrame(rows), ws.manifest_path("cxr"), card)
    return ws


def _pil(ws: Workspace) -> dict[str, Image.Image]:
    return {f"cxr_{i}": Image.open(ws.images_dir("cxr") / f"p{i}.png").convert("L") for i in range(12)}


def _softmax(images, texts, scale, prompts):
    """(N, K) p(positive): texts(list of prompts) -> unit (n, E); each side's prompts averaged, renormalised."""
    images = F.normalize(images, dim=-1)
    cols = []
    for positive, negative in prompts:
        pos = F.normalize(F.normalize(texts(positive), dim=-1).mean(0), dim=-1)
        neg = F.normalize(F.normalize(texts(negative), dim=-1).mean(0), dim=-1)
        cols.append(torch.softmax(scale * torch.stack([images @ pos, images @ neg], dim=-1), dim=-1)[:, 0])
    return torch.stack(cols, dim=1).numpy()


DEFAULT_PROMPTS = [(["Pleural Effusion"], ["no Pleural Effusion"]), (["Cardiomegaly"], ["no Cardiomegaly"])]


def _reference_chexzero(model, tok, pil, prompts):
    from torchvision.transforms import Normalize

    norm = Normalize((101.48761,) * 3, (83.43944,) * 3)
    x = torch.stack([norm(torch.from_numpy(np.asarray(im, dtype=np.float32)).expand(3, -1, -1)) for im in pil])
    with torch.no_grad():
        return _softmax(model.encode_image(x), lambda p: model.encode_text(tok(p)), model.logit_scale.exp(), prompts)


def _reference_biomedclip(model, tok, pil, prompts):
    from open_clip.transform import image_transform

    transform = image_transform(224, is_train=False, mean=release_models.BIOMEDCLIP_MEAN,
                                std=release_models.BIOMEDCLIP_STD)  # fmt: skip
    x = torch.stack([transform(im.convert("RGB")) for im in pil])
    with torch.no_grad():
        return _softmax(model.encode_image(x), lambda p: model.encode_text(tok(p)), model.logit_scale.exp(), prompts)


def _reference_pubmedclip(model, tok, pil, prompts):
    processor = transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    x = processor([im.convert("RGB") for im in pil], return_tensors="pt")["pixel_values"]

    def texts(p):
        out = model.get_text_features(**tok(p, padding=True, return_tensors="pt"))
        return getattr(out, "pooler_output", out)

    with torch.no_grad():
        image = model.get_image_features(pixel_values=x)
        return _softmax(getattr(image, "pooler_output", image), texts, model.logit_scale.exp(), prompts)


CASES = {
    "chexzero": (release_models.chexzero, 32, ["--num-heads", "2"], _reference_chexzero),
    "biomedclip": (release_models.biomedclip, 224, [], _reference_biomedclip),
    "pubmedclip": (release_models.pubmedclip, 32, [], _reference_pubmedclip),
}


def _embed(tmp_path, family):
    build, side, extra, reference = CASES[family]
    model, tok, path = build(tmp_path / "release" / family)
    ws = _workspace(tmp_path / "ws", side)
    result = runner.invoke(app, ["embed", "cxr", "--checkpoint", str(path), "--backbone", family, "--workers", "0",
                                 "-w", str(ws.root), "--quiet", "--layers", "2", *extra])  # fmt: skip
    assert result.exit_code == 0, result.output
    return ws, model, tok, path, reference


def _predicted(folder) -> pd.DataFrame:
    frame = pd.read_parquet(folder / "predictions.parquet")
    assert list(frame.columns) == PREDICTION_COLUMNS
    return frame.pivot(index="image_id", columns="output", values="score")


@pytest.mark.slow
@pytest.mark.parametrize("family", list(CASES))
def test_zeroshot_equals_the_library_and_is_an_ordinary_run(tmp_path, family):
    ws, model, tok, _, reference = _embed(tmp_path, family)
    result = runner.invoke(app, ["zeroshot", "--dataset", "cxr", "--backbone", family, "-w", str(ws.root), "--quiet"])
    assert result.exit_code == 0, result.output
    folder = ws.results_dir("cxr", family, "zeroshot")
    got = _predicted(folder)
    pil = _pil(ws)
    want = reference(model, tok, [pil[i] for i in got.index], DEFAULT_PROMPTS)
    np.testing.assert_allclose(got[FINDINGS].to_numpy(), want, atol=2e-3)
    assert set(pd.read_parquet(folder / "val_predictions.parquet")["split"]) == {"val"}
    stats = runner.invoke(app, ["stats", str(folder), "--resamples", "20"])
    assert stats.exit_code == 0, stats.output
    assert "macro" in stats.output


@pytest.mark.slow
def test_a_prompt_file_overrides_and_gets_its_own_folder(tmp_path):
    ws, model, tok, _, reference = _embed(tmp_path, "pubmedclip")
    prompts = tmp_path / "prompts.yaml"
    prompts.write_text(
        "Cardiomegaly:\n  positive: [cardiomegaly, enlarged heart]\n  negative: [no cardiomegaly, normal heart size]\n"
    )
    result = runner.invoke(app, ["zeroshot", "--dataset", "cxr", "-w", str(ws.root), "--prompts", str(prompts),
                                 "--quiet"])  # fmt: skip
    assert result.exit_code == 0, result.output
    (folder,) = ws.results_dir("cxr", "pubmedclip", "").glob("zeroshot@*")
    got = _predicted(folder)
    chosen = [DEFAULT_PROMPTS[0], (["cardiomegaly", "enlarged heart"], ["no cardiomegaly", "normal heart size"])]
    pil = _pil(ws)
    np.testing.assert_allclose(got[FINDINGS].to_numpy(), reference(model, tok, [pil[i] for i in got.index], chosen),
                               atol=2e-3)  # fmt: skip


@pytest.mark.slow
def test_a_missing_tokenizer_is_refused_naming_the_file(tmp_path):
    ws, _, _, path, _ = _embed(tmp_path, "chexzero")
    (path.parent / "bpe_simple_vocab_16e6.txt.gz").unlink()
    result = runner.invoke(app, ["zeroshot", "--dataset", "cxr", "-w", str(ws.root)])
    assert result.exit_code == 2
    assert "bpe_simple_vocab_16e6.txt.gz" in result.output and "Traceback" not in result.output


def test_a_malformed_prompt_file_is_refused_before_any_work(tmp_path):
    prompts = tmp_path / "prompts.yaml"
    prompts.write_text("Cardiomegaly: [only one side]\n")
    result = runner.invoke(app, ["zeroshot", "--dataset", "cxr", "-w", str(tmp_path / "ws"), "--prompts", str(prompts)])
    assert result.exit_code == 2
    assert "Cardiomegaly" in result.output and "positive" in result.output
    result = runner.invoke(app, ["zeroshot", "--dataset", "cxr", "-w", str(tmp_path / "ws"), "--scale", "big"])
    assert result.exit_code == 2 and "--scale" in result.output


@pytest.mark.slow
def test_compare_and_report_treat_the_zeroshot_run_like_a_probe_run(tmp_path):
    ws, *_ = _embed(tmp_path, "pubmedclip")
    common = ["--dataset", "cxr", "-w", str(ws.root), "--quiet", "--resamples", "20"]
    assert runner.invoke(app, ["zeroshot", *common]).exit_code == 0
    probe = runner.invoke(app, ["probe", "--head", "linear", *common, "--lrs", "0.01", "--epochs", "2"])
    assert probe.exit_code == 0, probe.output
    zeroshot = ws.results_dir("cxr", "pubmedclip", "zeroshot")
    (linear,) = ws.results_dir("cxr", "pubmedclip", "").glob("linear@*")  # --lrs/--epochs: a tagged configuration
    compare = runner.invoke(app, ["compare", str(zeroshot), str(linear), "--permutations", "50"])
    assert compare.exit_code == 0, compare.output
    report = runner.invoke(app, ["report", "-w", str(ws.root), "--out", str(tmp_path / "report"), "--resamples", "20",
                                 "--permutations", "20"])  # fmt: skip
    assert report.exit_code == 0, report.output
    table = (tmp_path / "report" / "tables" / "table3_alignment.md").read_text()
    assert "Table III" in table and "Zero-shot" in table and "Linear" in table
    assert "Zero-shot" in (tmp_path / "report" / "tables" / "table2_performance.md").read_text()


def test_a_store_of_a_family_without_text_tower_is_refused(tmp_path):
    from types import SimpleNamespace

    from pipeline.errors import CheckpointError
    from pipeline.zeroshot.run import ZeroShotConfig, image_text_of

    store = SimpleNamespace(path=tmp_path / "features" / "rad-dino", attrs={"family": "rad-dino", "checkpoint": "x"})
    with pytest.raises(CheckpointError, match="no text tower"):
        image_text_of(store, ZeroShotConfig())


def test_argument_and_prompt_file_errors_come_before_torch(tmp_path):
    import subprocess
    import sys

    prompts = tmp_path / "prompts.json"
    prompts.write_text('{"Cardiomegaly": {"positive": ["cardiomegaly"]}}')
    code = (
        "import sys; from typer.testing import CliRunner; from pipeline.cli import app; "
        f"r = CliRunner().invoke(app, ['zeroshot', '--dataset', 'cxr', '--prompts', {str(prompts)!r}]); "
        "print(r.exit_code, 'torch' in sys.modules); print(r.output)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.startswith("2 False"), out
    assert "Cardiomegaly" in out
