from __future__ import annotations

import numpy as np
import pytest

from pipeline.corpus.nearsearch import band_masks, cross_pairs, hamming, self_pairs
from pipeline.errors import ConfigError


def _clustered_hashes(seed: int = 0, n_base: int = 120) -> np.ndarray:
    """Random 64-bit hashes plus copies with 1..6 flipped bits, so every distance up to 6 occurs."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**63, size=n_base, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    copies = [base]
    for n_flips in range(1, 7):
        flips = np.zeros(n_base, dtype=np.uint64)
        for bit in rng.integers(0, 64, size=(n_flips, n_base)):
            flips |= np.uint64(1) << bit.astype(np.uint64)
        copies.append(base ^ flips)
    return np.unique(np.concatenate(copies))


def _brute_force_self(values: np.ndarray, threshold: int) -> set[tuple[int, int]]:
    distance = hamming(values[:, None], values[None, :])
    i, j = np.triu_indices(len(values), 1)
    keep = (distance[i, j] > 0) & (distance[i, j] <= threshold)
    return set(zip(i[keep].tolist(), j[keep].tolist(), strict=True))


@pytest.mark.parametrize("threshold", [0, 1, 3, 4, 6, 10])
@pytest.mark.parametrize("max_candidates", [5, 1_000_000])
def test_self_pairs_equal_brute_force(threshold, max_candidates):
    values = _clustered_hashes()
    i, j, d = self_pairs(values, threshold, max_candidates=max_candidates)
    found = list(zip(i.tolist(), j.tolist(), strict=True))
    assert len(found) == len(set(found)), "a pair was reported twice"
    assert set(found) == _brute_force_self(values, threshold)
    assert np.array_equal(d, hamming(values[i], values[j]))
    assert np.all(i < j)
    if threshold >= 3:
        assert len(found) > 100  # the clustered set has many close pairs: the test is not vacuous


def test_self_pairs_handles_one_huge_bucket_in_blocks():
    # 400 hashes sharing every band value but the last: one bucket of 400 per band, pairs in small blocks.
    values = np.arange(400, dtype=np.uint64)
    i, j, _ = self_pairs(values, 2, max_candidates=1000)
    assert set(zip(i.tolist(), j.tolist(), strict=True)) == _brute_force_self(values, 2)


@pytest.mark.parametrize("threshold", [0, 2, 5])
def test_cross_pairs_equal_brute_force(threshold):
    values = _clustered_hashes(seed=1)
    queries = values[::7] ^ np.uint64(0b101)
    q, t, d = cross_pairs(queries, values, threshold, max_candidates=50)
    distance = hamming(queries[:, None], values[None, :])
    expected = set(zip(*[a.tolist() for a in np.nonzero(distance <= threshold)], strict=True))
    found = list(zip(q.tolist(), t.tolist(), strict=True))
    assert len(found) == len(set(found))
    assert set(found) == expected
    assert np.array_equal(d, distance[q, t])


def test_band_masks_partition_the_64_bits():
    for threshold in range(17):
        masks = band_masks(threshold)
        assert len(masks) == threshold + 1
        combined = 0
        for mask in masks:
            assert combined & int(mask) == 0
            combined |= int(mask)
        assert combined == 2**64 - 1
    with pytest.raises(ConfigError, match="near-threshold"):
        band_masks(40)
