"""NIH ChestX-ray14: Data_Entry_2017.csv (+ train_val_list.txt / test_list.txt) -> manifest.

`Finding Labels` is pipe-separated (`Effusion|Mass`, or `No Finding`); every finding is 1 or 0 (the NLP
labels have no uncertain class). The official lists give the split; without them the split is a seeded
patient-level one with the official proportions. Images sit in images_NNN/images/ folders in the download:
pass --root and bare file names are found.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from data_manifests.adapters.common import (
    Source,
    add_note,
    check_patient_splits,
    check_unique,
    csv_lines,
    paper_fractions,
    parse_sources,
    patient_splits,
    read_csv,
    sex_code,
    split_from_name,
    view_name,
)
from pipeline.cards import packaged_card
from pipeline.errors import ManifestError
from pipeline.manifest import rows_of

NO_FINDING = "No Finding"


def build(sources: Sequence[str | Source], seed: int = 0) -> pd.DataFrame:
    card = packaged_card("cxr14")
    findings = card.label_columns
    entries, lists = None, {}
    for source in parse_sources(sources):
        if source.path.suffix.lower() == ".txt":
            lists[source.path] = split_from_name(source, ("train", "test", "val"))
        elif entries is None:
            entries = (source, read_csv(source.path, ["Image Index", "Finding Labels", "Patient ID"], dtype=str))
        else:
            raise ManifestError(f"{source.path}: only one Data_Entry_2017.csv expected (got {entries[0].path} too)")
    if entries is None:
        raise ManifestError("cxr14: no Data_Entry_2017.csv among the sources")
    source, raw = entries
    check_unique(raw, "Image Index", source.path)
    names = raw["Image Index"].str.strip()
    patients = raw["Patient ID"].str.strip().str.lstrip("0").replace("", "0")
    frame = pd.DataFrame(
        {
            "image_id": "cxr14_" + names.str.replace(r"\.[A-Za-z]+$", "", regex=True),
            "path": names,
            "patient_id": patients,
            "split": _splits(names, patients, lists, card, seed, source),
            "view": raw["View Position"].map(view_name) if "View Position" in raw else None,
        }
    )
    if "Patient Age" in raw:
        frame["age"] = pd.to_numeric(raw["Patient Age"], errors="coerce")
    if "Patient Gender" in raw:
        frame["sex"] = raw["Patient Gender"].map(sex_code)
    labels = _labels(raw, findings, source)
    frame = pd.concat([frame, labels], axis=1)
    counts = frame["split"].value_counts()
    official = ", ".join(f"{k} {v:,}" for k, v in card.paper_splits.items())
    if not lists:
        add_note(
            frame,
            f"no train_val_list.txt / test_list.txt: a seeded patient-level split (seed {seed}) in the official "
            f"proportions gave train {int(counts.get('train', 0)):,} / test {int(counts.get('test', 0)):,} "
            f"(official: {official}); pass both lists for the official split",
        )
    else:
        add_note(frame, f"split from the official lists {', '.join(p.name for p in lists)}")
    if "val" not in counts:
        add_note(frame, "no val split: the probe carves one out of train by patient (10%)")
    check_patient_splits(frame, f"{source.path} with {', '.join(str(p) for p in lists)}")
    return frame


def _labels(raw: pd.DataFrame, findings: list[str], source: Source) -> pd.DataFrame:
    tokens = raw["Finding Labels"].fillna("").str.split("|").map(lambda ts: {t.strip() for t in ts if t.strip()})
    known = {*findings, NO_FINDING}
    bad = tokens.map(lambda ts: not ts or not ts <= known)
    if bad.any():
        raise ManifestError(
            f"{source.path}: unknown finding label(s) at "
            f"{rows_of(raw, bad.to_numpy(), 'Finding Labels', csv_lines(raw))}; "
            f"expected pipe-separated names among {sorted(known)}"
        )
    return pd.DataFrame({f: tokens.map(lambda ts, f=f: float(f in ts)).to_numpy() for f in findings})


def _splits(names, patients, lists, card, seed, source) -> np.ndarray:
    if not lists:
        assigned = patient_splits(list(patients), paper_fractions(card), seed)
        return patients.map(assigned).to_numpy()
    split = pd.Series(None, index=names.index, dtype=object)
    for path, name in lists.items():
        listed = {line.strip() for line in path.read_text().splitlines() if line.strip()}
        split[names.isin(listed)] = name
    unlisted = split.isna()
    if unlisted.any():
        raise ManifestError(
            f"{source.path}: image(s) in none of the split lists {[str(p) for p in lists]} at "
            f"{rows_of(pd.DataFrame({'image_id': names}), unlisted.to_numpy())}"
        )
    return split.to_numpy()
