"""The CLIP families' text side, built by chex with torch + `tokenizers` from the release files, against the
original libraries: token ids equal the library tokenizer's on medical prompts, text embeddings equal the
library's `encode_text` / `get_text_features`, and the image projection + logit scale are the model's."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.backbone.found import inspect_path
from pipeline.backbone.registry import get_family
from pipeline.errors import CheckpointError
from tests.pipeline.zeroshot import release_models
from tests.pipeline.zeroshot.release_models import PROMPTS

open_clip = pytest.importorskip("open_clip")
transformers = pytest.importorskip("transformers")


def _ids(tok, prompts):
    ids, mask = tok.encode(prompts)
    return [row[m].tolist() for row, m in zip(ids, mask, strict=True)]


def _unpadded(rows, pad_after_eot=None):
    return [[int(t) for t in row if t != 0] for row in rows]


def test_chexzero_text_side_equals_open_clip(tmp_path):
    model, reference_tok, path = release_models.chexzero(tmp_path / "chexzero")
    side = get_family("chexzero").image_text(inspect_path(path))
    assert _ids(side.tokenizer, PROMPTS) == _unpadded(reference_tok(PROMPTS).tolist())
    with torch.no_grad():
        want = torch.nn.functional.normalize(model.encode_text(reference_tok(PROMPTS)), dim=-1)
    np.testing.assert_allclose(side.text_embeddings(PROMPTS).numpy(), want.numpy(), atol=1e-5)
    assert side.logit_scale == pytest.approx(float(model.logit_scale.detach().exp()))
    np.testing.assert_array_equal(side.image_projection.numpy(), model.visual.proj.detach().T.numpy())


def test_chexzero_without_the_bpe_file_names_it(tmp_path):
    _, _, path = release_models.chexzero(tmp_path / "chexzero")
    (path.parent / "bpe_simple_vocab_16e6.txt.gz").unlink()
    with pytest.raises(CheckpointError, match=r"bpe_simple_vocab_16e6\.txt\.gz"):
        get_family("chexzero").image_text(inspect_path(path))


@pytest.mark.parametrize("files", ["tokenizer.json", "vocab.json + merges.txt"])
def test_pubmedclip_text_side_equals_transformers(tmp_path, files):
    model, reference_tok, folder = release_models.pubmedclip(tmp_path / "pubmed-clip")
    if files != "tokenizer.json":
        (folder / "tokenizer.json").unlink(missing_ok=True)
    else:
        assert (folder / "tokenizer.json").is_file()
    side = get_family("pubmedclip").image_text(inspect_path(folder))
    assert _ids(side.tokenizer, PROMPTS) == reference_tok(PROMPTS, truncation=True, max_length=77)["input_ids"]
    batch = reference_tok(PROMPTS, padding=True, truncation=True, max_length=77, return_tensors="pt")
    with torch.no_grad():
        want = model.get_text_features(**batch)
        want = getattr(want, "pooler_output", want)
    np.testing.assert_allclose(side.text_embeddings(PROMPTS).numpy(), torch.nn.functional.normalize(want, dim=-1),
                               atol=1e-5)  # fmt: skip
    assert side.logit_scale == pytest.approx(float(model.logit_scale.detach().exp()))
    np.testing.assert_array_equal(side.image_projection.numpy(), model.visual_projection.weight.detach().numpy())


@pytest.mark.parametrize("files", ["tokenizer.json", "vocab.txt"])
def test_biomedclip_text_side_equals_open_clip(tmp_path, files):
    model, reference_tok, folder = release_models.biomedclip(tmp_path / "BiomedCLIP")
    if files != "tokenizer.json":
        (folder / "tokenizer.json").unlink()
    side = get_family("biomedclip").image_text(inspect_path(folder))
    ref_ids = reference_tok(PROMPTS)
    assert _ids(side.tokenizer, PROMPTS) == _unpadded(ref_ids.tolist())
    with torch.no_grad():
        want = torch.nn.functional.normalize(model.encode_text(ref_ids), dim=-1)
    np.testing.assert_allclose(side.text_embeddings(PROMPTS).numpy(), want.numpy(), atol=1e-5)
    assert side.logit_scale == pytest.approx(float(model.logit_scale.detach().exp()))
    np.testing.assert_array_equal(side.image_projection.numpy(), model.visual.head.proj.weight.detach().numpy())


def test_missing_tokenizer_files_are_named(tmp_path):
    _, _, folder = release_models.biomedclip(tmp_path / "BiomedCLIP")
    for name in ("tokenizer.json", "vocab.txt"):
        (folder / name).unlink()
    with pytest.raises(CheckpointError, match=r"tokenizer\.json or vocab\.txt"):
        get_family("biomedclip").image_text(inspect_path(folder))


def test_a_family_without_text_tower_says_so(tmp_path):
    with pytest.raises(CheckpointError, match="no text tower"):
        get_family("rad-dino").image_text(None)
