"""Source-balanced row order for sharding: every stretch of the stream holds every source in proportion.

A weighted round-robin: rows are shuffled within their source (seeded), then the k-th row of a source with n
rows is placed at stream position key (k + offset) / n, with a random per-source offset in [0, 1). Sorting by
the key spreads each source evenly over the whole stream (plain one-by-one round-robin would exhaust the small
sources early and leave the tail to MIMIC and CheXpert), so consecutive shards, and a streaming reader's
modest shuffle buffer, see a mixed stream.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def interleaved_order(sources: Sequence[str] | np.ndarray, seed: int = 0) -> np.ndarray:
    """A permutation of row positions (int64) such that the rows' sources are interleaved in proportion."""
    labels = np.asarray(sources, dtype=object)
    n = len(labels)
    rng = np.random.default_rng(seed)
    names, codes = np.unique(labels.astype(str), return_inverse=True)
    keys = np.empty(n, dtype=np.float64)
    positions = np.empty(n, dtype=np.int64)
    cursor = 0
    for code in range(len(names)):
        rows = np.flatnonzero(codes == code)
        rows = rows[rng.permutation(len(rows))]
        offset = rng.random()
        keys[cursor : cursor + len(rows)] = (np.arange(len(rows)) + offset) / len(rows)
        positions[cursor : cursor + len(rows)] = rows
        cursor += len(rows)
    return positions[np.argsort(keys, kind="stable")]


def window_mix(sources: Sequence[str] | np.ndarray, order: np.ndarray, window: int) -> float:
    """The worst share gap over consecutive windows of the ordered stream: max over windows and sources of
    |share in window - share overall|. 0 is perfectly mixed; 1 - share is one source per window."""
    labels = np.asarray(sources, dtype=object).astype(str)[order]
    names, codes = np.unique(labels, return_inverse=True)
    overall = np.bincount(codes, minlength=len(names)) / len(codes)
    worst = 0.0
    for start in range(0, len(codes) - window + 1, window):
        share = np.bincount(codes[start : start + window], minlength=len(names)) / window
        worst = max(worst, float(np.abs(share - overall).max()))
    return worst
