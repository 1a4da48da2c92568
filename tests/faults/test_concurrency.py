"""Two `chex embed` processes on one store at once cooperate on disjoint units; the store stays correct."""

from __future__ import annotations

import json
import re
import subprocess

import numpy as np
import pytest
import torch

from tests.faults.conftest import REPO, chex_cmd, chex_env, flat, make_image_workspace, make_tiny_checkpoint


def _expected(ws, frame) -> dict[str, np.ndarray]:
    """Tokens computed here, independently of the embed stage's loop and store."""
    from pipeline.backbone import last_layer_tokens, load_backbone
    from pipeline.embed.inputs import read_pixels
    from pipeline.embed.preprocess import Preprocessing

    model, config, _ = load_backbone(ws.checkpoints_dir("tiny"))
    pre = Preprocessing(config.img_size, config.mean, config.std)
    x = torch.stack(
        [pre(read_pixels(ws.images_dir("toy") / p), i, 0) for i, p in zip(frame.image_id, frame.path, strict=True)]
    )
    with torch.inference_mode():
        cls, patch, _ = last_layer_tokens(model, x, 4)
    values = torch.cat([cls.flatten(1), patch.flatten(1)], dim=1).half().float().numpy()
    return dict(zip(frame.image_id, values, strict=True))


@pytest.mark.slow
def test_two_embed_processes_on_one_store_cooperate_and_never_corrupt_it(tmp_path):
    import pandas as pd

    from pipeline.store import FeatureStore

    n = 120
    ws = make_image_workspace(tmp_path / "ws", n=n)
    make_tiny_checkpoint(ws)
    args = ["embed", "toy", "-w", ws.root, "--checkpoint", ws.checkpoints_dir("tiny"), "--source", "manifest",
            "--workers", "0", "--batch-size", "4", "--unit-rows", "4"]  # fmt: skip
    procs = [
        subprocess.Popen(
            chex_cmd(*args), cwd=REPO, env=chex_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    results = [(p.wait(timeout=300), flat(p.communicate()[1])) for p in procs]
    embedded = []
    for code, err in results:
        assert "Traceback" not in err, err
        if code == 2:  # refusing is allowed, with a message about the lock
            assert "locked" in err, err
            continue
        assert code == 0, err
        embedded.append(int(re.search(r"this run embedded (\d+) rows", err).group(1)))
    assert sum(embedded) == n  # disjoint work: every row computed exactly once over both processes

    store_path = ws.features_dir("tiny")
    markers = [json.loads(p.read_text()) for p in (store_path / "ledger" / "done").glob("unit-*.json")]
    assert sorted(m["unit"] for m in markers) == list(range(n // 4))
    assert not list((store_path / "ledger" / "claims").iterdir())  # no claim left behind

    store = FeatureStore.open(store_path)
    assert store.complete and len(store) == n and sorted(store.image_ids) == sorted(set(store.image_ids))
    frame = pd.read_parquet(ws.manifest_path("toy"))
    tokens = store.read(store.rows(list(frame.image_id)))
    got = torch.cat([tokens["cls"].flatten(1), tokens["patch"].flatten(1)], dim=1).numpy()
    want = _expected(ws, frame)
    for k, image_id in enumerate(frame.image_id):  # every value of every row, in the row of its own image
        np.testing.assert_allclose(got[k], want[image_id], rtol=2e-3, atol=2e-3, err_msg=image_id)
    distinct = np.abs(got[:, None, :8] - got[None, :, :8]).sum(-1) + np.eye(n)
    assert distinct.min() > 0  # no row duplicated into another's place
