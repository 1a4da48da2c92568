from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from pipeline.errors import ShardError
from pipeline.shard import iter_samples, shard_dataset, shard_paths, training_stream
from tests.pipeline.shard.conftest import GOOD_IDS, SourceSet


@pytest.fixture(scope="module")
def shard_dir(source_set: SourceSet, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    shard_dataset(source_set.manifest, source_set.root, out, "ds", samples_per_shard=2, max_side=64, progress=False)
    return out


def test_shard_paths_lists_complete_non_empty_shards_in_order(shard_dir: Path) -> None:
    paths = shard_paths(shard_dir)
    assert [p.name for p in paths] == sorted(p.name for p in paths)
    assert len(paths) == 7  # 15 rows in 8 shards of 2; the last holds only a quarantined row
    assert len(list(shard_dir.glob("ds-*.tar"))) == 8


@pytest.mark.parametrize("chosen", [slice(None), slice(1, 2)])  # 7 shards; one shard of 2 samples
def test_two_ranks_cover_every_sample_exactly_once(shard_dir: Path, chosen: slice) -> None:
    paths = shard_paths(shard_dir)[chosen]
    everything = [s.image_id for s in iter_samples(paths)]
    ranks = [[s.image_id for s in iter_samples(paths, rank=r, world_size=2)] for r in range(2)]
    assert ranks[0] and ranks[1] and not set(ranks[0]) & set(ranks[1])
    assert sorted(ranks[0] + ranks[1]) == sorted(everything)
    if chosen == slice(None):
        assert sorted(everything) == sorted(GOOD_IDS)
    with pytest.raises(ValueError):
        list(iter_samples(paths, rank=2, world_size=2))


def test_one_pass_stream_splits_ranks_and_keeps_16_bits(shard_dir: Path) -> None:
    seen = []
    for rank in range(2):
        stream = training_stream(shard_dir, shuffle_buffer=4, seed=1, rank=rank, world_size=2, resampled=False)
        seen += list(stream)
    assert sorted(s.image_id for s in seen) == sorted(GOOD_IDS)
    by_id = {s.image_id: s for s in seen}
    reference = {s.image_id: s for s in iter_samples(shard_paths(shard_dir))}
    for image_id, sample in by_id.items():
        assert sample.pixels.dtype == reference[image_id].pixels.dtype
        assert np.array_equal(sample.pixels, reference[image_id].pixels)
    assert by_id["ds_p0_1"].pixels.dtype == np.uint16 and by_id["ds_p0_1"].pixels.max() > 255
    assert by_id["ds_p0_1"].meta["split"] == "train"


def test_shuffled_stream_is_reproducible_and_seeded(shard_dir: Path) -> None:
    def order(seed: int) -> list[str]:
        return [s.image_id for s in training_stream(shard_dir, shuffle_buffer=8, seed=seed, resampled=False)]

    assert order(0) == order(0)
    assert sorted(order(0)) == sorted(GOOD_IDS)
    assert any(order(0) != order(s) for s in (1, 2, 3))


def test_resampled_stream_is_endless_and_per_rank(shard_dir: Path) -> None:
    def take(rank: int, n: int = 40) -> list[str]:
        stream = training_stream(shard_dir, shuffle_buffer=4, seed=5, rank=rank, world_size=2, resampled=True)
        return [s.image_id for s in itertools.islice(stream, n)]

    first = take(0)
    assert len(first) == 40 and max(Counter(first).values()) > 1  # drawn with replacement, past one epoch
    assert set(first) <= set(GOOD_IDS)
    assert take(0) == first and take(1) != first
    mapped = training_stream(shard_dir, shuffle_buffer=1, resampled=True).map(lambda s: s.pixels.shape)
    assert all(max(shape) <= 64 for shape in itertools.islice(mapped, 10))


def test_damaged_or_missing_index_is_an_error(shard_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ShardError, match="no shard index"):
        shard_paths(tmp_path)
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(shard_dir, copy)
    victim = shard_paths(copy)[2]
    victim.write_bytes(victim.read_bytes()[:-10240])
    with pytest.raises(ShardError, match="index records"):
        shard_paths(copy)
    victim.unlink()
    with pytest.raises(ShardError, match="listed in the index but missing"):
        shard_paths(copy)


ODD = {
    "parent_dir": [("../../escape.png", b"x"), ("../../escape.json", b"{}")],
    "absolute": [("/etc/cron.png", b"x"), ("/etc/cron.json", b'{"image_id": "a"}')],
    "png_without_json": [("lonely.png", b"x")],
    "json_not_json": [("k.png", b"x"), ("k.json", b"{not json")],
    "json_without_image_id": [("k.png", b"x"), ("k.json", b'{"path": "a.png"}')],
    "png_not_png": [("k.png", b"definitely not a png"), ("k.json", b'{"image_id": "a"}')],
}


@pytest.mark.parametrize("case", sorted(ODD))
def test_tars_breaking_the_contract_raise_shard_errors_naming_the_tar(tmp_path: Path, case: str) -> None:
    import io
    import tarfile

    path = tmp_path / "odd-000000.tar"
    with tarfile.open(path, "w") as tar:
        for name, data in ODD[case]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(ShardError, match=r"odd-000000\.tar"):
        list(iter_samples([path]))
    assert not (tmp_path.parent / "escape.png").exists()
