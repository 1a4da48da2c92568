from __future__ import annotations

from collections import Counter

import numpy as np
import pandas as pd

from pipeline.corpus.dedup import exact_duplicates, near_duplicates
from pipeline.corpus.nearsearch import hamming


def test_exact_duplicates_point_at_the_first_copy():
    hashes = pd.Series(["h1", "h2", "h1", "h3", "h2", "h1"])
    ids = pd.Series(["a", "b", "c", "d", "e", "f"])
    assert exact_duplicates(hashes, ids).tolist() == [None, None, "a", None, "b", "a"]


def _hashes_with_repeats(seed: int = 0) -> tuple[list[str], list[str], list[str]]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 2**63, size=40, dtype=np.uint64)
    values = []
    for value in base:
        values.append(value)
        for _ in range(rng.integers(0, 4)):  # near copies (1-5 bits) and exact repeats (0 bits)
            flips = rng.choice(64, size=rng.integers(0, 6), replace=False)
            values.append(value ^ np.uint64(sum(1 << int(b) for b in flips)))
    values = np.array(values, dtype=np.uint64)[rng.permutation(len(values))]
    ids = [f"img{k}" for k in range(len(values))]
    sources = [("a", "b", "c")[k] for k in rng.integers(0, 3, size=len(values))]
    return ids, [f"{int(v):016x}" for v in values], sources


def test_near_duplicates_equal_brute_force():
    ids, phashes, sources = _hashes_with_repeats()
    threshold = 4
    result = near_duplicates(ids, phashes, sources, threshold)
    values = np.array([int(h, 16) for h in phashes], dtype=np.uint64)
    distance = hamming(values[:, None], values[None, :])

    expected_of, expected_distance = [], []
    for row in range(len(ids)):
        earlier = [(int(distance[row, j]), j) for j in range(row) if distance[row, j] <= threshold]
        best = min(earlier) if earlier else None
        expected_of.append(ids[best[1]] if best else None)
        expected_distance.append(best[0] if best else -1)
    assert result.near_duplicate_of.tolist() == expected_of
    assert result.distance.tolist() == expected_distance
    assert sum(x is not None for x in expected_of) > 10  # not vacuous

    pairs = Counter()
    i, j = np.triu_indices(len(ids), 1)
    for a, b in zip(i[distance[i, j] <= threshold], j[distance[i, j] <= threshold], strict=True):
        pairs[tuple(sorted((sources[a], sources[b])))] += 1
    got = {tuple(sorted((r.source_a, r.source_b))): r.pairs for r in result.pair_counts.itertuples()}
    assert got == dict(pairs)
    assert result.n_pairs == sum(pairs.values())


def test_no_near_duplicates_when_hashes_are_far_apart():
    phashes = ["0000000000000000", "ffffffffffffffff", "00000000ffffffff"]
    result = near_duplicates(["x", "y", "z"], phashes, ["a", "a", "b"], threshold=8)
    assert result.near_duplicate_of.isna().all()
    assert result.n_pairs == 0 and result.pair_counts.empty
