"""`chex --help` must not load the heavy libraries: torch, timm and pandas load only where a command runs.

A sys.modules check in a fresh interpreter, not a timing (benchmarks/bench_startup.py measures the time).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
HEAVY = ("torch", "timm", "pandas", "numpy", "pyarrow", "zarr", "scipy", "matplotlib", "data_manifests.adapters")


def _loaded_after(code: str) -> list[str]:
    probe = f"{code}\nimport json, sys\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_importing_the_cli_loads_no_heavy_library():
    assert _loaded_after("import pipeline.cli") == []


@pytest.mark.parametrize("argv", [["--help"], ["manifest", "--help"], ["probe", "--help"], ["store", "--help"]])
def test_help_loads_no_heavy_library(argv):
    code = (
        f"import sys\nsys.argv = ['chex', *{argv!r}]\nfrom pipeline.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass"
    )
    assert _loaded_after(code) == []


def test_importing_pipeline_loads_no_heavy_library():
    assert _loaded_after("import pipeline") == []


def test_help_constants_match_the_library():
    from data_manifests.adapters import ADAPTERS
    from pipeline.cli import constants
    from pipeline.corpus.build import DEFAULT_NEAR_THRESHOLD
    from pipeline.demo import SIZES
    from pipeline.report.formats import FORMATS
    from pipeline.stats.multiple import ADJUST_METHODS
    from pipeline.synth.specs import DATASETS
    from pipeline.zeroshot.run import SCALES

    assert constants.ADJUST_METHODS == ADJUST_METHODS
    assert tuple(SIZES) == constants.DEMO_SIZES
    assert constants.SYNTH_DATASETS == DATASETS
    assert constants.NEAR_THRESHOLD == DEFAULT_NEAR_THRESHOLD
    assert set(constants.ADAPTERS) == set(ADAPTERS)
    assert tuple(constants.REPORT_FORMATS) == tuple(FORMATS)
    assert constants.ZEROSHOT_SCALES == SCALES
