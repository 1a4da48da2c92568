"""A projected store's basis, mean and variance are protected like its tokens: a flipped byte or a missing chunk
is a StoreError naming the store and array on every open, `chex store verify` reports it and takes the rows back,
and the rerun refits the basis properly (never a zero basis). A compress rerun with another fit request into an
existing store is refused, not silently given the old basis."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.embed.compress import compress_store
from pipeline.errors import StoreError
from pipeline.store import FeatureStore
from pipeline.store.verify import verify_store
from tests.pipeline.test_store_projection import TRAIN, _full_store

IDS = [f"img{i}" for i in range(20)]


def _compressed(tmp_path: Path, **kwargs) -> Path:
    _full_store(tmp_path / "full")
    compress_store(tmp_path / "full", tmp_path / "r3", TRAIN, rank=3, progress=False, **kwargs)
    return tmp_path / "r3"


def _chunk(store: Path, array: str) -> Path:
    (file,) = [f for f in (store / array / "c").rglob("*") if f.is_file()]
    return file


def _flip(file: Path) -> None:
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0x10
    file.write_bytes(bytes(data))


@pytest.mark.parametrize("array", ["projection_basis", "projection_mean", "projection_variance"])
@pytest.mark.parametrize("how", ["flip", "delete"])
def test_a_damaged_projection_array_is_refused_on_open_naming_store_and_array(tmp_path, array, how):
    path = _compressed(tmp_path)
    file = _chunk(path, array)
    _flip(file) if how == "flip" else file.unlink()
    with pytest.raises(StoreError) as err:
        FeatureStore.open(path)  # every open, whatever rows are read afterwards
    assert str(path) in str(err.value) and array in str(err.value), err.value


def test_unit_records_no_longer_hold_the_projection(tmp_path):
    """Listed only under unit 0 before: a reader of other units never checked it, and verify's take-back of unit 0
    deleted the basis."""
    path = _compressed(tmp_path)
    for done in (path / "ledger" / "done").glob("unit-*.json"):
        assert not [f for f in json.loads(done.read_text())["files"] if f.startswith("projection")], done


def test_verify_reports_a_flipped_basis_and_the_rerun_refits_it(tmp_path):
    """Before: `store info` said complete, GLoRI met NaN; verify deleted unit 0's files including the basis, the
    rerun printed 'variance kept 0.0000' and left rows of zeros."""
    path = _compressed(tmp_path)
    good = FeatureStore.open(path)
    want_patch = good.read(good.rows(IDS), ("patch",))["patch"].numpy()
    want_basis, want_kept = good.projection.basis.copy(), good.projection.variance_kept
    _flip(_chunk(path, "projection_basis"))
    report = verify_store(path)
    assert not report.ok and report.projection and "projection_basis" in " ".join(report.projection)
    assert "chex store compress" in report.repair
    summary = compress_store(tmp_path / "full", path, TRAIN, rank=3, progress=False)
    assert summary.variance_kept == pytest.approx(want_kept, rel=1e-6) and summary.variance_kept > 0.9
    store = FeatureStore.open(path)
    np.testing.assert_allclose(np.abs(store.projection.basis.T @ want_basis), np.eye(3), atol=1e-6)
    got = store.read(store.rows(IDS), ("patch",))["patch"].numpy()
    assert np.all(np.abs(got).reshape(len(IDS), -1).max(1) > 0)  # no row of zeros
    np.testing.assert_allclose(got, want_patch, atol=1e-2)
    assert verify_store(path).ok


def test_an_old_store_whose_basis_chunk_is_gone_never_reads_a_zero_basis(tmp_path):
    """Stores written before the projection had its own records: a missing chunk read as Zarr's fill value."""
    path = _compressed(tmp_path)
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["projection"].pop("files")  # as an older chex wrote it
    (path / "zarr.json").write_text(json.dumps(meta))
    _chunk(path, "projection_basis").unlink()
    with pytest.raises(StoreError, match="projection_basis"):
        FeatureStore.open(path)


def test_compress_into_an_existing_store_with_another_fit_request_is_refused(tmp_path):
    path = _compressed(tmp_path, fit_images=0)
    compress_store(tmp_path / "full", path, TRAIN, rank=3, fit_images=0, progress=False)  # the same: resumes
    with pytest.raises(StoreError, match="fit-images") as err:
        compress_store(tmp_path / "full", path, TRAIN, rank=3, fit_images=5, progress=False)
    assert str(path) in str(err.value)
    with pytest.raises(StoreError, match="dataset"):
        compress_store(tmp_path / "full", path, TRAIN, rank=3, fit_images=0, fit_datasets=["other"], progress=False)


def test_pool_error_names_the_grid_side():
    """`--pool 3` on a 4x4 grid printed '(16)', the number of patches, as if it were the side."""
    from pipeline.store import StoreLayout

    with pytest.raises(ValueError, match="4x4 patch grid; pools that do: 2, 4"):
        StoreLayout(2, 8, 16, 0, pool=3)


def test_verify_tells_a_compressed_store_to_rerun_compress_not_embed(tmp_path):
    from typer.testing import CliRunner

    from pipeline.cli import app

    path = _compressed(tmp_path)
    unit_file = next(f for f in (path / "patch" / "c").rglob("*") if f.is_file())
    _flip(unit_file)
    result = CliRunner().invoke(app, ["store", "verify", str(path), "--workspace", str(tmp_path / "ws")])
    assert result.exit_code == 2, result.output
    assert "chex store compress" in result.output and "chex embed" not in result.output, result.output
