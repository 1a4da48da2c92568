"""Argument errors are told before torch (or pandas) loads: a wrong head, demo size, a missing or unreadable
checkpoint, a missing data set (issue 26, item 12). A sys.modules check in a fresh interpreter, not a timing
(benchmarks/bench_startup.py prints the seconds)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.pipeline.cli.test_startup import HEAVY, ROOT

_RUN = """
import json, sys
sys.argv = ['chex', *{argv!r}]
from pipeline.cli import main
try:
    main()
    code = 0
except SystemExit as exc:
    code = exc.code
print(json.dumps([code, sorted(m for m in {heavy!r} if m in sys.modules)]))
"""


def _run(argv: list[str]) -> tuple[int, list[str], str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "400"}
    env.pop("CHEX_WORKSPACE", None)
    done = subprocess.run([sys.executable, "-c", _RUN.format(argv=argv, heavy=HEAVY)], capture_output=True,
                          text=True, env=env, check=True)  # fmt: skip
    code, loaded = json.loads(done.stdout.strip().splitlines()[-1])
    return code, loaded, done.stderr


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["probe", "--head", "glory"], "--head 'glory': known heads are"),
        (["probe", "--head", "linear", "--dataset", "plco"], "no data set 'plco'"),
        (["demo", "--size", "tinyy"], "--size 'tinyy': choose one of"),
        (["embed", "toy"], "give exactly one of --checkpoint PATH or --random-init"),
        (["embed", "toy", "--checkpoint", "{tmp}/missing.pt"], "missing.pt does not exist"),
        (["embed", "toy", "--checkpoint", "{tmp}/notes.txt"], "notes.txt is not a checkpoint"),
        (["embed", "toy", "--random-init", "vit_small_patch16", "--batch-size", "0"], "--batch-size 0"),
        (["store", "compress", "x", "--out", "y", "--rank", "8", "--fit-images", "-1"], "--fit-images -1"),
        (["store", "export", "x", "--out", "{tmp}"], "is a folder"),
        (["report"], "no probe results"),
        (["pretrain", "--config", "nonexistent"], "is neither a file nor a preset"),
        (["pretrain", "--set", "optim.base_lr=abc"], "base_lr must be a number"),
        (["pretrain"], "no shard folders"),
    ],
)
def test_an_argument_error_comes_before_the_heavy_imports(tmp_path, argv, needle):
    (tmp_path / "notes.txt").write_text("not weights\n")
    argv = [a.format(tmp=tmp_path) for a in argv] + ["-w", str(tmp_path / "ws")]
    code, loaded, err = _run(argv)
    assert code == 2, err
    assert needle in err, err
    assert loaded == [], f"{loaded} loaded before the error: {err}"
