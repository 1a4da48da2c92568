"""The contamination guard: keep evaluation test images (and, where ids are shared, test patients) out of the
pretraining corpus.

A corpus row leaks when
- its decoded pixels equal those of an evaluation set's test image (`image`), or
- its source shares patient ids with the evaluation set (CXR-LT 24 <-> MIMIC-CXR, CheXpert <-> CheXpert) and
  its patient is one of the test patients (`patient`), or
- optionally, its pHash is within the near-duplicate threshold of a test image's (`near_image`): re-encoded or
  resized copies of test images. These are always reported; they are dropped only when asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipeline.corpus.hashing import phash_to_int
from pipeline.corpus.nearsearch import cross_pairs

LEAK_REASONS = ("image", "patient", "near_image")


@dataclass(frozen=True)
class EvalSet:
    """An evaluation set's test split: `test` has image_id, patient_id, content_hash, phash (unreadable
    images have no hashes and can only be matched by patient). `patient_sources` are the corpus sources whose
    patient ids are the same as this set's."""

    name: str
    test: pd.DataFrame
    patient_sources: tuple[str, ...] = field(default_factory=tuple)


def find_leaks(corpus: pd.DataFrame, eval_sets: Sequence[EvalSet], near_threshold: int | None = None) -> pd.DataFrame:
    """One row per leaking corpus row: row (position in `corpus`), eval_set, reason, eval_image_id.

    `corpus` needs source, source_patient_id, content_hash, phash. A row that leaks several ways is listed
    once, with the first reason in LEAK_REASONS order and the first evaluation set given.
    """
    found: list[pd.DataFrame] = []
    corpus = corpus.reset_index(drop=True)
    for eval_set in eval_sets:
        test = eval_set.test.reset_index(drop=True)
        found.append(_image_leaks(corpus, test, eval_set.name))
        found.append(_patient_leaks(corpus, test, eval_set))
        if near_threshold is not None:
            found.append(_near_leaks(corpus, test, eval_set.name, near_threshold))
    columns = ["row", "eval_set", "reason", "eval_image_id"]
    leaks = pd.concat([f for f in found if len(f)], ignore_index=True) if any(len(f) for f in found) else None
    if leaks is None:
        return pd.DataFrame({c: pd.Series(dtype=np.int64 if c == "row" else object) for c in columns})
    leaks["rank"] = leaks["reason"].map(LEAK_REASONS.index)
    leaks = leaks.sort_values(["row", "rank"], kind="stable").drop_duplicates("row", keep="first")
    return leaks[columns].reset_index(drop=True)


def _image_leaks(corpus: pd.DataFrame, test: pd.DataFrame, name: str) -> pd.DataFrame:
    hashes = test.dropna(subset=["content_hash"]).drop_duplicates("content_hash")
    first_id = pd.Series(hashes["image_id"].to_numpy(), index=hashes["content_hash"].to_numpy())
    matched = corpus["content_hash"].map(first_id)
    rows = np.flatnonzero(matched.notna().to_numpy())
    return pd.DataFrame({"row": rows, "eval_set": name, "reason": "image", "eval_image_id": matched.to_numpy()[rows]})


def _patient_leaks(corpus: pd.DataFrame, test: pd.DataFrame, eval_set: EvalSet) -> pd.DataFrame:
    if not eval_set.patient_sources:
        return pd.DataFrame()
    patients = set(test["patient_id"].astype(str))
    linked = corpus["source"].isin(eval_set.patient_sources).to_numpy()
    shared = corpus["source_patient_id"].astype(str).isin(patients).to_numpy()
    rows = np.flatnonzero(linked & shared)
    return pd.DataFrame({"row": rows, "eval_set": eval_set.name, "reason": "patient", "eval_image_id": None})


def _near_leaks(corpus: pd.DataFrame, test: pd.DataFrame, name: str, threshold: int) -> pd.DataFrame:
    corpus_ok = np.flatnonzero(corpus["phash"].notna().to_numpy())
    test = test.dropna(subset=["phash"])
    if not len(corpus_ok) or not len(test):
        return pd.DataFrame()
    q, t, _ = cross_pairs(phash_to_int(corpus["phash"].to_numpy()[corpus_ok]), phash_to_int(test["phash"]), threshold)
    frame = pd.DataFrame({"row": corpus_ok[q], "eval_image_id": test["image_id"].to_numpy()[t]})
    frame = frame.drop_duplicates("row")
    frame["eval_set"] = name
    frame["reason"] = "near_image"
    return frame
