"""One fabricated workspace and one report over it, shared by the report tests (built once per session)."""

from __future__ import annotations

import pytest

from pipeline.report import write_report
from tests.pipeline.report.fabricate import fabricate_workspace

RESAMPLES = 30
PERMUTATIONS = 50


@pytest.fixture(scope="session")
def workspace(tmp_path_factory):
    return fabricate_workspace(tmp_path_factory.mktemp("report-ws"))


@pytest.fixture(scope="session")
def report(workspace):
    return write_report(workspace, progress=False, n_resamples=RESAMPLES, n_permutations=PERMUTATIONS)
