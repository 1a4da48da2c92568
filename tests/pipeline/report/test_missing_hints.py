"""Every command the report's "Missing inputs" recommends is one the CLI accepts: none for the synthetic oracle
(it is written by `chex demo`; `chex probe --head planted` is refused), and a survival probe only for a data set
the workspace has (issue 26, items 8 and 11)."""

from __future__ import annotations

import json
import re
import shutil

import pandas as pd

from heads.registry import head_names
from pipeline.report.collect import collect_runs
from pipeline.report.missing import missing_inputs
from pipeline.synth.specs import ORACLE_BACKBONE, ORACLE_HEAD
from pipeline.workspace import Workspace


def _with_oracle_run(workspace, tmp_path) -> Workspace:
    """A copy of the fabricated workspace plus a full-label oracle run beside shenzhen's label-fraction runs."""
    ws = Workspace(tmp_path / "ws")
    shutil.copytree(workspace.root, ws.root)
    src = ws.root / "results" / "shenzhen" / "vits-a" / "linear"
    dst = ws.root / "results" / "shenzhen" / ORACLE_BACKBONE / ORACLE_HEAD
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("label_fraction=*"))
    record = json.loads((dst / "run.json").read_text())
    record |= {"backbone": ORACLE_BACKBONE, "head": ORACLE_HEAD, "key": "oracle-shenzhen"}
    record["head_config"] = {"name": ORACLE_HEAD, "oracle": True}
    (dst / "run.json").write_text(json.dumps(record))
    for name in ("predictions.parquet", "results.parquet", "sweep.parquet"):
        frame = pd.read_parquet(dst / name)
        for column, value in (("backbone", ORACLE_BACKBONE), ("head", ORACLE_HEAD)):
            if column in frame:
                frame[column] = value
        frame.to_parquet(dst / name)
    return ws


def test_no_hint_recommends_a_head_the_cli_refuses(workspace, tmp_path):
    ws = _with_oracle_run(workspace, tmp_path)
    coll = collect_runs(None, ws, n_resamples=20)
    assert any(r.backbone == ORACLE_BACKBONE for r in coll.runs)
    messages = missing_inputs(coll)
    heads = re.findall(r"chex probe --head (\S+)", "\n".join(messages))
    assert heads and set(heads) <= set(head_names()), messages
    assert not [m for m in messages if ORACLE_BACKBONE + "/" in m], messages


def test_the_survival_hint_names_a_data_set_the_workspace_has(workspace, tmp_path):
    from pipeline.report.missing import survival_hint

    ws = Workspace(tmp_path / "ws")
    shutil.copytree(workspace.root, ws.root, ignore=shutil.ignore_patterns("plco*"))
    hint = survival_hint(collect_runs(None, ws, n_resamples=20))
    assert "--dataset plco" not in hint and "no data set with a survival endpoint" in hint, hint
    assert "chex probe --head glori --dataset plco" in survival_hint(collect_runs(None, workspace, n_resamples=20))
