"""Which data sets `chex demo` generates, probes and pretrains on."""

from __future__ import annotations

import pytest

import pipeline.demo as demo
from pipeline.synth import DATASETS
from pipeline.workspace import Workspace


class _Stop(Exception):
    pass


@pytest.mark.parametrize("size", list(demo.SIZES))
def test_every_synthetic_set_is_probed_and_the_pretraining_corpus_leaves_ranzcr_out(monkeypatch, tmp_path, size):
    ws = Workspace(tmp_path / "ws")
    generated = {}

    def fake_cohort(workspace, size, **kwargs):
        generated["size"] = size
        return {name: workspace.manifest_path(name) for name in DATASETS}

    def fake_pretrain(workspace, plan, shard_dirs):
        generated["shards"] = [p.name for p in shard_dirs]
        raise _Stop

    monkeypatch.setattr(demo, "generate_cohort", fake_cohort)
    monkeypatch.setattr(demo, "shard_dataset", lambda *args, **kwargs: None)
    monkeypatch.setattr(demo, "_pretrain", fake_pretrain)
    with pytest.raises(_Stop):
        demo.run_demo(ws, size=size, progress=False)
    assert generated["size"] == demo.SIZES[size].cohort and "ranzcr" in DATASETS
    # the other sets' backbone is unchanged by the sets that joined later
    assert generated["shards"] == [d for d in DATASETS if d not in ("ranzcr", "scr")]
    jobs = demo._probe_jobs(list(DATASETS), demo.SIZES[size])
    assert {(b, h) for b, h, d, f in jobs if d == "ranzcr"} == {
        (demo.PRETRAINED, "linear"), (demo.PRETRAINED, "glori"), (demo.RANDOM_INIT, "linear"),
    }  # fmt: skip
    scr = {(b, h) for b, h, d, f in jobs if d == "scr"}  # segmentation: its own heads, no random-init baseline
    assert scr == {(demo.PRETRAINED, "seg_linear"), (demo.PRETRAINED, "seg_decoder")}
