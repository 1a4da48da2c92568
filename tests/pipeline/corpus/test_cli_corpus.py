from __future__ import annotations

import json

import pandas as pd
from typer.testing import CliRunner

from pipeline.cli import app
from tests.pipeline.corpus.planted import build_planted

runner = CliRunner()


def test_corpus_build_command(tmp_path):
    planted = build_planted(tmp_path / "data")
    m, r = planted.manifests, planted.roots
    out = tmp_path / "corpus" / "mine.parquet"
    args = ["corpus", "build", "--sources", f"alpha={m['alpha']}", f"beta={m['beta']}", f"gamma={m['gamma']}"]
    args += [f"--root=alpha={r['alpha']}", f"--root=beta={r['beta']}", f"--root=gamma={r['gamma']}"]
    args += [f"--root=evalx={r['evalx']}", "--eval", str(m["evalx"]), "--patient-link", "evalx:alpha"]
    args += ["--out", str(out), "-w", str(tmp_path / "ws")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "24 images kept of 34" in result.output
    corpus = pd.read_parquet(out)
    assert list(corpus["source"].unique()) == ["alpha", "beta", "gamma"]
    report = json.loads((out.parent / "mine.report.json").read_text())
    assert report["totals"]["duplicate"] == 5 and report["totals"]["leak_patient"] == 2


def test_corpus_build_names_a_missing_root(tmp_path):
    planted = build_planted(tmp_path / "data")
    args = ["corpus", "build", "--sources", str(planted.manifests["alpha"]), "-w", str(tmp_path / "ws")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "--root alpha=DIR" in result.output


def test_corpus_help_lists_build():
    result = runner.invoke(app, ["corpus", "--help"])
    assert result.exit_code == 0 and "build" in result.output
