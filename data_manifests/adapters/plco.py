"""PLCO: the chest X-ray image list and the mortality data -> manifest with survival columns.

Sources are CSVs; a table with an image-file column is the image list (image file name + subject id), the
others are subject tables (subject id, death flag, follow-up days, cause of death); one CSV may hold both.
Follow-up days become years; CVD death is a death whose cause is cardiovascular: an ICD-10 code I00-I99, a
category text naming a circulatory cause, or (numeric category codes) one of `cvd_codes` from your data
dictionary. Within-horizon labels (death_cvd_12y, death_all_12y) follow from the card's horizon. No official
split: a seeded subject-level split with the paper's proportions.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from data_manifests.adapters.common import (
    Source,
    check_unique,
    csv_lines,
    paper_fractions,
    parse_sources,
    patient_splits,
    pick_column,
    read_csv,
)
from pipeline.cards import packaged_card
from pipeline.errors import ManifestError
from pipeline.manifest import rows_of, within_horizon

log = logging.getLogger(__name__)

IMAGE_COLUMNS = ("image_file_name", "image_filename", "file_name", "filename", "image", "path")
SUBJECT_COLUMNS = ("plco_id", "subject_id", "subject", "id")
DEATH_COLUMNS = ("is_dead", "death_all", "dead", "death")
DAYS_COLUMNS = ("mortality_exitdays", "exitdays", "followup_days", "follow_up_days", "fu_days")
CAUSE_COLUMNS = ("d_dthicd10", "icd10", "d_codeath_cat", "f_codeath_cat", "cause_of_death", "death_cause")
_CVD_TEXT = re.compile(r"cardio|circulatory|heart|cerebrovascular|stroke|isch[a]?emic|hypertensive|\bcvd\b", re.I)
_ICD10_CVD = re.compile(r"^\s*I\d{2}", re.I)
DAYS_PER_YEAR = 365.25


def build(sources: Sequence[str | Source], seed: int = 0, cvd_codes: Sequence[str] = ()) -> pd.DataFrame:
    card = packaged_card("plco")
    images, subjects = [], []
    for source in parse_sources(sources):
        raw = read_csv(source.path, [], dtype=str)
        subject = pick_column(raw, SUBJECT_COLUMNS)
        if subject is None:
            raise ManifestError(
                f"{source.path}: no subject id column (one of {SUBJECT_COLUMNS}); found {list(raw.columns)}"
            )
        raw = raw.rename(columns={subject: "subject"})
        raw["subject"] = raw["subject"].str.strip()
        if pick_column(raw, IMAGE_COLUMNS) is not None:
            images.append((source.path, raw))
        if pick_column(raw, DAYS_COLUMNS) is not None:
            subjects.append((source.path, raw))
    if not images:
        raise ManifestError(f"plco: no image list among the sources (a CSV with one of {IMAGE_COLUMNS})")
    if not subjects:
        raise ManifestError(f"plco: no mortality table among the sources (a CSV with one of {DAYS_COLUMNS})")
    outcomes = pd.concat([_outcomes(path, raw, cvd_codes) for path, raw in subjects], ignore_index=True)
    check_unique(outcomes, "subject", "plco mortality data")
    image_list = pd.concat([_images(path, raw) for path, raw in images], ignore_index=True)
    check_unique(image_list, "image_id", "plco image list")
    frame = image_list.merge(outcomes, on="subject", how="left", validate="many_to_one")
    unknown = frame["time_all_years"].isna().to_numpy()
    if unknown.any():
        raise ManifestError(
            f"plco: image subjects missing from the mortality data at {rows_of(frame, unknown, 'subject')}"
        )
    splits = patient_splits(list(frame["subject"]), paper_fractions(card), seed)
    horizon = card.survival_tasks[0].horizon_years or 12.0
    out = pd.DataFrame(
        {
            "image_id": frame["image_id"],
            "path": frame["path"],
            "patient_id": frame["subject"],
            "split": frame["subject"].map(splits),
            "view": "PA",
            "time_cvd_years": frame["time_all_years"],
            "death_cvd": frame["death_cvd"].astype(np.int64),
            "time_all_years": frame["time_all_years"],
            "death_all": frame["death_all"].astype(np.int64),
        }
    )
    out["death_cvd_12y"] = within_horizon(out["time_cvd_years"], out["death_cvd"], horizon)
    out["death_all_12y"] = within_horizon(out["time_all_years"], out["death_all"], horizon)
    return out


def _images(path: Path, raw: pd.DataFrame) -> pd.DataFrame:
    column = pick_column(raw, IMAGE_COLUMNS)
    names = raw[column].fillna("").str.strip()
    empty = (names == "").to_numpy()
    if empty.any():
        raise ManifestError(f"{path}: empty image file name at {rows_of(raw, empty, column, csv_lines(raw))}")
    return pd.DataFrame(
        {"image_id": names.map(lambda n: Path(n).stem), "path": names, "subject": raw["subject"].to_numpy()}
    )


def _outcomes(path: Path, raw: pd.DataFrame, cvd_codes: Sequence[str]) -> pd.DataFrame:
    days_column = pick_column(raw, DAYS_COLUMNS)
    death_column = pick_column(raw, DEATH_COLUMNS)
    if death_column is None:
        raise ManifestError(f"{path}: no death flag column (one of {DEATH_COLUMNS}); found {list(raw.columns)}")
    table = raw.drop_duplicates("subject")
    days = pd.to_numeric(table[days_column], errors="coerce")
    bad = (days.isna() | (days < 0)).to_numpy()
    if bad.any():
        at = rows_of(table, bad, days_column, csv_lines(table))  # table keeps raw's index labels: lines hold
        raise ManifestError(f"{path}: follow-up days must be a number >= 0 at {at}")
    death = pd.to_numeric(table[death_column], errors="coerce")
    bad = (~death.isin((0, 1))).to_numpy()
    if bad.any():
        at = rows_of(table, bad, death_column, csv_lines(table))
        raise ManifestError(f"{path}: death flag must be 0 or 1 at {at}")
    cvd = _cvd(path, table, death.to_numpy() == 1, cvd_codes)
    return pd.DataFrame(
        {
            "subject": table["subject"].to_numpy(),
            "time_all_years": days.to_numpy() / DAYS_PER_YEAR,
            "death_all": death.to_numpy().astype(np.int64),
            "death_cvd": cvd.astype(np.int64),
        }
    )


def _cvd(path: Path, table: pd.DataFrame, dead: np.ndarray, cvd_codes: Sequence[str]) -> np.ndarray:
    column = pick_column(table, CAUSE_COLUMNS)
    if column is None:
        raise ManifestError(
            f"{path}: no cause-of-death column (one of {CAUSE_COLUMNS}) to tell CVD deaths; found {list(table.columns)}"
        )
    cause = table[column].fillna("").astype(str).str.strip()
    numeric = cause.str.fullmatch(r"\d+(\.0)?") & (cause != "")
    if numeric[dead].any() and not cvd_codes:
        raise ManifestError(
            f"{path}: column {column!r} holds numeric cause-of-death codes; pass --cvd-codes with the codes your "
            "PLCO data dictionary lists for cardiovascular death (e.g. --cvd-codes 4,5)"
        )
    codes = {str(c).strip() for c in cvd_codes}
    is_cvd = (
        cause.str.contains(_CVD_TEXT)
        | cause.str.match(_ICD10_CVD)
        | (numeric & cause.str.removesuffix(".0").isin(codes))
    ).to_numpy()
    unknown = dead & (cause == "").to_numpy()
    if unknown.any():
        log.warning("plco: %d deaths without a cause in %s are counted as non-CVD", int(unknown.sum()), path)
    return dead & is_cvd
