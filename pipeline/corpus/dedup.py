"""Exact duplicates (same decoded pixels: removed) and near-duplicates (close pHash: flagged, kept).

Rows are taken in priority order: the first occurrence of an image is the one kept (the corpus build puts
sources in the order given, then each source's manifest order), and a later copy points at it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.corpus.hashing import phash_to_int
from pipeline.corpus.nearsearch import self_pairs


def exact_duplicates(content_hashes: pd.Series, image_ids: pd.Series) -> pd.Series:
    """For each row, the image_id of the first row with the same content hash, or None if it is the first."""
    hashes = content_hashes.reset_index(drop=True)
    ids = image_ids.reset_index(drop=True).astype(object)
    first = ids.groupby(hashes, sort=False).transform("first")
    return first.where(first != ids, None).astype(object)


@dataclass(frozen=True)
class NearDuplicates:
    """Near-duplicate flags for rows in priority order.

    near_duplicate_of: per row, the image_id of the nearest earlier row within the threshold (ties: the
    earliest), None if there is none. distance: its Hamming distance (-1 when None). pair_counts: image
    pairs within the threshold per unordered source pair (source_a, source_b, pairs). n_pairs: their total.
    """

    near_duplicate_of: pd.Series
    distance: np.ndarray
    pair_counts: pd.DataFrame
    n_pairs: int


def near_duplicates(
    image_ids: Sequence[str], phashes: Sequence[str], sources: Sequence[str], threshold: int
) -> NearDuplicates:
    """Flag rows whose pHash is within `threshold` bits of an earlier row's (rows in priority order)."""
    ids = np.asarray(list(image_ids), dtype=object)
    source_arr = np.asarray(list(sources), dtype=object)
    n = len(ids)
    values = phash_to_int(list(phashes))
    unique, inverse = np.unique(values, return_inverse=True)
    inverse = inverse.reshape(-1)
    first_row = np.full(len(unique), n, dtype=np.int64)
    np.minimum.at(first_row, inverse, np.arange(n))
    ui, uj, ud = self_pairs(unique, threshold)

    best = _nearest_earlier(n, inverse, first_row, ui, uj, ud)
    near_of = pd.Series([ids[r] if r >= 0 else None for r in best[:, 1]], dtype=object)
    source_order = list(dict.fromkeys(source_arr.tolist()))
    counts, n_pairs = _pair_counts(inverse, source_arr, source_order, len(unique), ui, uj)
    return NearDuplicates(near_duplicate_of=near_of, distance=best[:, 0], pair_counts=counts, n_pairs=n_pairs)


def _nearest_earlier(
    n: int, inverse: np.ndarray, first_row: np.ndarray, ui: np.ndarray, uj: np.ndarray, ud: np.ndarray
) -> np.ndarray:
    """(distance, row) of each row's nearest earlier neighbour; (-1, -1) when none.

    The best candidate in a group of identical hashes is its first row, so each row compares itself with
    its own group's first row (distance 0) and with the first row of every neighbouring hash value.
    """
    rows = np.arange(n)
    cand_row = [rows]
    cand_target = [first_row[inverse]]
    cand_dist = [np.zeros(n, dtype=np.int64)]
    if len(ui):
        # Both directions of every value edge, expanded to the rows holding the value.
        src = np.concatenate([ui, uj])
        dst = np.concatenate([uj, ui])
        dist = np.concatenate([ud, ud])
        order = np.argsort(inverse, kind="stable")
        group_start = np.searchsorted(inverse[order], src, side="left")
        group_size = np.searchsorted(inverse[order], src, side="right") - group_start
        offsets = np.arange(int(group_size.sum())) - np.repeat(np.cumsum(group_size) - group_size, group_size)
        cand_row.append(order[np.repeat(group_start, group_size) + offsets])
        cand_target.append(np.repeat(first_row[dst], group_size))
        cand_dist.append(np.repeat(dist, group_size))
    row = np.concatenate(cand_row)
    target = np.concatenate(cand_target)
    dist = np.concatenate(cand_dist)
    earlier = target < row
    row, target, dist = row[earlier], target[earlier], dist[earlier]
    pick = np.lexsort((target, dist, row))
    row, target, dist = row[pick], target[pick], dist[pick]
    first = np.ones(len(row), dtype=bool)
    first[1:] = row[1:] != row[:-1]
    best = np.full((n, 2), -1, dtype=np.int64)
    best[row[first], 0] = dist[first]
    best[row[first], 1] = target[first]
    return best


def _pair_counts(
    inverse: np.ndarray,
    sources: np.ndarray,
    source_order: list[str],
    n_values: int,
    ui: np.ndarray,
    uj: np.ndarray,
) -> tuple[pd.DataFrame, int]:
    """Image pairs within the threshold per source pair, counted from per-value source counts: rows with the
    same hash pair up within their group, and every value edge pairs all rows of both values."""
    code = {name: k for k, name in enumerate(source_order)}
    source_code = np.array([code[s] for s in sources], dtype=np.int64)
    n_sources = len(source_order)
    per_value = np.zeros((n_values, n_sources), dtype=np.int64)
    np.add.at(per_value, (inverse, source_code), 1)
    ordered = per_value.T @ per_value  # same-value pairs, ordered, self-pairs on the diagonal
    within = np.triu(ordered, 1) + np.diag((np.diag(ordered) - per_value.sum(axis=0)) // 2)
    cross = per_value[ui].T @ per_value[uj] if len(ui) else np.zeros((n_sources, n_sources), dtype=np.int64)
    across = np.triu(cross + cross.T, 1) + np.diag(np.diag(cross))
    total = within + across
    a, b = np.nonzero(total)
    table = pd.DataFrame(
        {
            "source_a": [source_order[k] for k in a],
            "source_b": [source_order[k] for k in b],
            "pairs": total[a, b].astype(np.int64),
        }
    )
    table = table.sort_values(["pairs", "source_a", "source_b"], ascending=[False, True, True], ignore_index=True)
    return table, int(total.sum())
