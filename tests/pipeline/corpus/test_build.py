from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pipeline.corpus.build import CorpusConfig, EvalInput, SourceInput, build_corpus, corpus_paths, read_corpus_root
from pipeline.errors import ConfigError
from pipeline.imageio import read_image
from pipeline.manifest import read_manifest
from tests.pipeline.corpus.planted import build_planted


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return build_planted(tmp_path_factory.mktemp("planted"))


def _inputs(planted):
    sources = [SourceInput(n, planted.manifests[n], planted.roots[n]) for n in ("alpha", "beta", "gamma")]
    evals = [EvalInput("evalx", planted.manifests["evalx"], planted.roots["evalx"], patient_sources=("alpha",))]
    return sources, evals


@pytest.fixture(scope="module")
def built(planted, tmp_path_factory):
    sources, evals = _inputs(planted)
    out = tmp_path_factory.mktemp("out") / "corpus.parquet"
    return build_corpus(sources, out, evals, CorpusConfig(progress=False))


def _source_id(corpus_id: str) -> str:
    return corpus_id.split("_", 1)[1] if "_" in corpus_id else corpus_id


def test_every_planted_duplicate_and_leak_is_removed_and_nothing_else(built, planted):
    removed = dict(zip(built.removed["source_image_id"], built.removed["reason"], strict=True))
    assert removed == planted.removed
    dup = built.removed[built.removed["reason"] == "duplicate"]
    assert dict(zip(dup["source_image_id"], dup["detail"], strict=True)) == planted.duplicate_of
    assert len(built.corpus) == 34 - len(planted.removed)


def test_near_duplicates_are_flagged_and_kept(built, planted):
    corpus = built.corpus.set_index("source_image_id")
    flagged = corpus[corpus["near_duplicate_of"].notna()]
    assert dict(zip(flagged.index, flagged["near_duplicate_of"], strict=True)) == planted.near_of
    assert (flagged["near_duplicate_distance"] <= 4).all()
    assert (corpus.loc[corpus["near_duplicate_of"].isna(), "near_duplicate_distance"] == -1).all()
    near_eval = corpus[corpus["near_eval_image"].notna()]
    assert dict(zip(near_eval.index, near_eval["near_eval_image"], strict=True)) == planted.near_eval
    # b09 is a09 as a 16-bit image: the same picture, not the same pixels, so it stays (flagged).
    assert corpus.loc["b09", "content_hash"] != corpus.loc["a09", "content_hash"]


def test_corpus_manifest_follows_the_contract(built, planted):
    corpus = read_manifest(built.manifest_path)
    assert corpus["image_id"].is_unique
    assert {"alpha_a08", "gamma_a08"} <= set(corpus["image_id"])  # colliding ids are prefixed, others kept
    assert "a09" in set(corpus["image_id"])
    assert (corpus["split"] == "train").all()
    assert set(corpus["source"]) == {"alpha", "beta", "gamma"}
    assert (corpus.loc[corpus["source_image_id"] == "b10", "patient_id"] == "beta:pt_leak").all()
    root = read_corpus_root(built.manifest_path)
    assert root == planted.root.resolve() / "data"
    for row in corpus.itertuples():
        pixels = read_image(root / row.path)  # every path resolves under the one recorded root
        assert pixels.ndim == 2
    assert len(set(corpus["content_hash"])) == len(corpus)


def test_report_counts_per_source_and_pair(built):
    report = json.loads(corpus_paths(built.manifest_path)["report_json"].read_text())
    per_source = {r["source"]: r for r in report["sources"]}
    assert {k: per_source[k]["kept"] for k in per_source} == {"alpha": 9, "beta": 10, "gamma": 5}
    assert per_source["gamma"]["unreadable"] == 1 and per_source["gamma"]["duplicate"] == 3
    assert per_source["alpha"]["leak_patient"] == 2 and per_source["alpha"]["paper_count"] is None
    exact = {(d["kept_source"], d["removed_source"]): d["images"] for d in report["exact_duplicates"]}
    assert exact == {("alpha", "alpha"): 1, ("alpha", "beta"): 1, ("alpha", "gamma"): 2, ("beta", "gamma"): 1}
    near = {(p["source_a"], p["source_b"]): p["pairs"] for p in report["near_duplicate_pairs"]}
    assert near == {("alpha", "beta"): 1, ("alpha", "gamma"): 1, ("beta", "gamma"): 1}
    leaks = {(c["eval_set"], c["source"], c["reason"]): c["dropped"] for c in report["contamination"]}
    assert leaks == {("evalx", "beta", "image"): 1, ("evalx", "gamma", "image"): 1, ("evalx", "alpha", "patient"): 2}
    assert report["totals"]["near_eval_flagged"] == 1
    markdown = corpus_paths(built.manifest_path)["report_md"].read_text()
    assert "MIMIC-CXR" in markdown  # Table I sources missing from this build are named


def test_drop_near_leaks_and_subset(planted, tmp_path):
    sources, evals = _inputs(planted)
    config = CorpusConfig(progress=False, drop_near_leaks=True, subset="alpha,beta")
    result = build_corpus(sources, tmp_path / "ab.parquet", evals, config)
    removed = dict(zip(result.removed["source_image_id"], result.removed["reason"], strict=True))
    assert removed == {
        "a07": "duplicate",
        "b03": "duplicate",
        "b06": "leak_image",
        "a00": "leak_patient",
        "a01": "leak_patient",
        "a11": "leak_near_image",
    }
    assert set(result.corpus["source"]) == {"alpha", "beta"}
    assert "a08" in set(result.corpus["image_id"])  # no collision without gamma


def test_rerun_after_a_kill_resumes_hashing(planted, tmp_path, monkeypatch):
    import pipeline.corpus.hashing as hashing

    sources, evals = _inputs(planted)
    real = hashing.hash_file
    calls: list[str] = []

    def dies_after_five(path: str):
        if len(calls) == 5:
            raise KeyboardInterrupt("killed")
        calls.append(path)
        return real(path)

    config = CorpusConfig(progress=False, batch_size=2)
    monkeypatch.setattr(hashing, "hash_file", dies_after_five)
    with pytest.raises(KeyboardInterrupt):
        build_corpus(sources, tmp_path / "c.parquet", evals, config)
    assert not (tmp_path / "c.parquet").exists()
    finished = set(calls[:4])  # two complete batches of 2 were cached; the third batch died

    counted: list[str] = []
    monkeypatch.setattr(hashing, "hash_file", lambda path: counted.append(path) or real(path))
    result = build_corpus(sources, tmp_path / "c.parquet", evals, config)
    assert not finished & set(counted)
    assert len(counted) == 34 + 4 - 4  # 34 corpus + 4 evaluation test images, 4 cached before the kill
    first = build_corpus(sources, tmp_path / "d.parquet", evals, CorpusConfig(progress=False))
    pd.testing.assert_frame_equal(result.corpus, first.corpus)


def test_worker_processes_give_the_same_hashes(planted, tmp_path):
    from pipeline.corpus.hashing import hash_manifest

    manifest = pd.read_parquet(planted.manifests["beta"])
    one = hash_manifest(manifest, planted.roots["beta"], tmp_path / "h1", workers=1, progress=False)
    two = hash_manifest(manifest, planted.roots["beta"], tmp_path / "h2", workers=2, batch_size=5, progress=False)
    pd.testing.assert_frame_equal(one, two)
    assert list(one["image_id"]) == list(manifest["image_id"])
    assert (
        one["error"].isna().all()
        and (one["dtype"] == np.array(["uint8"] * 2 + ["uint16"] + ["uint8"] * 6 + ["uint16"] + ["uint8"] * 2)).all()
    )


def test_bad_inputs_are_config_errors(planted, tmp_path):
    sources, _ = _inputs(planted)
    with pytest.raises(ConfigError, match="more than once"):
        build_corpus([sources[0], sources[0]], tmp_path / "x.parquet")
    with pytest.raises(ConfigError, match="cxr207k"):
        build_corpus(sources, tmp_path / "x.parquet", config=CorpusConfig(subset="cxr207k", progress=False))


@pytest.mark.slow
def test_dask_executor_gives_the_same_hashes(planted, tmp_path):
    from pipeline.corpus.hashing import hash_manifest

    manifest = pd.read_parquet(planted.manifests["gamma"])
    local = hash_manifest(manifest, planted.roots["gamma"], tmp_path / "h1", progress=False)
    dask = hash_manifest(manifest, planted.roots["gamma"], tmp_path / "h2", executor="dask", workers=2, progress=False)
    pd.testing.assert_frame_equal(local, dask)
    assert local["error"].notna().sum() == 1  # the truncated file
