from __future__ import annotations

import json
import tarfile

import pandas as pd
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.corpus.build import CorpusConfig, SourceInput, build_corpus
from pipeline.corpus.sharding import shard_corpus
from tests.pipeline.corpus.planted import build_planted


def _shard_sources(out_dir) -> list[list[str]]:
    """The source of every sample, shard by shard, read back from the tars' json members."""
    shards = []
    for tar_path in sorted(out_dir.glob("*.tar")):
        with tarfile.open(tar_path) as tar:
            metas = [json.load(tar.extractfile(m)) for m in tar.getmembers() if m.name.endswith(".json")]
        shards.append([m["source"] for m in metas])
    return shards


def test_corpus_shards_are_source_interleaved_and_resumable(tmp_path):
    planted = build_planted(tmp_path / "data")
    sources = [SourceInput(n, planted.manifests[n], planted.roots[n]) for n in ("alpha", "beta", "gamma")]
    result = build_corpus(sources, tmp_path / "corpus.parquet", config=CorpusConfig(progress=False))
    corpus = result.corpus  # rows in source order: alpha, then beta, then gamma

    out = tmp_path / "shards"
    summary = shard_corpus(tmp_path / "corpus.parquet", out, samples_per_shard=5, progress=False)
    assert summary.n_samples == len(corpus) and summary.n_quarantined == 0
    shards = _shard_sources(out)
    assert sum(len(s) for s in shards) == len(corpus)
    assert all(len(set(s)) >= 2 for s in shards)  # in manifest order, 3 of the shards would hold one source
    index = pd.read_parquet(out / "index.parquet")
    assert len(index) == summary.n_shards == len(shards)

    again = shard_corpus(tmp_path / "corpus.parquet", out, samples_per_shard=5, progress=False)
    assert again.written == 0 and again.skipped == summary.n_shards
    assert _shard_sources(out) == shards


def test_corpus_shard_command(tmp_path):
    planted = build_planted(tmp_path / "data")
    sources = [SourceInput(n, planted.manifests[n], planted.roots[n]) for n in ("alpha", "beta")]
    build_corpus(sources, tmp_path / "ws" / "corpus" / "cxr1m.parquet", config=CorpusConfig(progress=False))
    result = CliRunner().invoke(app, ["corpus", "shard", "-w", str(tmp_path / "ws"), "--samples-per-shard", "8"])
    assert result.exit_code == 0, result.output
    assert "in 3 shards" in result.output
    assert len(list((tmp_path / "ws" / "shards" / "cxr1m").glob("cxr1m-*.tar"))) == 3
