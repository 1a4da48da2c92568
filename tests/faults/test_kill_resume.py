"""kill -9 at random moments (real subprocesses of the CLI), then rerun: outputs identical, no finished unit redone.

A random moment is a seeded random number of finished units (store units, shards, step checkpoints, probe epochs)
plus a small random delay, so the kill lands mid-run however loaded the machine is.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.faults.conftest import (
    REPO,
    assert_ok,
    chex_cmd,
    chex_env,
    kill_after_progress,
    make_image_workspace,
    make_tiny_checkpoint,
    mtimes,
    run_chex,
    tree_bytes,
)

pytestmark = pytest.mark.slow


# ---- embed ----------------------------------------------------------------------------------------------------


def _embed_args(ws, store: Path) -> list[object]:
    return [
        "embed", "toy", "-w", ws.root, "--checkpoint", ws.checkpoints_dir("tiny"), "--backbone", "tiny",
        "--store", store, "--source", "manifest", "--workers", "0", "--batch-size", "4", "--unit-rows", "4",
    ]  # fmt: skip


def _done(store: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((store / "ledger" / "done").glob("unit-*.json"))}


def _visible(store: Path) -> dict[str, np.ndarray]:
    """image_id -> concatenated cls+patch values of every row the store shows as complete."""
    from pipeline.errors import StoreError
    from pipeline.store import FeatureStore

    try:
        fs = FeatureStore.open(store)
    except StoreError:
        return {}
    ids = list(fs.image_ids)
    tokens = fs.read(fs.rows(ids))
    flat = np.concatenate([tokens["cls"].flatten(1).numpy(), tokens["patch"].flatten(1).numpy()], axis=1)
    return dict(zip(ids, flat, strict=True))


def test_embed_killed_at_random_moments_resumes_to_the_uninterrupted_store(tmp_path):
    n, unit = 160, 4
    ws = make_image_workspace(tmp_path / "ws", n=n)
    make_tiny_checkpoint(ws)
    reference_store, store = tmp_path / "reference", tmp_path / "store"
    # the uninterrupted run, alongside the killed ones
    reference = subprocess.Popen(chex_cmd(*_embed_args(ws, reference_store)), cwd=REPO, env=chex_env(),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    rng = np.random.default_rng(20240611)
    seen: dict[str, np.ndarray] = {}  # rows visible after each kill: must be final, correct values
    markers: dict[str, str] = {}
    kills = 0
    for _ in range(2):
        before = len(_done(store))
        if kill_after_progress(
            _embed_args(ws, store), lambda t=before + rng.integers(1, 8): len(_done(store)) >= t, rng, 0.05
        ):  # fmt: skip
            kills += 1
        now = _done(store)
        assert all(now[k] == v for k, v in markers.items()), "a finished unit was rewritten"
        markers = now
        seen |= _visible(store)
        assert len(seen) == unit * len(markers)  # only whole units are visible
    assert kills >= 1 and len(markers) < n // unit
    data_times = mtimes(store, "*/c/**/*")

    final = run_chex(*_embed_args(ws, store))
    assert_ok(final)
    summary = " ".join(final.stderr.split())
    embedded = int(re.search(r"this run embedded (\d+) rows", summary).group(1))
    assert "unfinished" not in summary  # no unit left behind as "another writer's" (an ownerless claim)
    assert embedded == n - unit * len(markers)  # finished units are not recomputed
    assert {k: v for k, v in _done(store).items() if k in markers} == markers
    after = mtimes(store, "*/c/**/*")
    finished = {f"{i:}" for i in (json.loads(m)["unit"] for m in markers.values())}
    untouched = {k: v for k, v in data_times.items() if k.split("/c/")[1].split("/")[0] in finished}
    assert untouched and all(after[k] == v for k, v in untouched.items())

    _, err = reference.communicate(timeout=300)
    assert reference.returncode == 0, err
    want, got = _visible(reference_store), _visible(store)
    assert sorted(got) == sorted(want) and len(got) == n
    assert all(np.array_equal(got[i], want[i]) for i in want)
    assert all(np.array_equal(seen[i], want[i]) for i in seen)  # nothing partial was ever marked complete
    # the array data are the same bytes as the uninterrupted run's (same plan, same values)
    assert tree_bytes(store, "*/c/**/*") == tree_bytes(reference_store, "*/c/**/*")


# ---- shard ----------------------------------------------------------------------------------------------------


def _shard_args(ws, out: Path) -> list[object]:
    # small shards of downscaled images: a run of many units that takes long enough to be killed in the middle
    return [
        "shard",
        "toy",
        "-w",
        ws.root,
        "--out",
        out,
        "--samples-per-shard",
        "2",
        "--max-side",
        "64",
        "--no-progress",
    ]


def _finished_shards(out: Path) -> dict[str, bytes]:
    """Sidecars of the shards the writer has marked done."""
    return {p.name: p.read_bytes() for p in sorted(out.glob("toy-*.tar.done.json"))}


def test_shard_killed_at_random_moments_resumes_to_byte_identical_shards(tmp_path):
    from pipeline.shard.writer import _sha256_file

    n, per = 120, 2
    ws = make_image_workspace(tmp_path / "ws", n=n, shape=(256, 224))
    reference_dir, out = tmp_path / "reference", tmp_path / "shards"
    reference = subprocess.Popen(chex_cmd(*_shard_args(ws, reference_dir)), cwd=REPO, env=chex_env(),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    rng = np.random.default_rng(7)
    sidecars: dict[str, bytes] = {}
    kills = 0
    for _ in range(2):
        before = len(_finished_shards(out))
        target = before + rng.integers(1, 7)
        if kill_after_progress(_shard_args(ws, out), lambda t=target: len(_finished_shards(out)) >= t, rng, 0.05):
            kills += 1
        now = _finished_shards(out)
        assert all(now[k] == v for k, v in sidecars.items()), "a finished shard was rewritten"
        sidecars = now
        for name, raw in sidecars.items():  # a shard marked done is complete: its bytes hash to its record
            record = json.loads(raw)["record"]
            assert _sha256_file(out / name.removesuffix(".done.json")) == record["sha256"]
    assert kills >= 1 and len(sidecars) < n // per
    times = mtimes(out, "toy-*.tar*")

    final = run_chex(*_shard_args(ws, out))
    assert_ok(final)
    text = " ".join(final.stderr.split())
    written, reused = map(int, re.search(r"\((\d+) written, (\d+) reused", text).groups())
    assert (written, reused) == (n // per - len(sidecars), len(sidecars))  # finished shards not redone
    after = mtimes(out, "toy-*.tar*")
    assert all(after[k] == v for k, v in times.items() if k.removesuffix(".done.json") + ".done.json" in sidecars)

    assert reference.wait(timeout=300) == 0, reference.stderr.read()
    assert tree_bytes(out, "toy-*.tar") == tree_bytes(reference_dir, "toy-*.tar")  # byte-identical shards
    assert len(tree_bytes(out, "toy-*.tar")) == n // per and not list(out.glob("*.tmp"))
    import pandas as pd

    pd.testing.assert_frame_equal(
        pd.read_parquet(out / "index.parquet"), pd.read_parquet(reference_dir / "index.parquet")
    )


# ---- pretrain -------------------------------------------------------------------------------------------------


def _toy_pretrain_shards(folder: Path, n_shards: int = 2, per_shard: int = 10) -> Path:
    """Shards in the contract format (key, png, json) written with webdataset's TarWriter."""
    import webdataset as wds

    from pipeline.shard_format import encode_png
    from tests.faults.conftest import grey_image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for s in range(n_shards):
        with wds.TarWriter(str(folder / f"toy-{s:06d}.tar")) as writer:
            for i in range(per_shard):
                key = f"toy_{s}_{i}"
                pixels = grey_image(rng, (48, 40), bits=16 if i % 2 else 8)
                writer.write(
                    {"__key__": key, "png": encode_png(pixels), "json": json.dumps({"image_id": key}).encode()}
                )
    import pandas as pd

    tars = sorted(folder.glob("toy-*.tar"))
    index = [{"shard": t.name, "index": k, "n_samples": per_shard, "bytes": t.stat().st_size, "sha256": ""}
             for k, t in enumerate(tars)]  # fmt: skip
    pd.DataFrame(index).to_parquet(folder / "index.parquet", index=False)
    return folder


PRETRAIN_STEPS = 48  # long enough that a quiet machine cannot finish the run in the kill's random extra delay


def _pretrain_args(shards: Path, out: Path, *extra: str) -> list[object]:
    return ["pretrain", "--config", "cpu_tiny", "--shards", shards, "--out", out, "--no-progress", "--steps",
            PRETRAIN_STEPS,
            "--set", "train.checkpoint_every=3", "--set", "train.keep_checkpoints=20", *extra]  # fmt: skip


def _steps_done(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("step_*") if (p / "train_state.pt").is_file())


def test_pretrain_killed_at_random_moments_resumes_to_the_uninterrupted_run(tmp_path):
    import torch

    from pipeline.pretrain.run_folder import read_metrics

    shards = _toy_pretrain_shards(tmp_path / "shards")
    reference_dir, out = tmp_path / "reference", tmp_path / "run"
    reference = subprocess.Popen(chex_cmd(*_pretrain_args(shards, reference_dir)), cwd=REPO, env=chex_env(),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    rng = np.random.default_rng(11)
    finished: dict[str, dict[str, int]] = {}
    kills = 0
    for k in range(2):
        before = len(_steps_done(out))
        args = _pretrain_args(shards, out, *(["--resume"] if k else []))
        if kill_after_progress(args, lambda b=before: len(_steps_done(out)) > b, rng, max_extra_s=0.2):
            kills += 1
        for name in finished:  # a finished step checkpoint is never rewritten
            assert mtimes(out / name) == finished[name], name
        finished = {name: mtimes(out / name) for name in _steps_done(out)}
        assert not (out / "model.pt").exists() and not list(out.glob(".step_*"))[1:]
    assert kills >= 1
    last = int(_steps_done(out)[-1].removeprefix("step_"))
    assert last < PRETRAIN_STEPS
    final = run_chex(*_pretrain_args(shards, out, "--resume"))
    assert_ok(final)
    for name in finished:
        assert mtimes(out / name) == finished[name], name
    steps = [r["step"] for r in read_metrics(out / "metrics.jsonl")]
    # each step logged once: the resumed run redid only steps after `last`
    assert steps == list(range(1, PRETRAIN_STEPS + 1))

    assert reference.wait(timeout=300) == 0, reference.stderr.read()
    expected = read_metrics(reference_dir / "metrics.jsonl")
    resumed = read_metrics(out / "metrics.jsonl")
    # stated tolerance: on CPU with the same thread count the resumed run is the uninterrupted one, bit for bit
    assert [r["loss"] for r in resumed] == [r["loss"] for r in expected]
    a = torch.load(out / "model.pt", weights_only=True)
    b = torch.load(reference_dir / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- probe ----------------------------------------------------------------------------------------------------


def _probe_args(root: Path, epochs: int = 60) -> list[object]:
    return ["probe", "-w", root, "--head", "linear", "--dataset", "toy", "--epochs", epochs, "--lrs", "1e-3,1e-2",
            "--resamples", "50", "-v"]  # fmt: skip


def _probe_checkpoints(root: Path) -> dict[str, int]:
    """Epochs finished per training stage (sweep, refit), from the run's per-epoch checkpoints."""
    import torch

    found = {}
    for path in sorted(root.glob("results/toy/*/linear@*/.partial/*.pt")):
        try:
            found[path.stem] = int(torch.load(path, weights_only=True)["epoch"])
        except Exception:  # replaced between glob and load
            continue
    return found


def test_probe_killed_at_random_moments_resumes_to_identical_predictions(tmp_path):
    import shutil

    import pandas as pd

    from tests.pipeline.probe.conftest import make_workspace

    ws = make_workspace(tmp_path / "ws")
    shutil.copytree(ws.root, tmp_path / "reference")
    reference = subprocess.Popen(chex_cmd(*_probe_args(tmp_path / "reference")), cwd=REPO, env=chex_env(),
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    rng = np.random.default_rng(5)
    kills, saved = 0, {}
    for _ in range(2):
        before = sum(saved.values())
        if kill_after_progress(
            _probe_args(ws.root), lambda t=before + rng.integers(5, 40): sum(_probe_checkpoints(ws.root).values()) >= t,
            rng, 0.05,
        ):  # fmt: skip
            kills += 1
        saved = _probe_checkpoints(ws.root)
        assert not list(ws.root.glob("results/toy/*/linear@*/run.json"))  # unfinished runs are never marked complete
    assert kills >= 1 and saved

    final = run_chex(*_probe_args(ws.root))
    assert_ok(final)
    log = " ".join(final.stderr.split())
    for stage, epoch in saved.items():  # each stage picks up at its last finished epoch: none is trained twice
        assert re.search(rf"resuming from \S*{stage}\.pt at epoch {epoch}\b", log), (stage, epoch, log[-2000:])

    assert reference.wait(timeout=300) == 0, reference.stderr.read()
    got = pd.read_parquet(next(ws.root.glob("results/toy/*/linear@*/predictions.parquet")))
    want = pd.read_parquet(next((tmp_path / "reference").glob("results/toy/*/linear@*/predictions.parquet")))
    pd.testing.assert_frame_equal(got, want, check_exact=True)
