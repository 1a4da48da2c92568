from __future__ import annotations

import pytest

from pipeline.corpus.sources import (
    PAPER_TOTAL,
    SUBSETS,
    TABLE_I,
    canonical_name,
    paper_count,
    resolve_subset,
    subset_paper_count,
)
from pipeline.errors import ConfigError


def test_table_i_counts_add_up_to_the_paper_totals():
    assert len(TABLE_I) == 13
    assert sum(s.paper_count for s in TABLE_I) == PAPER_TOTAL == 1_005_733
    assert subset_paper_count("cxr744k") == 744_692
    assert subset_paper_count("cxr207k") == 207_096 == paper_count("mimic")
    assert subset_paper_count("cxr1m") == PAPER_TOTAL
    assert subset_paper_count("a,b") is None


def test_aliases_and_unknown_sources():
    assert canonical_name("NIH") == "cxr14"
    assert canonical_name("MIMIC-CXR") == "mimic_cxr"
    assert canonical_name("vindr-cxr") == "vindr_cxr"
    assert canonical_name("synthetic_a") == "synthetic_a"
    assert paper_count("synthetic_a") is None


def test_resolve_subset_keeps_given_order_and_rejects_empty_selection():
    given = ["cxr14", "vindr_cxr", "mimic_cxr", "chexpert", "siim_acr"]
    assert resolve_subset("cxr744k", given) == ["cxr14", "mimic_cxr", "chexpert"]
    assert resolve_subset("cxr207k", given) == ["mimic_cxr"]
    assert resolve_subset("siim_acr,nih", given) == ["cxr14", "siim_acr"]
    assert resolve_subset(["vindr"], given) == ["vindr_cxr"]
    assert resolve_subset(None, given) == given
    assert set(SUBSETS["cxr744k"]) <= set(SUBSETS["cxr1m"])
    with pytest.raises(ConfigError, match="cxr207k"):
        resolve_subset("cxr207k", ["chexpert"])
