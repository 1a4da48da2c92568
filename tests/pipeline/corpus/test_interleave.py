from __future__ import annotations

import numpy as np

from pipeline.corpus.interleave import interleaved_order, window_mix


def _sources() -> np.ndarray:
    # Table I-like imbalance: a big, a medium and two small sources, listed one after the other.
    return np.array(["mimic"] * 2000 + ["chexpert"] * 1000 + ["vindr"] * 150 + ["object"] * 50, dtype=object)


def test_order_is_a_seeded_permutation():
    sources = _sources()
    order = interleaved_order(sources, seed=3)
    assert sorted(order.tolist()) == list(range(len(sources)))
    assert np.array_equal(order, interleaved_order(sources, seed=3))
    assert not np.array_equal(order, interleaved_order(sources, seed=4))


def test_every_window_holds_every_source_in_proportion():
    sources = _sources()
    order = interleaved_order(sources, seed=0)
    ordered = sources[order]
    window = 320  # a shard-sized stretch: expected 200 mimic, 100 chexpert, 15 vindr, 5 object
    for start in range(0, len(ordered) - window + 1, window):
        counts = {name: int((ordered[start : start + window] == name).sum()) for name in ("mimic", "vindr", "object")}
        assert abs(counts["mimic"] - 200) <= 2
        assert abs(counts["vindr"] - 15) <= 2
        assert 4 <= counts["object"] <= 6
    assert window_mix(sources, order, window) < 0.01
    # The input order (one source after the other) is the worst case the interleave fixes.
    assert window_mix(sources, np.arange(len(sources)), window) > 0.3


def test_rows_are_shuffled_within_a_source():
    sources = _sources()
    order = interleaved_order(sources, seed=0)
    mimic_rows = order[sources[order] == "mimic"]
    assert not np.array_equal(mimic_rows, np.sort(mimic_rows))
