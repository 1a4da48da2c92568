"""The CXR-1M catalogue (CheXFound paper, Table I): the 13 public sources, their image counts, the subsets.

Source names are short slugs (`mimic_cxr`, `chexpert`, ...); common spellings (`mimic`, `nih`, `cxr8`) are
accepted as aliases. A corpus may also hold sources outside the catalogue (e.g. synthetic ones): they simply
have no paper count to compare against.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.errors import ConfigError


@dataclass(frozen=True)
class CorpusSource:
    """One row of Table I."""

    name: str
    title: str
    paper_count: int
    aliases: tuple[str, ...] = ()


TABLE_I: tuple[CorpusSource, ...] = (
    CorpusSource("mimic_cxr", "MIMIC-CXR", 207_096, ("mimic", "mimic-cxr", "mimiccxr")),
    CorpusSource("chexpert", "CheXpert", 223_648),
    CorpusSource("padchest", "PadChest", 160_861),
    CorpusSource("cxr14", "ChestX-ray14 (NIH)", 112_120, ("nih", "chestxray14", "chestx-ray14", "cxr8")),
    CorpusSource("brax", "BRAX", 40_967),
    CorpusSource("vindr_cxr", "VinDr-CXR", 18_000, ("vindr", "vindr-cxr")),
    CorpusSource("candid_ptx", "CANDID-PTX", 19_237, ("candid", "candid-ptx")),
    CorpusSource("siim_acr", "SIIM-ACR Pneumothorax", 18_499, ("siim-acr", "siim_acr_ptx")),
    CorpusSource("object_cxr", "Object-CXR", 9_000, ("object-cxr",)),
    CorpusSource("siim_covid19", "COVID-19 (SIIM-FISABIO-RSNA)", 7_597, ("siim-fisabio-rsna", "siim_covid")),
    CorpusSource("covidx_cxr4", "COVIDx CXR-4", 84_818, ("covidx", "covidx-cxr4")),
    CorpusSource("midrc_covidx", "MIDRC COVIDx", 23_001, ("midrc", "midrc-covidx")),
    CorpusSource("bimcv_covid", "BIMCV COVID+", 80_889, ("bimcv", "bimcv-covid")),
)
PAPER_TOTAL = 1_005_733

SUBSETS: dict[str, tuple[str, ...]] = {
    "cxr207k": ("mimic_cxr",),
    "cxr744k": ("mimic_cxr", "chexpert", "padchest", "cxr14", "brax"),
    "cxr1m": tuple(s.name for s in TABLE_I),
}

# Evaluation sets whose patient ids live in the same namespace as a corpus source, so a test patient can be
# excluded by id (CXR-LT 24 is built from MIMIC-CXR; the CheXpert test set uses CheXpert's patient ids).
PATIENT_LINKS: dict[str, tuple[str, ...]] = {
    "cxrlt24": ("mimic_cxr",),
    "chexpert": ("chexpert",),
}

_BY_NAME = {s.name: s for s in TABLE_I}
_ALIASES = {alias: s.name for s in TABLE_I for alias in (s.name, *s.aliases)}


def canonical_name(name: str) -> str:
    """The catalogue slug for a name or alias; names outside the catalogue are returned unchanged."""
    key = name.strip().lower()
    return _ALIASES.get(key, _ALIASES.get(key.replace("-", "_"), name.strip()))


def catalogue_source(name: str) -> CorpusSource | None:
    """The Table I entry of a source, or None for a source outside the catalogue."""
    return _BY_NAME.get(canonical_name(name))


def paper_count(name: str) -> int | None:
    """Table I's image count for a source (None outside the catalogue)."""
    source = catalogue_source(name)
    return source.paper_count if source else None


def resolve_subset(spec: str | Sequence[str] | None, available: Sequence[str]) -> list[str]:
    """The sources of `available` that a subset keeps, in `available` order.

    `spec` is a subset name (cxr207k, cxr744k, cxr1m), a comma-separated list or a sequence of source names,
    or None for every available source. A subset naming a source that is not available is not an error (the
    report shows it as missing), but a spec that keeps nothing is.
    """
    if spec is None:
        return list(available)
    if isinstance(spec, str):
        key = spec.strip().lower()
        wanted = SUBSETS[key] if key in SUBSETS else tuple(p for p in spec.split(",") if p.strip())
    else:
        wanted = tuple(spec)
    wanted_names = {canonical_name(w) for w in wanted}
    kept = [name for name in available if canonical_name(name) in wanted_names]
    if not kept:
        raise ConfigError(
            f"--subset {spec!r} keeps none of the given sources {list(available)}; "
            f"use one of {sorted(SUBSETS)} or a comma-separated list of source names"
        )
    return kept


def subset_paper_count(spec: str) -> int | None:
    """The paper's total for a named subset (744,692 for cxr744k), None for a custom list."""
    names = SUBSETS.get(spec.strip().lower())
    return sum(_BY_NAME[n].paper_count for n in names) if names else None
