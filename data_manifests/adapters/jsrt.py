"""JSRT: the clinical data lists CLNDAT_EN.txt (154 nodule images) and CNNDAT_EN.txt (93 without) -> manifest.

Each line starts with the image name (`JPCLN001.IMG`, `JPCNN001.IMG`), then the list's fields (for nodules:
subtlety, size, age, sex, position, diagnosis; for non-nodules: age, sex). The raw .IMG files are headerless
12-bit arrays; most users convert them to PNG: with --root, a listed `JPCLN001.IMG` is found as
`JPCLN001.png` too. Seeded patient-level split with the paper's proportions (171/24/50).
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import pandas as pd

from data_manifests.adapters.common import Source, paper_fractions, parse_sources, patient_splits
from pipeline.cards import packaged_card
from pipeline.errors import ManifestError

_NAME = re.compile(r"^(JPC(LN|NN)\d{3})\.IMG$", re.IGNORECASE)


def build(sources: Sequence[str | Source], seed: int = 0) -> pd.DataFrame:
    rows = []
    for source in parse_sources(sources):
        expected = _list_kind(source)
        for number, line in enumerate(source.path.read_text(errors="replace").splitlines(), start=1):
            tokens = line.replace("\t", " ").split()
            if not tokens:
                continue
            match = _NAME.match(tokens[0])
            if match is None:
                raise ManifestError(
                    f"{source.path} line {number}: expected an image name like JPCLN001.IMG first, got {tokens[0]!r}"
                )
            kind = match.group(2).upper()
            if expected is not None and kind != expected:
                raise ManifestError(
                    f"{source.path} line {number}: {tokens[0]} is a {'nodule' if kind == 'LN' else 'non-nodule'} "
                    f"image in the {'nodule' if expected == 'LN' else 'non-nodule'} list"
                )
            sex, age = _sex_age(tokens[1:])
            rows.append((match.group(1).upper(), tokens[0], float(kind == "LN"), sex, age, source.path, number))
    if not rows:
        raise ManifestError(f"jsrt: no image lines in {[str(s) for s in sources]}")
    frame = pd.DataFrame(rows, columns=["image_id", "path", "Nodule", "sex", "age", "file", "line"])
    duplicated = frame["image_id"].duplicated(keep=False)
    if duplicated.any():
        where = [f"{f} line {n}" for f, n in zip(frame["file"][duplicated], frame["line"][duplicated], strict=True)]
        raise ManifestError(f"jsrt: image listed more than once at {where[:5]}")
    frame["patient_id"] = frame["image_id"]
    splits = patient_splits(list(frame["patient_id"]), paper_fractions(packaged_card("jsrt")), seed)
    frame["split"] = frame["patient_id"].map(splits)
    frame["view"] = "PA"
    return frame[["image_id", "path", "patient_id", "split", "view", "sex", "age", "Nodule"]]


def _list_kind(source: Source) -> str | None:
    name = source.path.name.upper()
    if name.startswith("CLNDAT"):
        return "LN"
    if name.startswith("CNNDAT"):
        return "NN"
    return None


def _sex_age(tokens: list[str]) -> tuple[str | None, float]:
    for i, token in enumerate(tokens):
        if token.lower() in ("male", "female"):
            age = tokens[i - 1] if i > 0 and tokens[i - 1].isdigit() else None
            return ("F" if token.lower() == "female" else "M"), float(age) if age else float("nan")
    return None, float("nan")
