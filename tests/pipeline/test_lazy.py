"""Lazy package exports: a name resolves from its module on first use; an unknown one is an AttributeError."""

from __future__ import annotations

import subprocess
import sys

import pytest

from pipeline.lazy import lazy_exports
from tests.pipeline.cli.test_startup import ROOT


def test_names_resolve_from_their_module_absolute_or_relative():
    getattr_ = lazy_exports("pipeline", {"csv_cell": ".atomic", "ChexError": "pipeline.errors"})
    from pipeline.atomic import csv_cell
    from pipeline.errors import ChexError

    assert getattr_("csv_cell") is csv_cell and getattr_("ChexError") is ChexError
    with pytest.raises(AttributeError, match="module 'pipeline' has no attribute 'nope'"):
        getattr_("nope")


def test_reading_a_pretrain_config_loads_no_torch():
    code = "import sys\nfrom pipeline.pretrain import load_config\nload_config('cpu_tiny')\n"
    code += "print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert done.stdout.strip() == "False", done.stderr
