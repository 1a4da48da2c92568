from __future__ import annotations

import hashlib
import json
import re
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from distributed import LocalCluster

from pipeline.imageio import read_image
from pipeline.shard import (
    MANIFEST_FILE,
    build_index,
    iter_samples,
    load_done,
    plan_shards,
    read_index,
    read_quarantine,
    shard_dataset,
    shard_paths,
    write_shard,
)
from pipeline.shard import writer as writer_module
from pipeline.shard.writer import WriteOptions
from pipeline.shard_format import sanitize_key
from tests.pipeline.shard.conftest import BAD, GOOD_IDS, SourceSet

SMALL = 12_000  # bytes per shard: several shards from the small set (the DICOM gets one of its own)


def _shard(source_set: SourceSet, out: Path, **kwargs) -> object:
    return shard_dataset(source_set.manifest, source_set.root, out, "ds", SMALL, progress=False, **kwargs)


def _tar_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("ds-*.tar"))}


def test_round_trip_is_bit_exact_with_meta_and_quarantine(source_set: SourceSet, tmp_path: Path) -> None:
    summary = _shard(source_set, tmp_path / "out")
    assert summary.n_samples == len(GOOD_IDS) and summary.n_quarantined == len(BAD)
    assert summary.n_missing == 1 and summary.missing_examples == ["gone/never.png"]
    assert summary.n_shards >= 3 and summary.written == summary.n_shards and summary.skipped == 0

    samples = list(iter_samples(shard_paths(tmp_path / "out")))
    assert [s.image_id for s in samples] == GOOD_IDS
    rows = source_set.manifest.set_index("image_id")
    for sample in samples:
        expected = source_set.expected[sample.image_id]
        assert sample.pixels.dtype == expected.dtype, sample.image_id
        assert np.array_equal(sample.pixels, expected), sample.image_id
        row = rows.loc[sample.image_id]
        assert sample.meta["image_id"] == sample.image_id and sample.meta["path"] == row["path"]
        assert sample.meta["age"] == 60
        edema = row["Edema"]
        assert sample.meta["Edema"] == (None if np.isnan(edema) else edema)
        assert sample.key == sanitize_key(sample.image_id)

    quarantine = read_quarantine(tmp_path / "out")
    assert sorted(quarantine["image_id"]) == sorted(BAD)
    for row in quarantine.itertuples():
        assert BAD[row.image_id] in row.reason, row.reason
        assert row.path == rows.loc[row.image_id, "path"]


def test_index_and_sharded_manifest(source_set: SourceSet, tmp_path: Path) -> None:
    out = tmp_path / "out"
    summary = _shard(source_set, out)
    index = read_index(out)
    assert list(index.columns) == ["shard", "index", "n_samples", "bytes", "sha256"]
    assert index["n_samples"].sum() == summary.n_samples and index["bytes"].sum() == summary.n_bytes
    for row in index.itertuples():
        data = (out / row.shard).read_bytes()
        assert len(data) == row.bytes and hashlib.sha256(data).hexdigest() == row.sha256
        assert len(data) % 10240 == 0  # a complete tar: padded to whole records

    sharded = pd.read_parquet(out / MANIFEST_FILE)
    assert list(sharded["image_id"]) == GOOD_IDS
    assert {"shard", "key", "height", "width", "bit_depth"} <= set(sharded.columns)
    dicom = sharded.set_index("image_id").loc["ds.p2/0"]
    assert (dicom.height, dicom.width, dicom.bit_depth) == (1955, 1841, 16)
    assert sharded["Edema"].isna().sum() == 1  # NaN labels stay NaN, dtype kept
    for row in sharded.itertuples():
        with tarfile.open(out / row.shard) as tar:
            assert f"{row.key}.png" in tar.getnames()


def test_member_names_are_sanitised_and_plain_pngs_copied(source_set: SourceSet, tmp_path: Path) -> None:
    _shard(source_set, tmp_path / "out")
    names = []
    for path in shard_paths(tmp_path / "out"):
        with tarfile.open(path) as tar:
            names += tar.getnames()
            for member in tar.getmembers():
                assert member.mtime == 0 and member.uid == 0 and member.mode == 0o644
            if "ds_p0_0.png" in tar.getnames():
                assert tar.extractfile("ds_p0_0.png").read() == (source_set.root / "p0_0.png").read_bytes()
            if "ds_p1_0.json" in tar.getnames():
                meta = json.loads(tar.extractfile("ds_p1_0.json").read())
                assert meta["split"] == "val" and meta["Edema"] == 0.0
    assert all(re.fullmatch(r"[A-Za-z0-9_\-]+\.(png|json)", name) for name in names), names
    keys = {name.rsplit(".", 1)[0] for name in names}
    assert keys == {sanitize_key(i) for i in GOOD_IDS}
    assert "ds_p2_0_" in " ".join(keys)  # "ds.p2/0" -> "ds_p2_0_<hash>"


def test_max_side_resizes_as_declared(source_set: SourceSet, tmp_path: Path) -> None:
    _shard(source_set, tmp_path / "out", max_side=32)
    rows = source_set.manifest.set_index("image_id")
    for sample in iter_samples(shard_paths(tmp_path / "out")):
        expected = read_image(source_set.root / rows.loc[sample.image_id, "path"], max_side=32)
        assert max(sample.pixels.shape) <= 32
        assert sample.pixels.dtype == expected.dtype and np.array_equal(sample.pixels, expected)


def test_shards_are_byte_identical_across_runs_and_workers(source_set: SourceSet, tmp_path: Path) -> None:
    _shard(source_set, tmp_path / "a")
    _shard(source_set, tmp_path / "b")
    _shard(source_set, tmp_path / "c", workers=2)
    first = _tar_bytes(tmp_path / "a")
    assert len(first) >= 3
    assert _tar_bytes(tmp_path / "b") == first
    assert _tar_bytes(tmp_path / "c") == first
    assert read_index(tmp_path / "c").equals(read_index(tmp_path / "a"))
    assert (tmp_path / "c" / MANIFEST_FILE).read_bytes() == (tmp_path / "a" / MANIFEST_FILE).read_bytes()


def test_dask_executor_writes_the_same_shards(source_set: SourceSet, tmp_path: Path) -> None:
    _shard(source_set, tmp_path / "serial")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        summary = _shard(source_set, tmp_path / "dask", executor="dask", dask_address=cluster.scheduler_address)
    assert summary.n_samples == len(GOOD_IDS)
    assert _tar_bytes(tmp_path / "dask") == _tar_bytes(tmp_path / "serial")


def test_rerun_rewrites_only_the_damaged_shard(source_set: SourceSet, tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "out"
    first = _shard(source_set, out)
    original = _tar_bytes(out)
    last = sorted(original)[-1]

    calls: list[str] = []
    real = writer_module.write_shard

    def counting(task, *args, **kwargs):
        calls.append(task.file)
        return real(task, *args, **kwargs)

    monkeypatch.setattr(writer_module, "write_shard", counting)
    assert _shard(source_set, out).written == 0 and calls == []  # everything reused

    # an interrupted rewrite: the sidecar gone, the tar cut short, a temp file left behind
    (out / f"{last}.done.json").unlink()
    (out / last).write_bytes(original[last][:1000])
    (out / f"{last}.tmp").write_bytes(b"partial")
    summary = _shard(source_set, out)
    assert calls == [last] and summary.written == 1 and summary.skipped == first.n_shards - 1
    assert _tar_bytes(out) == original and not list(out.glob("*.tmp"))

    # a tar truncated behind a present sidecar fails verification and is rewritten too
    calls.clear()
    victim = sorted(original)[0]
    (out / victim).write_bytes(original[victim][:-512])
    _shard(source_set, out)
    assert calls == [victim] and _tar_bytes(out) == original

    # a changed label changes that shard's fingerprint only
    calls.clear()
    changed = source_set.manifest.copy()
    changed.loc[changed["image_id"] == "ds_p4_0", "Edema"] = 1.0
    shard_dataset(changed, source_set.root, out, "ds", SMALL, progress=False)
    sharded = pd.read_parquet(out / MANIFEST_FILE).set_index("image_id")
    assert calls == [sharded.loc["ds_p4_0", "shard"]]
    assert sharded.loc["ds_p4_0", "Edema"] == 1.0


def test_steps_compose_across_machines(source_set: SourceSet, tmp_path: Path) -> None:
    """plan once, write shards independently (as separate machines would), merge the index at the end."""
    out = tmp_path / "out"
    tasks = plan_shards(source_set.manifest, source_set.root, "ds", target_shard_bytes=SMALL)
    for task in tasks[1::2]:
        write_shard(task, source_set.root, out, max_side=4096)  # options recorded in each sidecar
    partial = build_index(out, tasks, source_set.manifest)
    assert partial.n_shards == len(tasks[1::2]) and partial.pending == [t.file for t in tasks[0::2]]
    assert [p.name for p in shard_paths(out)] == [t.file for t in tasks[1::2] if load_done(t, out).samples]
    assert build_index(out, tasks, options=WriteOptions(max_side=64)).n_shards == 0  # other options: not done
    for task in tasks[0::2]:
        write_shard(task, source_set.root, out, max_side=4096)
    full = build_index(out, tasks, source_set.manifest)
    assert full.n_shards == len(tasks) and full.n_samples == len(GOOD_IDS) and not full.pending
    reference = tmp_path / "ref"
    _shard(source_set, reference)
    assert _tar_bytes(out) == _tar_bytes(reference)


def test_plan_is_deterministic_and_respects_limits(source_set: SourceSet) -> None:
    manifest = source_set.manifest
    tasks = plan_shards(manifest, source_set.root, "ds", target_shard_bytes=SMALL)
    assert tasks == plan_shards(manifest, source_set.root, "ds", target_shard_bytes=SMALL)
    assert [t.file for t in tasks] == [f"ds-{i:06d}.tar" for i in range(len(tasks))]
    assert [i for t in tasks for i in t.image_ids] == list(manifest["image_id"])
    assert all(t.est_bytes <= SMALL or len(t.rows) == 1 for t in tasks)

    by_count = plan_shards(manifest, source_set.root, "ds", samples_per_shard=4)
    assert [len(t.rows) for t in by_count] == [4, 4, 4, 3]

    order = [14, 3, 0, 7]
    subset = plan_shards(manifest, source_set.root, "ds", samples_per_shard=3, order=order)
    assert [i for t in subset for i in t.image_ids] == list(manifest["image_id"].iloc[order])
    assert all(r["Edema"] is None or isinstance(r["Edema"], float) for t in subset for r in t.rows)
    with pytest.raises(ValueError, match="repeats"):
        plan_shards(manifest, source_set.root, "ds", order=[1, 1])

    sized = plan_shards(manifest, source_set.root, "ds", target_shard_bytes=5000, sizes=[100] * len(manifest))
    assert [len(t.rows) for t in sized] == [2] * 7 + [1]  # 100 + 2048 overhead per sample


def test_quarantine_csv_has_no_cell_a_spreadsheet_runs_as_a_formula(source_set: SourceSet, tmp_path: Path) -> None:
    row = source_set.manifest[source_set.manifest["image_id"] == GOOD_IDS[0]].copy()
    row["image_id"], row["path"] = "=HYPERLINK(1)", "=HYPERLINK(1).png"  # a missing file named like a formula
    manifest = pd.concat([source_set.manifest, row], ignore_index=True)
    shard_dataset(manifest, source_set.root, tmp_path / "out", "ds", SMALL, progress=False)
    text = (tmp_path / "out" / "quarantine.csv").read_text()
    assert "'=HYPERLINK(1)" in text and ",=HYPERLINK" not in text and not text.startswith("=")
