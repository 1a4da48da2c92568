"""Sources that once killed or fooled `chex shard` (issue 26, items 5 and 11): malformed DICOM VOI data, a shard
set of nothing but unreadable files, symbolic links out of the image root, and file contents echoed into
quarantine.csv. Each is quarantined (or refused, exit 2) with a reason; no `.tmp` file is ever left behind."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from pipeline.errors import ImageReadError, ShardError
from pipeline.imageio import read_image
from pipeline.manifest import write_manifest
from tests.faults.conftest import (
    assert_ok,
    assert_user_error,
    flat,
    make_image_workspace,
    make_tiny_checkpoint,
    run_chex,
)


def _lut(descriptor: list[int], data: list[int] | bytes) -> Dataset:
    item = Dataset()
    item.LUTDescriptor = descriptor
    if isinstance(data, bytes):
        item.add_new("LUTData", "OW", data)
    else:
        item.add_new("LUTData", "US", data)
    return item


def _window_width(width: float):
    def edit(ds: Dataset) -> None:
        ds.WindowWidth = width

    return edit


def _voi_lut(item: Dataset):
    def edit(ds: Dataset) -> None:
        ds.VOILUTSequence = Sequence([item])

    return edit


# name -> how the radiograph RG1_UNCR.dcm is damaged; each raised ValueError/IndexError/struct.error/
# NotImplementedError out of pydicom's VOI step and killed the shard run
MALFORMED = {
    "width0.dcm": _window_width(0),
    "width_negative.dcm": _window_width(-5),
    "lut_short_us.dcm": _voi_lut(_lut([32768, 0, 16], list(range(100)))),
    "lut_short_ow.dcm": _voi_lut(_lut([32768, 0, 16], np.arange(100, dtype="<u2").tobytes())),
    "lut_0bits.dcm": _voi_lut(_lut([32768, 0, 0], (np.arange(32768) // 2).astype("<u2").tobytes())),
}


def _malformed(path: Path, name: str) -> np.ndarray:
    """Write the damaged DICOM `name` to `path`; returns its stored pixels."""
    ds = pydicom.dcmread(get_testdata_file("RG1_UNCR.dcm"))
    MALFORMED[name](ds)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path)
    return ds.pixel_array


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_a_malformed_voi_is_an_image_read_error_and_voi_none_still_reads_it(tmp_path, name):
    stored = _malformed(tmp_path / name, name)
    with pytest.raises(ImageReadError, match="VOI") as info:
        read_image(tmp_path / name)
    assert "--voi none" in str(info.value) and str(tmp_path / name) in str(info.value)
    pixels = read_image(tmp_path / name, voi="none")  # the stored values need no VOI step
    assert np.array_equal(pixels, (2**15 - 1) - stored.astype(np.int64))  # MONOCHROME1, inverted


def _add_rows(ws, rows: list[dict]) -> None:
    frame = pd.read_parquet(ws.manifest_path("toy"))
    write_manifest(pd.concat([frame, pd.DataFrame(rows)], ignore_index=True), ws.manifest_path("toy"))


def _row(image_id: str, path: str) -> dict:
    return {"image_id": image_id, "path": path, "patient_id": image_id, "split": "train"}


def test_shard_quarantines_malformed_dicoms_and_a_rerun_reuses_the_shards(tmp_path):
    ws = make_image_workspace(tmp_path / "ws", n=6)
    images = ws.images_dir("toy")
    for name in MALFORMED:
        _malformed(images / name, name)
    _add_rows(ws, [_row(Path(name).stem, name) for name in MALFORMED])

    first = run_chex("shard", "toy", "-w", ws.root, "--no-progress", "--samples-per-shard", "4")
    assert_ok(first)
    assert "6 samples, 5 quarantined" in flat(first.stdout + first.stderr), first.stderr
    shards = ws.shards_dir("toy")
    quarantine = pd.read_csv(shards / "quarantine.csv")
    assert sorted(quarantine["path"]) == sorted(MALFORMED)
    assert quarantine["reason"].str.contains("--voi none").all(), quarantine["reason"].tolist()
    assert not list(shards.glob("*.tmp"))
    again = run_chex("shard", "toy", "-w", ws.root, "--no-progress", "--samples-per-shard", "4")
    assert_ok(again)
    said = flat(again.stdout + again.stderr)
    assert "0 written" in said and "6 samples, 5 quarantined" in said, said


def test_a_failing_shard_write_leaves_no_tmp_file(tmp_path, monkeypatch):
    from pipeline.shard import writer
    from pipeline.shard.plan import plan_shards

    ws = make_image_workspace(tmp_path / "ws", n=4)
    frame = pd.read_parquet(ws.manifest_path("toy"))
    (task,) = plan_shards(frame, ws.images_dir("toy"), "toy")
    real, calls = writer._add_member, []

    def disk_full(tar, name, data):
        calls.append(name)
        if len(calls) == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(tar, name, data)

    monkeypatch.setattr(writer, "_add_member", disk_full)
    out = tmp_path / "shards"
    with pytest.raises(OSError, match="No space"):
        writer.write_shard(task, ws.images_dir("toy"), out)
    assert sorted(p.name for p in out.iterdir()) == []  # neither the tar's .tmp nor a sidecar


def test_shard_of_only_unreadable_images_exits_2_and_embed_refuses_it(tmp_path):
    ws = make_image_workspace(tmp_path / "ws", n=12)
    for image in ws.images_dir("toy").glob("*.png"):
        image.write_bytes(b"not an image at all, " * 4)
    result = run_chex("shard", "toy", "-w", ws.root, "--no-progress")
    quarantine = ws.shards_dir("toy") / "quarantine.csv"
    assert_user_error(result, "all 12 images of toy were quarantined", str(quarantine))
    assert len(pd.read_csv(quarantine)) == 12  # the list the message points at
    from pipeline.embed.stage import embed_dataset  # the CLI's path; a ShardError is its exit 2, as above

    with pytest.raises(ShardError, match="no images to embed") as info:
        embed_dataset(ws, "toy", make_tiny_checkpoint(ws), "tiny")
    assert "all 12 were quarantined" in str(info.value) and str(quarantine) in str(info.value)
    assert not ws.features_dir("tiny").exists()


def _workspace_with_links(tmp_path):
    """6 images plus links out of the root (to a text file, to a real PNG), a link inside it and a text file."""
    ws = make_image_workspace(tmp_path / "ws", n=6)
    images = ws.images_dir("toy")
    secret = tmp_path / "outside" / "passwd"
    secret.parent.mkdir()
    secret.write_text("root:x:0:0:SECRET-LINE:/root:/bin/bash\n")
    outside_png = tmp_path / "outside" / "real.png"
    outside_png.write_bytes((images / "img0000.png").read_bytes())
    (images / "to_passwd.png").symlink_to(secret)
    (images / "to_outside.png").symlink_to(outside_png)
    (images / "inside_link.png").symlink_to(images / "img0001.png")  # stays inside the root: fine
    (images / "text.png").write_text("root:x:0:0:SECRET-LINE:/root:/bin/bash\n")
    rows = [
        ("passwd", "to_passwd.png"),
        ("outside", "to_outside.png"),
        ("inside", "inside_link.png"),
        ("text", "text.png"),
    ]
    _add_rows(ws, [_row(image_id, path) for image_id, path in rows])
    return ws


def test_links_out_of_the_root_are_quarantined_and_no_file_content_is_echoed(tmp_path):
    from pipeline.shard.dataset import shard_dataset

    ws = _workspace_with_links(tmp_path)
    images = ws.images_dir("toy")
    summary = shard_dataset(ws.manifest_path("toy"), images, ws.shards_dir("toy"), "toy", progress=False)
    assert summary.n_samples == 7 and summary.n_quarantined == 3
    text = (ws.shards_dir("toy") / "quarantine.csv").read_text()
    assert "SECRET" not in text and "root:x" not in text, text
    reasons = pd.read_csv(ws.shards_dir("toy") / "quarantine.csv").set_index("image_id")["reason"]
    assert "outside the image root" in reasons["passwd"] and "outside the image root" in reasons["outside"]
    assert "text file" in reasons["text"]


def test_embed_from_the_manifest_never_follows_a_link_out_of_the_root(tmp_path):
    """`chex embed --source manifest` reads the image files itself: the same rule as `chex shard`."""
    from pipeline.embed import EmbedOptions
    from pipeline.embed.stage import embed_dataset
    from pipeline.store import FeatureStore

    ws = _workspace_with_links(tmp_path)
    summary = embed_dataset(ws, "toy", make_tiny_checkpoint(ws), "tiny", source="manifest",
                            options=EmbedOptions(workers=0, progress=False))  # fmt: skip
    quarantine = pd.read_csv(summary.store_path / "quarantine.csv").set_index("image_id")["reason"]
    assert sorted(quarantine.index) == ["outside", "passwd", "text"]
    assert "outside the image root" in quarantine["passwd"] and "outside the image root" in quarantine["outside"]
    assert "SECRET" not in (summary.store_path / "quarantine.csv").read_text()
    ids = set(FeatureStore.open(summary.store_path).image_ids)
    assert "inside" in ids and not ids & {"outside", "passwd", "text"} and len(ids) == 7


def test_a_projected_embed_fits_its_basis_without_the_unreadable_images_and_writes_nothing_outside(
    tmp_path, monkeypatch
):
    """The basis fit reads train images before any row is written: an unreadable one used to be 'quarantined' in a
    `ledger/` folder made in the current directory, and its zero image went into the fit."""
    from pipeline.embed import EmbedOptions
    from pipeline.embed.stage import embed_dataset
    from pipeline.store import FeatureStore

    ws = _workspace_with_links(tmp_path)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    options = EmbedOptions(workers=0, progress=False, patch_rank=4)
    summary = embed_dataset(ws, "toy", make_tiny_checkpoint(ws), "tiny", source="manifest", options=options)
    assert list(cwd.iterdir()) == []
    quarantine = pd.read_csv(summary.store_path / "quarantine.csv")
    assert sorted(quarantine["image_id"]) == ["outside", "passwd", "text"]
    assert len(set(FeatureStore.open(summary.store_path).image_ids)) == 7
