"""Pairs of 64-bit hashes within a Hamming distance, without comparing every pair (multi-index hashing).

Split the 64 bits into t+1 bands: by the pigeonhole principle two hashes at distance <= t agree exactly on at
least one band, so only hashes sharing a band value are compared. Each candidate pair is counted in the first
band it agrees on only, so no pair is reported twice. Candidates are generated in blocks of at most
`max_candidates`, which bounds memory even when many hashes share a band value.
"""

from __future__ import annotations

import numpy as np

from pipeline.errors import ConfigError

MAX_THRESHOLD = 16
DEFAULT_MAX_CANDIDATES = 4_000_000


def self_pairs(
    values: np.ndarray, threshold: int, max_candidates: int = DEFAULT_MAX_CANDIDATES
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (i < j) of `values` (uint64) with 0 < hamming(v_i, v_j) <= threshold: arrays i, j, distance.

    Equal values (distance 0) are left out: callers group identical hashes themselves.
    """
    values = np.ascontiguousarray(values, dtype=np.uint64)
    masks = band_masks(threshold)
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for band, mask in enumerate(masks):
        keys = values & mask
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        group_end = np.searchsorted(sorted_keys, sorted_keys, side="right")
        partners = group_end - np.arange(len(values)) - 1
        for start, stop in _blocks(partners, max_candidates):
            counts = partners[start:stop]
            left_pos = np.repeat(np.arange(start, stop), counts)
            right_pos = left_pos + 1 + _ranks(counts)
            i = np.minimum(order[left_pos], order[right_pos])
            j = np.maximum(order[left_pos], order[right_pos])
            found.append(_keep(values[i], values[j], i, j, masks[:band], threshold))
    return _concat(found)


def cross_pairs(
    queries: np.ndarray, targets: np.ndarray, threshold: int, max_candidates: int = DEFAULT_MAX_CANDIDATES
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (q, t) with hamming(queries[q], targets[t]) <= threshold (distance 0 included)."""
    queries = np.ascontiguousarray(queries, dtype=np.uint64)
    targets = np.ascontiguousarray(targets, dtype=np.uint64)
    masks = band_masks(threshold)
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for band, mask in enumerate(masks):
        target_keys = targets & mask
        order = np.argsort(target_keys, kind="stable")
        sorted_keys = target_keys[order]
        query_keys = queries & mask
        low = np.searchsorted(sorted_keys, query_keys, side="left")
        counts = np.searchsorted(sorted_keys, query_keys, side="right") - low
        for start, stop in _blocks(counts, max_candidates):
            block = counts[start:stop]
            q = np.repeat(np.arange(start, stop), block)
            t = order[np.repeat(low[start:stop], block) + _ranks(block)]
            found.append(_keep(queries[q], targets[t], q, t, masks[:band], threshold, include_equal=True))
    return _concat(found)


def band_masks(threshold: int) -> list[np.uint64]:
    """threshold+1 disjoint bit masks covering the 64 bits as evenly as possible."""
    if not 0 <= threshold <= MAX_THRESHOLD:
        raise ConfigError(f"--near-threshold must be between 0 and {MAX_THRESHOLD} bits, not {threshold}")
    n_bands = threshold + 1
    widths = [64 // n_bands + (1 if b < 64 % n_bands else 0) for b in range(n_bands)]
    masks, shift = [], 0
    for width in widths:
        masks.append(np.uint64(((1 << width) - 1) << shift))
        shift += width
    return masks


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise Hamming distance of two uint64 arrays."""
    return np.bitwise_count(np.bitwise_xor(a, b)).astype(np.int64)


def _keep(
    a: np.ndarray,
    b: np.ndarray,
    i: np.ndarray,
    j: np.ndarray,
    earlier_masks: list[np.uint64],
    threshold: int,
    include_equal: bool = False,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    xor = np.bitwise_xor(a, b)
    distance = np.bitwise_count(xor).astype(np.int64)
    keep = distance <= threshold
    if not include_equal:
        keep &= distance > 0
    for mask in earlier_masks:  # found already in an earlier band
        keep &= (xor & mask) != 0
    return i[keep], j[keep], distance[keep]


def _ranks(counts: np.ndarray) -> np.ndarray:
    """0..c-1 for each count c, concatenated."""
    total = int(counts.sum())
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    return np.arange(total) - starts


def _blocks(counts: np.ndarray, max_candidates: int) -> list[tuple[int, int]]:
    """Consecutive ranges of rows whose candidate counts sum to about max_candidates (at least one row)."""
    blocks, start = [], 0
    cumulative = np.cumsum(counts)
    n = len(counts)
    while start < n:
        base = cumulative[start - 1] if start else 0
        stop = int(np.searchsorted(cumulative, base + max_candidates, side="right"))
        stop = max(stop, start + 1)
        if int(cumulative[stop - 1] - base) > 0:
            blocks.append((start, stop))
        start = stop
    return blocks


def _concat(found: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if not found:
        empty = np.array([], dtype=np.int64)
        return empty, empty.copy(), empty.copy()
    i, j, d = (np.concatenate(parts).astype(np.int64) for parts in zip(*found, strict=True))
    return i, j, d
