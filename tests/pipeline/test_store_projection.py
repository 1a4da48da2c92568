"""Projected / pooled feature stores: the streamed PCA fit, compress, resume, int8, info and the reader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pipeline.embed.compress import compress_store
from pipeline.errors import ConfigError, StoreError
from pipeline.store import FeatureStore, Item, StoreLayout, StoreWriter, store_attrs
from pipeline.store.projection import CovarianceAccumulator, flat_tokens, pool_patches

L, D, P, NREG = 2, 8, 16, 1  # 4x4 patch grid
TRAIN = {f"img{i}" for i in range(12)}


def _tokens(ids):
    """Tokens with a dominant 3-dim structure plus noise, deterministic per id."""
    g = torch.Generator().manual_seed(7)
    mix = torch.randn(3, L * D, generator=g) * 3
    out = {"cls": [], "patch": [], "registers": []}
    for i in ids:
        gi = torch.Generator().manual_seed(int(i[3:]) + 100)
        out["cls"].append(torch.randn(L, D, generator=gi))
        flat = torch.randn(P, 3, generator=gi) @ mix + 0.1 * torch.randn(P, L * D, generator=gi) + 1.0
        out["patch"].append(flat.reshape(P, L, D).permute(1, 0, 2))
        out["registers"].append(torch.randn(L, NREG, D, generator=gi))
    return {k: torch.stack(v) for k, v in out.items()}


def _full_store(path, n=20, unit_rows=4):
    layout = StoreLayout(L, D, P, NREG, chunk_rows=2, unit_rows=unit_rows)
    attrs = store_attrs("toy", {"embed_dim": D}, "ck", "a" * 64, [-2, -1], "float16", {})
    writer = StoreWriter.open(path, layout, attrs)
    for unit in writer.plan(Item(f"img{i}", 0, group="g") for i in range(n)):
        assert writer.claim(unit)
        writer.write_unit(unit, _tokens(unit.image_ids))
    return FeatureStore.open(path)


def test_covariance_accumulator_matches_numpy_pca_in_blocks(monkeypatch):
    import pipeline.store.projection as projection

    monkeypatch.setattr(projection, "BLOCK_BYTES", 4 * L * D * 7)  # force many blocks of 7 rows
    x = flat_tokens(_tokens([f"img{i}" for i in range(5)])["patch"]).double()
    acc = CovarianceAccumulator(L * D)
    acc.add(x[:33])
    acc.add(x[33:])
    fit = acc.fit(4)
    cov = np.cov(x.numpy(), rowvar=False)
    values, vectors = np.linalg.eigh(cov)
    np.testing.assert_allclose(fit.mean, x.numpy().mean(0), atol=1e-10)
    np.testing.assert_allclose(fit.variance, values[::-1][:4], rtol=1e-8)
    np.testing.assert_allclose(np.abs(fit.basis.T @ vectors[:, ::-1][:, :4]), np.eye(4), atol=1e-6)
    assert fit.total_variance == pytest.approx(np.trace(cov))
    assert fit.variance_kept == pytest.approx(values[::-1][:4].sum() / values.sum())


def test_pool_patches_averages_grid_neighbourhoods():
    patch = torch.arange(2 * 16 * 1, dtype=torch.float32).reshape(1, 2, 16, 1)
    pooled = pool_patches(patch, 2)
    assert pooled.shape == (1, 2, 4, 1)
    grid = patch[0, 0, :, 0].reshape(4, 4)
    assert pooled[0, 0, 0, 0] == grid[:2, :2].mean() and pooled[0, 0, 3, 0] == grid[2:, 2:].mean()
    with pytest.raises(ConfigError, match="--pool 3"):
        pool_patches(patch, 3)


def test_compress_projects_with_a_basis_fitted_on_train_images_only(tmp_path):
    source = _full_store(tmp_path / "full")
    summary = compress_store(tmp_path / "full", tmp_path / "r3", TRAIN, rank=3, progress=False)
    store = FeatureStore.open(tmp_path / "r3")
    assert summary.rows == len(store) == 20 and store.complete
    proj = store.projection
    assert proj.rank == 3 and store.layout.token_shape("patch") == (1, P, 3)
    assert proj.variance_kept > 0.99 and store.info()["variance_kept"] == pytest.approx(proj.variance_kept)
    # the mean is the train images' mean, not all images'
    train_rows = source.rows(sorted(TRAIN))
    train_x = flat_tokens(source.read(train_rows, ("patch",))["patch"]).double().numpy()
    np.testing.assert_allclose(proj.mean, train_x.mean(0), atol=1e-6)
    assert proj.fit["images"] == 12 and proj.fit["split"] == "train" and proj.fit["tokens"] == 12 * P
    # rows read through the same reader: CLS full, patch = U^T (x - mean) (fp16), reconstruction close
    ids = ["img17", "img3"]
    full = source.read(source.rows(ids))
    got = store.read(store.rows(ids))
    torch.testing.assert_close(got["cls"], full["cls"])
    torch.testing.assert_close(got["patch"], proj.apply(full["patch"]), atol=2e-2, rtol=2e-3)
    err = (proj.reconstruct(got["patch"], L) - full["patch"]).abs().max()
    assert err < 0.6 and got["patch"].shape == (2, 1, P, 3)


def test_compress_int8_pooled_and_pool_only(tmp_path):
    _full_store(tmp_path / "full")
    compress_store(tmp_path / "full", tmp_path / "q", TRAIN, rank=4, dtype="int8", pool=2, progress=False)
    store = FeatureStore.open(tmp_path / "q")
    assert store.layout.quantized and store.layout.token_shape("patch") == (1, 4, 4)
    assert store.read(store.rows(["img0"]))["patch"].shape == (1, 1, 4, 4)
    assert store.layout.grid == (2, 2)
    compress_store(tmp_path / "full", tmp_path / "p", TRAIN, rank=0, pool=2, progress=False)
    pooled = FeatureStore.open(tmp_path / "p")
    assert pooled.projection is None
    full = FeatureStore.open(tmp_path / "full")
    torch.testing.assert_close(
        pooled.read(pooled.rows(["img5"]))["patch"],
        pool_patches(full.read(full.rows(["img5"]))["patch"], 2), atol=2e-3, rtol=2e-3,
    )  # fmt: skip


def test_int8_projected_store_keeps_every_component(tmp_path):
    """int8 with one scale per token let the largest component set the step: components 100x smaller were
    rounded to a few levels (GLoRI on Shenzhen moved by -0.038 at R = L*D/4). Each component must keep its own
    precision."""
    source = _full_store(tmp_path / "full")
    compress_store(tmp_path / "full", tmp_path / "q", TRAIN, rank=4, dtype="int8", progress=False)
    store = FeatureStore.open(tmp_path / "q")
    proj = store.projection
    sd = np.sqrt(proj.variance)
    assert sd[0] / sd[-1] > 30  # a steep spectrum: three strong directions, then noise
    ids = [f"img{i}" for i in range(20)]
    exact = proj.reconstruct(proj.apply(source.read(source.rows(ids), ("patch",))["patch"]).double(), L)
    stored = proj.reconstruct(store.read(store.rows(ids), ("patch",))["patch"].double(), L)
    error = flat_tokens(stored - exact).numpy() @ proj.basis  # per principal direction
    relative = np.sqrt((error**2).mean(0)) / sd
    assert relative.max() < 0.02, relative


def test_stored_coordinates_are_whitened_and_older_raw_stores_still_read(tmp_path):
    import dataclasses

    import zarr

    from pipeline.store.projection import load_projection, save_projection

    source = _full_store(tmp_path / "full")
    compress_store(tmp_path / "full", tmp_path / "r3", TRAIN, rank=3, progress=False)
    proj = FeatureStore.open(tmp_path / "r3").projection
    x = source.read(source.rows(sorted(TRAIN)), ("patch",))["patch"]
    z = proj.apply(x).double()
    np.testing.assert_allclose(z.reshape(-1, 3).var(0, unbiased=True).numpy(), 1.0, rtol=1e-4)  # fit = train
    raw = dataclasses.replace(proj, whitened=False)
    np.testing.assert_allclose(raw.apply(x).double().numpy(), (z * torch.from_numpy(proj.component_scale)).numpy(),
                               rtol=1e-4, atol=1e-4)  # fmt: skip
    torch.testing.assert_close(raw.reconstruct(raw.apply(x).double(), L), proj.reconstruct(z, L), atol=1e-4, rtol=1e-4)
    # a store written before whitening has no `coordinates` attribute: it holds raw coordinates
    save_projection(tmp_path / "r3", raw)
    group = zarr.open_group(tmp_path / "r3", mode="r+")
    info = dict(group.attrs["projection"])
    assert info.pop("coordinates") == "raw"
    group.attrs["projection"] = info
    assert load_projection(tmp_path / "r3").whitened is False
    np.testing.assert_array_equal(load_projection(tmp_path / "r3").stored_basis, proj.basis)


def test_whitening_never_amplifies_a_near_null_direction_past_float16():
    from pipeline.store.projection import WHITEN_FLOOR, Projection

    f = L * D
    variance = np.array([1.0, 1e-2, 1e-14, 0.0])  # the fit tokens barely vary along the last two directions
    proj = Projection(np.zeros(f), np.eye(f)[:, :4], variance, float(variance.sum()))
    np.testing.assert_allclose(proj.component_scale, [1.0, 0.1, WHITEN_FLOOR, WHITEN_FLOOR])
    x = torch.zeros(1, L, 1, D)
    x[0, 0, 0, 2] = 3.0  # another image does vary along direction 2: a 3-SD coordinate of the first component
    z = proj.apply(x)
    assert torch.isfinite(z.half()).all() and z[0, 0, 0, 2] == pytest.approx(3.0 / WHITEN_FLOOR)
    torch.testing.assert_close(proj.reconstruct(z.double(), L).float(), x)


def test_compress_resumes_after_a_failure_and_never_redoes_a_finished_unit(tmp_path, monkeypatch):
    _full_store(tmp_path / "full")
    compress_store(tmp_path / "full", tmp_path / "ref", TRAIN, rank=3, unit_rows=4, progress=False)
    calls = {"n": 0}
    real = StoreWriter.write_unit

    def failing(self, unit, tokens, seconds=0.0):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # killed mid-run
        return real(self, unit, tokens, seconds)

    monkeypatch.setattr(StoreWriter, "write_unit", failing)
    with pytest.raises(KeyboardInterrupt):
        compress_store(tmp_path / "full", tmp_path / "out", TRAIN, rank=3, unit_rows=4, progress=False)
    monkeypatch.setattr(StoreWriter, "write_unit", real)
    partial = FeatureStore.open(tmp_path / "out")
    assert len(partial) == 8 and not partial.complete
    summary = compress_store(tmp_path / "full", tmp_path / "out", TRAIN, rank=3, unit_rows=4, progress=False)
    assert summary.written == 12
    a, b = FeatureStore.open(tmp_path / "ref"), FeatureStore.open(tmp_path / "out")
    ids = [f"img{i}" for i in range(20)]
    torch.testing.assert_close(a.read(a.rows(ids)), b.read(b.rows(ids)))
    np.testing.assert_array_equal(a.projection.basis, b.projection.basis)


def test_compress_refuses_other_rank_into_same_store_and_test_only_fit(tmp_path):
    _full_store(tmp_path / "full")
    compress_store(tmp_path / "full", tmp_path / "r3", TRAIN, rank=3, progress=False)
    with pytest.raises(StoreError, match="holds rank 3"):
        compress_store(tmp_path / "full", tmp_path / "r3", TRAIN, rank=5, progress=False)
    with pytest.raises(ConfigError, match="train split"):
        compress_store(tmp_path / "full", tmp_path / "none", {"other"}, rank=3, progress=False)
    with pytest.raises(ConfigError, match="--rank"):
        compress_store(tmp_path / "full", tmp_path / "big", TRAIN, rank=L * D + 1, progress=False)
    with pytest.raises(StoreError, match="already projected"):
        compress_store(tmp_path / "r3", tmp_path / "again", TRAIN, rank=2, progress=False)


def test_layout_bytes_per_image_for_projected_and_pooled_rows():
    full = StoreLayout(4, 1024, 1024, 0)
    assert full.bytes_per_image == 4 * 1025 * 1024 * 2
    proj = StoreLayout(4, 1024, 1024, 0, rank=256, pool=2)
    assert proj.bytes_per_image == 4 * 1024 * 2 + 256 * 256 * 2
    q = StoreLayout(4, 1024, 1024, 0, dtype="int8", rank=128)
    assert q.bytes_per_image == 4 * 1024 * 2 + 1024 * (128 + 4)  # CLS stays float16
    legacy = StoreLayout(4, 1024, 1024, 0, dtype="int8", rank=128, int8_parts="all")
    assert legacy.bytes_per_image == 4 * (1024 + 4) + 1024 * (128 + 4)


def test_python_api_reads_projected_and_pooled_stores_with_their_own_shapes(tmp_path):
    """pipeline.open_store once assumed full-width patch tokens: wrong shapes on a projected store (issue 13)."""
    from pipeline.api import open_store

    _full_store(tmp_path / "full")
    compress_store(tmp_path / "full", tmp_path / "r3p2", TRAIN, rank=3, pool=2, progress=False)
    compress_store(tmp_path / "full", tmp_path / "lossless", TRAIN, rank=L * D, progress=False)
    full, small, lossless = (open_store(tmp_path / n) for n in ("full", "r3p2", "lossless"))
    assert small.numpy("patch").shape == (20, 1, 4, 3)
    assert small.numpy("cls").shape == full.numpy("cls").shape == (20, L, D)
    # the pooled token is the mean patch token reconstructed through the basis: full width, and exact at full rank
    assert small.numpy("pooled").shape == (20, L, D)
    np.testing.assert_allclose(lossless.numpy("pooled"), full.numpy("pooled"), atol=5e-3)
    projection = FeatureStore.open(tmp_path / "r3p2").projection
    mean_z = torch.from_numpy(small.numpy("patch")).double().mean(dim=2, keepdim=True)
    expected = projection.reconstruct(mean_z, L)[:, :, 0].float().numpy()
    np.testing.assert_allclose(small.numpy("pooled"), expected, atol=1e-5)
    assert small.pandas("pooled").shape == (20, L * D) and small.pandas("pooled", layer=-1).shape == (20, D)


def _grid_store(path, grid, n=12):
    """A full store of a backbone whose patch grid is `grid` (h, w), as the store records it (non-square)."""
    layout = StoreLayout(L, D, grid[0] * grid[1], NREG, chunk_rows=2, unit_rows=4, patch_grid=grid)
    attrs = store_attrs("wide", {"embed_dim": D}, "ck", "a" * 64, [-2, -1], "float16", {}, patch_grid=list(grid))
    writer = StoreWriter.open(path, layout, attrs)
    for unit in writer.plan(Item(f"img{i}", 0, group="g") for i in range(n)):
        assert writer.claim(unit)
        tokens = _tokens(unit.image_ids)
        shape = (len(unit.image_ids), L, grid[0] * grid[1], D)
        tokens["patch"] = (torch.arange(np.prod(shape), dtype=torch.float32) % 97).reshape(shape)  # exact in fp16
        writer.write_unit(unit, tokens)
    return FeatureStore.open(path)


def _pooled_by_hand(patch: torch.Tensor, grid: tuple[int, int], pool: int) -> torch.Tensor:
    """(B, L, h·w, D) averaged over pool x pool blocks of the row-major h x w grid."""
    b, n_layers, _, d = patch.shape
    h, w = grid
    blocks = patch.reshape(b, n_layers, h // pool, pool, w // pool, pool, d)
    return blocks.mean(dim=(3, 5)).reshape(b, n_layers, (h // pool) * (w // pool), d)


@pytest.mark.parametrize("grid", [(2, 8), (2, 6), (6, 4)])
def test_pool_averages_blocks_of_a_non_square_grid(tmp_path, grid):
    """Issue 23: `--pool` read any grid as a square: a 2x8 grid (16 patches, like 4x4) was pooled as 4x4 blocks,
    mixing its rows; a 2x6 grid was refused as 'not square'."""
    full = _grid_store(tmp_path / "full", grid)
    compress_store(tmp_path / "full", tmp_path / "p", TRAIN, rank=0, pool=2, progress=False)
    pooled = FeatureStore.open(tmp_path / "p")
    assert pooled.layout.grid == (grid[0] // 2, grid[1] // 2)
    ids = ["img5", "img11"]
    want = _pooled_by_hand(full.read(full.rows(ids))["patch"].float(), grid, 2)
    torch.testing.assert_close(pooled.read(pooled.rows(ids))["patch"].float(), want, atol=2e-2, rtol=2e-3)
    # projected and pooled: the basis is fitted on (and applied to) the same blocks
    compress_store(tmp_path / "full", tmp_path / "r", TRAIN, rank=3, pool=2, progress=False)
    projected = FeatureStore.open(tmp_path / "r")
    assert projected.layout.grid == (grid[0] // 2, grid[1] // 2)
    x = projected.projection.reconstruct(projected.read(projected.rows(ids))["patch"].double(), L)
    assert x.shape == want.shape


def test_pool_refuses_a_non_square_grid_it_does_not_divide(tmp_path):
    _grid_store(tmp_path / "full", (2, 6))
    with pytest.raises(ConfigError, match=r"--pool 3 must divide both sides of the 2x6 patch grid"):
        compress_store(tmp_path / "full", tmp_path / "p", TRAIN, rank=0, pool=3, progress=False)
    with pytest.raises(ConfigError, match=r"2x6 patch grid"):
        pool_patches(torch.zeros(1, 1, 12, 2), 3, (2, 6))
    assert pool_patches(torch.ones(1, 1, 12, 2), 2, (2, 6)).shape == (1, 1, 3, 2)
