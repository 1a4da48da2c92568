"""Helpers of the fault tests: run the real `chex` CLI in a subprocess, kill it at a random moment, build tiny inputs.

The CLI is started as `python -c "from pipeline.cli import main; main()" ...` with this interpreter, so the tests
work in any virtual environment, and single-threaded (OMP_NUM_THREADS=1) so two runs compute bit for bit alike.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from pipeline.backbone import BackboneConfig, build_backbone, save_checkpoint
from pipeline.manifest import write_manifest
from pipeline.workspace import Workspace

REPO = Path(__file__).resolve().parents[2]
CHEX_MAIN = "import sys; sys.argv[0] = 'chex'; from pipeline.cli import main; main()"
TINY = BackboneConfig(embed_dim=16, depth=4, num_heads=2, patch_size=8, img_size=16, num_registers=0)


# Every stage finishes a file by renaming a temporary one into place (os.replace): failing the (N+1)-th rename
# with ENOSPC is a full disk striking mid-run, wherever the stage writes.
_DISK_FULL_AFTER = """
import errno, os
_real_replace, _renames = os.replace, [0]
def _replace(src, dst, *args, **kwargs):
    _renames[0] += 1
    if _renames[0] > {n}:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))
    return _real_replace(src, dst, *args, **kwargs)
os.replace = _replace
"""


def chex_cmd(*args: object, disk_full_after: int | None = None) -> list[str]:
    """The argv of `chex ARGS...` run by this interpreter (optionally with the disk filling up after N renames)."""
    prelude = "" if disk_full_after is None else _DISK_FULL_AFTER.format(n=disk_full_after)
    return [sys.executable, "-c", prelude + CHEX_MAIN, *(str(a) for a in args)]


def chex_env(**extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "COLUMNS": "400",  # rich wraps at the terminal width; keep each message on one line
        "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    env.pop("CHEX_WORKSPACE", None)
    return {**env, **extra}


def run_chex(
    *args: object, timeout: float = 300, disk_full_after: int | None = None, **env: str
) -> subprocess.CompletedProcess:
    """Run `chex ARGS...` to the end; stdout/stderr captured as text."""
    return subprocess.run(
        chex_cmd(*args, disk_full_after=disk_full_after), cwd=REPO, env=chex_env(**env), capture_output=True,
        text=True, timeout=timeout,
    )  # fmt: skip


# Imports the CLI (torch, timm, zarr: seconds) once, then runs each case in a forked child: a real process per
# command line with its own exit code and stderr, without paying the imports again for every bad-input case.
_FORK_DRIVER = r"""
import json, os, sys, traceback
sys.argv[0] = "chex"
from pipeline.cli import main
import pipeline.embed, pipeline.store, pipeline.backbone  # noqa: F401  (the heavy imports, once)
codes = {}
for name, (argv, out_path, err_path) in json.loads(sys.stdin.read()).items():
    pid = os.fork()
    if pid == 0:
        for fd, path in ((1, out_path), (2, err_path)):
            os.dup2(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), fd)
        sys.argv = ["chex", *argv]
        try:
            main()
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except BaseException:
            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    codes[name] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
print(json.dumps(codes))
"""


def run_chex_many(cases: dict[str, Sequence[object]], workdir: Path, timeout: float = 300) -> dict:
    """{name: CompletedProcess} of `chex ARGV` for each case, each in its own (forked) process."""
    import json

    workdir.mkdir(parents=True, exist_ok=True)
    spec = {
        name: ([str(a) for a in argv], str(workdir / f"{name}.out"), str(workdir / f"{name}.err"))
        for name, argv in cases.items()
    }
    driver = subprocess.run(
        [sys.executable, "-c", _FORK_DRIVER], input=json.dumps(spec), cwd=REPO, env=chex_env(),
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip
    assert driver.returncode == 0, driver.stderr
    codes = json.loads(driver.stdout.strip().splitlines()[-1])
    return {
        name: subprocess.CompletedProcess(argv, codes[name], Path(out).read_text(), Path(err).read_text())
        for name, (argv, out, err) in spec.items()
    }


def flat(text: str) -> str:
    """Whitespace collapsed, so a message wrapped by rich still matches."""
    return re.sub(r"\s+", " ", text)


def assert_user_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    """A user error: exit code 2, no traceback, and every needle (e.g. the item's name) in the message."""
    err = flat(result.stderr)
    assert result.returncode == 2, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    assert "Traceback" not in result.stderr, result.stderr
    for needle in needles:
        assert flat(needle) in err, f"{needle!r} not in: {err}"
    return err


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"exit {result.returncode}\nstdout: {result.stdout}\nstderr: {result.stderr}"


def kill_after_progress(
    args: Sequence[object],
    progressed: Callable[[], bool],
    rng: np.random.Generator,
    max_extra_s: float,
    timeout: float = 120,
) -> bool:
    """Start `chex ARGS`, wait until `progressed()` (a first finished unit), sleep a random extra delay, kill -9.

    Returns True if the process was killed while running, False if it finished before the kill landed.
    """
    proc = subprocess.Popen(
        chex_cmd(*args), cwd=REPO, env=chex_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    deadline = time.monotonic() + timeout
    try:
        while not progressed():
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace")
                raise AssertionError(f"run ended (exit {proc.returncode}) before any progress:\n{err[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("no progress before the timeout")
            time.sleep(0.01)
        time.sleep(float(rng.uniform(0.0, max_extra_s)))
        if proc.poll() is not None:
            assert proc.returncode == 0, proc.stderr.read().decode(errors="replace")[-3000:]
            return False
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        return proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stderr.close()


def grey_image(rng: np.random.Generator, shape: tuple[int, int] = (24, 20), bits: int = 8) -> np.ndarray:
    """A small grey image with some structure (a bright disc on noise)."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    cy, cx = rng.integers(0, shape[0]), rng.integers(0, shape[1])
    img = 0.4 * rng.random(shape) + ((yy - cy) ** 2 + (xx - cx) ** 2 < (min(shape) // 3) ** 2)
    img = img / img.max()
    return (img * 65535).astype(np.uint16) if bits == 16 else (img * 255).astype(np.uint8)


def make_image_workspace(
    root: Path, dataset: str = "toy", n: int = 24, seed: int = 0, shape: tuple[int, int] = (24, 20)
) -> Workspace:
    """PNG images (every third one 16-bit) + a valid manifest (patients of one to two images, per-patient splits)."""
    ws = Workspace(Path(root))
    rng = np.random.default_rng(seed)
    images = ws.images_dir(dataset)
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        patient = i // 2
        pixels = grey_image(rng, shape, bits=16 if i % 3 == 0 else 8)
        Image.fromarray(pixels).save(images / f"img{i:04d}.png")
        split = ("train", "train", "train", "val", "test")[patient % 5]
        rows.append(
            {"image_id": f"{dataset}_{patient}_{i % 2}", "path": f"img{i:04d}.png", "patient_id": f"{dataset}{patient}"}
            | {"split": split}
        )
    write_manifest(pd.DataFrame(rows), ws.manifest_path(dataset))
    return ws


def make_tiny_checkpoint(ws: Workspace, name: str = "tiny", seed: int = 0, config: BackboneConfig = TINY) -> Path:
    import torch

    torch.manual_seed(seed)
    return save_checkpoint(build_backbone(config), config, ws.checkpoints_dir(name))


def tree_bytes(folder: Path, pattern: str = "**/*") -> dict[str, bytes]:
    """Relative path -> content of every file under `folder` matching `pattern`."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.glob(pattern)) if p.is_file()}


def mtimes(folder: Path, pattern: str = "**/*") -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.glob(pattern)) if p.is_file()}
