"""The bad-input catalogue: each case gets a clear message naming the item (exit 2, no traceback), a quarantine
entry, or a refusal; nothing is silently dropped.

CLI cases run as real processes (one forked child per command line, see `run_chex_many`).
"""

from __future__ import annotations

import pathlib
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from tests.faults.conftest import (
    TINY,
    assert_user_error,
    make_image_workspace,
    make_tiny_checkpoint,
    run_chex_many,
)


class _PickledCode:
    """An object whose unpickling runs code (touches a file): what a malicious checkpoint carries."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def _embed(ws, checkpoint=None, workers: int = 0) -> list[object]:
    return [
        "embed", "toy", "-w", ws.root, "--checkpoint", checkpoint or ws.checkpoints_dir("tiny"),
        "--source", "manifest", "--workers", workers, "--batch-size", "4", "--unit-rows", "4",
    ]  # fmt: skip


def _with_manifest(base, root: Path, edit) -> object:
    """A copy of workspace `base` whose manifest is `edit(frame)`, written without validation."""
    shutil.copytree(base.root, root)
    from pipeline.workspace import Workspace

    ws = Workspace(root)
    frame = edit(pd.read_parquet(ws.manifest_path("toy")))
    frame.to_parquet(ws.manifest_path("toy"), index=False)
    return ws


def _with_image(base, root: Path, name: str, data: bytes, suffix: str = ".png") -> object:
    """A copy of `base` where the image of row 3 is replaced by `data` (file `name`)."""
    shutil.copytree(base.root, root)
    from pipeline.workspace import Workspace

    ws = Workspace(root)
    frame = pd.read_parquet(ws.manifest_path("toy"))
    (ws.images_dir("toy") / name).write_bytes(data)
    frame.loc[3, "path"] = name
    frame.to_parquet(ws.manifest_path("toy"), index=False)
    return ws


def _huge_png(width: int, height: int) -> bytes:
    """A complete, valid 8-bit grey PNG of width x height zeros (a few hundred kB: zeros compress well)."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    z = zlib.compressobj(9)
    block = (b"\0" * (width + 1)) * 500
    data = b"".join(z.compress(block) for _ in range(height // 500)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def _jpeg_claiming(width: int, height: int, pixels: np.ndarray) -> bytes:
    """A small JPEG whose frame header (SOF0) claims width x height."""
    import io
    import struct

    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG")
    data = bytearray(buffer.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _dicom_without_pixels(path: Path) -> None:
    from pydicom import Dataset
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.PatientID, ds.Modality, ds.Rows, ds.Columns = "p1", "DX", 16, 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.save_as(path, enforce_file_format=True)


# image files of the shard catalogue: name -> (bytes or builder, quarantined?)
SPECIAL_IMAGES = ("grey16.png", "rgba.png", "palette.png", "one_pixel.png")
QUARANTINED = {
    "truncated.png": "truncated",
    "truncated.jpg": "truncated",
    "zero_bytes.png": "empty file",
    "text_as.png": "not an image file",
    "no_pixels.dcm": "DICOM without pixel data",
    "huge_20000.png": "exceeds the limit",
    "huge_20000.jpg": "exceeds the limit",
    "never_written.png": "missing file",
}


def _catalogue_workspace(root: Path):
    """A data set mixing good images, the special-but-valid ones and every unreadable kind."""
    from pipeline.workspace import Workspace

    ws = Workspace(root)
    images = ws.images_dir("cat")
    images.mkdir(parents=True)
    rng = np.random.default_rng(3)
    good = [f"good{i}.png" for i in range(4)]
    for name in good:
        Image.fromarray(rng.integers(0, 256, (20, 16), dtype=np.uint8)).save(images / name)
    Image.fromarray(rng.integers(0, 65536, (18, 14), dtype=np.uint16)).save(images / "grey16.png")
    Image.fromarray(rng.integers(0, 256, (12, 10, 4), dtype=np.uint8), mode="RGBA").save(images / "rgba.png")
    Image.fromarray(rng.integers(0, 256, (12, 10), dtype=np.uint8)).convert("P").save(images / "palette.png")
    Image.fromarray(np.array([[77]], dtype=np.uint8)).save(images / "one_pixel.png")
    big = rng.integers(0, 65536, (120, 90), dtype=np.uint16)
    Image.fromarray(big).save(images / "full16.png")
    (images / "truncated.png").write_bytes((images / "full16.png").read_bytes()[:2000])
    Image.fromarray(rng.integers(0, 256, (120, 90), dtype=np.uint8)).save(images / "full.jpg")
    (images / "truncated.jpg").write_bytes((images / "full.jpg").read_bytes()[:1500])
    (images / "zero_bytes.png").write_bytes(b"")
    (images / "text_as.png").write_text("patient notes, not an image\n" * 10)
    _dicom_without_pixels(images / "no_pixels.dcm")
    (images / "huge_20000.png").write_bytes(_huge_png(20000, 20000))
    (images / "huge_20000.jpg").write_bytes(_jpeg_claiming(20000, 20000, rng.integers(0, 256, (16, 16), np.uint8)))
    names = good + list(SPECIAL_IMAGES) + list(QUARANTINED)
    frame = pd.DataFrame(
        {
            "image_id": [f"cat_{i}_0" for i in range(len(names))],
            "path": names,
            "patient_id": [f"cat{i}" for i in range(len(names))],
            "split": ["train"] * len(names),
        }
    )
    from pipeline.manifest import write_manifest

    write_manifest(frame, ws.manifest_path("cat"))
    return ws


def _odd_tar(folder: Path, members: list[tuple[str, bytes]]) -> Path:
    """A shard folder whose one tar holds exactly `members` (names as given), listed in index.parquet."""
    import io
    import tarfile

    folder.mkdir(parents=True)
    tar_path = folder / "odd-000000.tar"
    with tarfile.open(tar_path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    record = {"shard": tar_path.name, "index": 0, "n_samples": 1, "bytes": tar_path.stat().st_size, "sha256": ""}
    pd.DataFrame([record]).to_parquet(folder / "index.parquet", index=False)
    return tar_path


def _png_bytes() -> bytes:
    from pipeline.shard_format import encode_png

    return encode_png(np.full((8, 8), 100, dtype=np.uint8))


PNG = _png_bytes()
OK = [("good.png", PNG), ("good.json", b'{"image_id": "toy_0_0"}')]  # one valid sample in every odd tar
ODD_TARS = {
    # names that try to leave the folder: members are only read as bytes, never extracted to disk
    "tar_parent_dir_names": [*OK, ("../../escape.png", PNG), ("../../escape.json", b'{"image_id": "toy_0_1"}')],
    "tar_absolute_names": [*OK, ("/etc/cron.png", b"x"), ("/etc/cron.json", b'{"image_id": "toy_0_1"}')],
    "tar_png_without_json": [*OK, ("lonely.png", PNG)],
    "tar_json_not_json": [*OK, ("k.png", PNG), ("k.json", b"{not json")],
    "tar_json_without_image_id": [*OK, ("k.png", PNG), ("k.json", b'{"path": "a.png"}')],
    "tar_png_not_png": [*OK, ("k.png", b"definitely not a png"), ("k.json", b'{"image_id": "toy_0_1"}')],
}


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """Every CLI case built and run once: {case: (CompletedProcess, needles that must be in the message)}."""
    from pipeline.workspace import Workspace

    tmp = tmp_path_factory.mktemp("bad")
    base = make_image_workspace(tmp / "base", n=10)
    make_tiny_checkpoint(base)
    good_png = (base.images_dir("toy") / "img0001.png").read_bytes()
    cases: dict[str, tuple[list[object], list[str]]] = {}

    def dup(f):
        f.loc[4, "image_id"] = f.loc[2, "image_id"]
        return f

    ws = _with_manifest(base, tmp / "dup", dup)
    cases["duplicate_ids"] = (_embed(ws), ["duplicate image_id", "toy_1_0", str(ws.manifest_path("toy"))])
    ws = _with_manifest(base, tmp / "nocol", lambda f: f.drop(columns=["patient_id"]))
    cases["missing_column"] = (_embed(ws), ["missing column", "patient_id", str(ws.manifest_path("toy"))])

    def two_splits(f):
        f.loc[f.patient_id == "toy0", "split"] = ["train", "test"]
        return f

    ws = _with_manifest(base, tmp / "splits", two_splits)
    cases["patient_in_two_splits"] = (_embed(ws), ["more than one split", "toy0"])

    def escape(f):
        f.loc[5, "path"] = "../../outside/secret.png"
        return f

    ws = _with_manifest(base, tmp / "escape", escape)
    cases["path_escaping_root"] = (_embed(ws), ["outside the image root", "../../outside/secret.png", "toy_2_1"])

    def absolute(f):
        f.loc[6, "path"] = "/etc/passwd"
        return f

    ws = _with_manifest(base, tmp / "absolute", absolute)
    cases["absolute_path"] = (_embed(ws), ["outside the image root", "/etc/passwd"])
    ws = _with_manifest(base, tmp / "notparquet", lambda f: f)
    ws.manifest_path("toy").write_text("image_id,path\na,b\n")
    cases["manifest_not_parquet"] = (_embed(ws), ["not a readable Parquet manifest", str(ws.manifest_path("toy"))])

    # checkpoints
    state = torch.load(base.checkpoints_dir("tiny") / "model.pt", weights_only=True)
    ckpt = tmp / "ckpt"
    ckpt.mkdir()
    (ckpt / "missing").mkdir()  # a chex folder whose config.json asks for 4 blocks; the weights hold 3
    torch.save({k: v for k, v in state.items() if not k.startswith("blocks.3.")}, ckpt / "missing" / "model.pt")
    shutil.copy(base.checkpoints_dir("tiny") / "config.json", ckpt / "missing" / "config.json")
    torch.save({k: v for k, v in state.items() if k != "blocks.1.attn.qkv.weight"}, ckpt / "hole.pt")
    torch.save({**state, "extra_head.weight": torch.zeros(2, 2)}, ckpt / "unexpected.pt")
    torch.save({"model": state, "hook": _PickledCode(tmp / "code-ran")}, ckpt / "pickled.pt")
    (ckpt / "garbage.pt").write_bytes(b"not a checkpoint at all")
    cases["checkpoint_missing_keys"] = (_embed(base, ckpt / "missing"), ["model.pt", "missing keys", "blocks.3."])
    cases["checkpoint_missing_key_inside"] = (
        _embed(base, ckpt / "hole.pt"),
        ["hole.pt", "blocks.1.attn.qkv.weight"],
    )
    cases["checkpoint_unexpected_keys"] = (
        _embed(base, ckpt / "unexpected.pt"),
        ["unexpected.pt", "unknown keys", "extra_head.weight"],
    )
    cases["checkpoint_pickled_code"] = (_embed(base, ckpt / "pickled.pt"), ["pickled.pt", "pickled code"])
    cases["checkpoint_not_a_checkpoint"] = (_embed(base, ckpt / "garbage.pt"), ["garbage.pt"])
    cases["checkpoint_does_not_exist"] = (_embed(base, ckpt / "nope.pt"), ["nope.pt", "does not exist"])

    # images read straight from a manifest (embed --source manifest), with DataLoader worker processes
    for name, file, data in (
        ("truncated_png", "trunc.png", good_png[: len(good_png) // 2]),
        ("zero_byte_file", "empty.png", b""),
        ("not_an_image", "notes.png", b"this is a text file, not an image\n" * 20),
    ):
        ws = _with_image(base, tmp / name, file, data)
        cases[name] = (_embed(ws, workers=2), [file])

    # the shard catalogue: one run quarantines every unreadable input and shards the rest
    cat = _catalogue_workspace(tmp / "catalogue")
    cases["shard_catalogue"] = (["shard", "cat", "-w", cat.root, "--samples-per-shard", "5", "--no-progress"], [])

    # shards whose tar members have odd names or contents, read by `chex embed --source shards`
    for name, members in ODD_TARS.items():
        ws = Workspace(tmp / name)
        shutil.copytree(base.manifests_dir, ws.manifests_dir)
        _odd_tar(ws.shards_dir("toy"), members)
        args = ["embed", "toy", "-w", ws.root, "--checkpoint", base.checkpoints_dir("tiny"), "--source", "shards",
                "--workers", "0", "--unit-rows", "4"]  # fmt: skip
        cases[name] = (args, ["odd-000000.tar"])

    # probe given a feature store made for other images (another data set / backbone run)
    from tests.pipeline.probe.conftest import make_workspace as make_probe_workspace

    probe_ws = make_probe_workspace(tmp / "probe")
    other = make_probe_workspace(tmp / "probe_other", dataset="other", seed=1)
    shutil.rmtree(probe_ws.root / "features")
    shutil.copytree(other.root / "features", probe_ws.root / "features")
    cases["probe_store_without_the_images"] = (
        ["probe", "-w", probe_ws.root, "--head", "linear", "--dataset", "toy", "--epochs", "1", "--resamples", "10"],
        ["are not in feature store", "'toy'", "toy_p000_0", "chex embed toy"],
    )

    results = run_chex_many({k: v[0] for k, v in cases.items()}, tmp / "logs")
    return {k: (results[k], cases[k][1]) for k in cases}, tmp


CLI_CASES = [
    "duplicate_ids",
    "missing_column",
    "patient_in_two_splits",
    "path_escaping_root",
    "absolute_path",
    "manifest_not_parquet",
    "checkpoint_missing_keys",
    "checkpoint_missing_key_inside",
    "checkpoint_unexpected_keys",
    "checkpoint_pickled_code",
    "checkpoint_not_a_checkpoint",
    "checkpoint_does_not_exist",
    *ODD_TARS,
    "probe_store_without_the_images",
]


@pytest.mark.parametrize("case", CLI_CASES)
def test_cli_refuses_with_a_message_naming_the_item(cli, case):
    results, _ = cli
    result, needles = results[case]
    assert_user_error(result, *needles)


@pytest.mark.parametrize("case", ["truncated_png", "zero_byte_file", "not_an_image"])
def test_embed_from_a_manifest_quarantines_an_unreadable_image_and_goes_on(cli, case):
    import csv

    from pipeline.store import FeatureStore

    results, tmp = cli
    result, (file,) = results[case]
    assert result.returncode == 0, result.stderr
    assert "could not be read" in result.stderr and "quarantine.csv" in result.stderr, result.stderr
    store_path = tmp / case / "features" / "tiny"
    with open(store_path / "quarantine.csv") as handle:
        listed = list(csv.DictReader(handle))
    assert [Path(r["path"]).name for r in listed] == [file] and listed[0]["reason"], listed
    store = FeatureStore.open(store_path)
    assert listed[0]["image_id"] not in set(store.image_ids) and len(store) == 9  # the other 9 images are in


def test_pickled_code_never_runs(cli):
    _, tmp = cli
    assert not (tmp / "code-ran").exists()


def test_labels_outside_the_label_values_name_column_and_row():
    from pipeline.cards import packaged_card
    from pipeline.errors import ManifestError
    from pipeline.manifest import validate_manifest

    card = packaged_card("chexpert")
    frame = pd.DataFrame(
        {"image_id": ["a", "b", "c"], "path": ["a.png", "b.png", "c.png"], "patient_id": ["p", "q", "r"]}
        | {"split": ["train", "val", "test"]}
        | {c: [1.0, 0.0, np.nan] for c in card.label_columns}
    )
    validate_manifest(frame, card)  # 1, 0, NaN are fine; so is -1
    frame.loc[1, "Edema"] = 2.0
    with pytest.raises(ManifestError, match=r"'Edema'.*row 1 \(image_id b\): Edema=2\.0$"):
        validate_manifest(frame, card, source="m.parquet")
    frame.loc[1, "Edema"] = -1.0
    frame["Cardiomegaly"] = frame["Cardiomegaly"].astype(object)
    frame.loc[2, "Cardiomegaly"] = "yes"
    with pytest.raises(ManifestError, match=r"'Cardiomegaly'.*row 2 \(image_id c\): Cardiomegaly='yes'"):
        validate_manifest(frame, card, source="m.parquet")
    with pytest.raises(ManifestError, match=r"missing column.*Pleural Effusion"):
        validate_manifest(frame.drop(columns=["Pleural Effusion"]), card)


def test_checkpoint_config_mismatch_is_refused_naming_the_keys(tmp_path):
    """A weights file whose config.json describes another architecture: shape mismatches listed, nothing loaded."""
    from pipeline.backbone import load_backbone
    from pipeline.errors import CheckpointError
    from pipeline.workspace import Workspace

    ws = Workspace(tmp_path)
    folder = make_tiny_checkpoint(ws)
    (folder / "config.json").write_text(
        (folder / "config.json").read_text().replace('"embed_dim": 16', '"embed_dim": 32')
    )
    with pytest.raises(CheckpointError, match=r"model\.pt does not match.*shape mismatches"):
        load_backbone(folder)
    assert TINY.embed_dim == 16


def test_shard_quarantines_every_unreadable_input_and_drops_nothing(cli):
    from pipeline.shard.quarantine import read_quarantine
    from pipeline.shard.reader import iter_samples, shard_paths

    results, tmp = cli
    result, _ = results["shard_catalogue"]
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    out = tmp / "catalogue" / "shards" / "cat"
    quarantine = read_quarantine(out)
    reasons = dict(zip(quarantine.path, quarantine.reason, strict=True))
    assert sorted(reasons) == sorted(QUARANTINED)
    for name, reason in QUARANTINED.items():
        assert reason in reasons[name], (name, reasons[name])
    samples = {s.meta["path"]: s for s in iter_samples(shard_paths(out))}
    manifest = pd.read_parquet(tmp / "catalogue" / "manifests" / "cat.parquet")
    assert len(samples) + len(quarantine) == len(manifest)  # nothing silently dropped
    images = tmp / "catalogue" / "images" / "cat"
    grey16 = samples["grey16.png"].pixels
    assert grey16.dtype == np.uint16 and np.array_equal(grey16, np.asarray(Image.open(images / "grey16.png")))
    rgba = np.asarray(Image.open(images / "rgba.png"))
    assert np.array_equal(samples["rgba.png"].pixels, np.asarray(Image.fromarray(rgba[..., :3]).convert("L")))
    assert np.array_equal(samples["palette.png"].pixels, np.asarray(Image.open(images / "palette.png").convert("L")))
    assert samples["one_pixel.png"].pixels.tolist() == [[77]]
    summary = " ".join(result.stderr.split())
    assert f"{len(QUARANTINED)} quarantined" in summary and "missing file" in summary


def test_a_20000_pixel_square_image_is_refused_without_decoding_it(cli):
    """The genuine 400-megapixel PNG (and a JPEG claiming that size) are refused from the header: peak RSS
    of a process reading them stays far below the 400 MB their pixels would take."""
    import subprocess
    import sys

    _, tmp = cli
    images = tmp / "catalogue" / "images" / "cat"
    script = (
        "import resource, sys\n"
        "from pipeline.errors import ImageReadError\n"
        "from pipeline.imageio import read_image\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "for name in sys.argv[1:]:\n"
        "    try:\n"
        "        read_image(name, max_side=512)\n"
        "        print('decoded', name)\n"
        "    except ImageReadError as exc:\n"
        "        print('refused', exc)\n"
        "print('grew_kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(images / "huge_20000.png"), str(images / "huge_20000.jpg")],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert out.count("refused") == 2 and "20000x20000" in out, out
    grew_mb = int(out.split("grew_kb")[1]) / 1024
    assert grew_mb < 100, out


def test_probe_never_reuses_results_of_another_store_under_the_same_name(tmp_path):
    """Results of backbone name X, then features/X replaced by another backbone's store: the run is redone on
    the new store (its identity is part of the run key), never served from the old one."""
    import json as _json

    from pipeline.probe import ProbeConfig, run_probe
    from tests.pipeline.probe.conftest import make_workspace as make_probe_workspace

    ws = make_probe_workspace(tmp_path / "ws")
    backbone = next((ws.root / "features").iterdir()).name
    config = ProbeConfig(lrs=(1e-2,), epochs=2, n_resamples=10)
    first = run_probe(ws, "toy", "linear", config=config, progress=False)
    run_json = first.folder / "run.json"
    old = _json.loads(run_json.read_text())["store_attrs"]
    old_scores = pd.read_parquet(first.folder / "predictions.parquet")["score"].to_numpy()
    other = make_probe_workspace(tmp_path / "other", seed=5, strength=0.0)
    shutil.rmtree(ws.features_dir(backbone))
    shutil.copytree(other.features_dir(backbone), ws.features_dir(backbone))
    import zarr

    zarr.open_group(ws.features_dir(backbone), mode="r+").attrs["checkpoint_sha256"] = "d" * 64  # another backbone
    second = run_probe(ws, "toy", "linear", config=config, progress=False)
    assert not second.skipped
    new = _json.loads(run_json.read_text())["store_attrs"]
    assert new != old  # run.json records the store the results come from
    assert not np.array_equal(pd.read_parquet(first.folder / "predictions.parquet")["score"].to_numpy(), old_scores)
