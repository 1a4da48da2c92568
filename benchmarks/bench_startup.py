"""Start-up time of `chex --help` and `chex <cmd> --help` (target <= 0.5 s), and of the argument errors a user
meets first (a wrong --head or --size, embed without --checkpoint, a missing checkpoint: target <= 1 s, told
before torch loads), next to a bare interpreter and a minimal typer app measured in the same run, so load on
the machine shows in all columns alike.

    python benchmarks/bench_startup.py [--runs 7]

Each case runs in a fresh interpreter (subprocess); the median of the runs is printed, with the load average.
Argument errors before/after the checks moved ahead of the imports (2 cores, load 9-12): --head glory 15.5 ->
0.59 s, --size tinyy 43.6 -> 0.56 s, embed without --checkpoint 22.0 -> 0.47 s, a missing checkpoint 24.3 ->
0.56 s (median of 5; `chex probe --help` 0.76 s in the same run).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHEX = (
    "import sys\nsys.argv = ['chex', *{argv!r}]\nfrom pipeline.cli import main\n"
    "try:\n    main()\nexcept SystemExit:\n    pass"
)
CHEX_EXIT = "import sys\nsys.argv = ['chex', *{argv!r}]\nfrom pipeline.cli import main\nmain()"
MINIMAL_TYPER = (
    "import typer\napp = typer.Typer(add_completion=False)\n@app.command()\ndef hello(name: str = 'x') -> None:\n"
    "    pass\n@app.command()\ndef bye() -> None:\n    pass\nimport sys\nsys.argv = ['app', *{argv!r}]\n"
    "try:\n    app()\nexcept SystemExit:\n    pass"
)
CASES = {
    "python -c pass": "pass",
    "minimal typer app --help": MINIMAL_TYPER.format(argv=["--help"]),
    # typer 0.29 builds a pydantic TypeAdapter per option when a sub-command parses its options (even for
    # --help), so this, not the line above, is the floor for `chex <cmd> --help`
    "minimal typer app hello --help": MINIMAL_TYPER.format(argv=["hello", "--help"]),
    "chex --help": CHEX.format(argv=["--help"]),
    "chex manifest --help": CHEX.format(argv=["manifest", "--help"]),
    "chex probe --help": CHEX.format(argv=["probe", "--help"]),
    "chex embed --help": CHEX.format(argv=["embed", "--help"]),
    "chex report --help": CHEX.format(argv=["report", "--help"]),
}
# argument errors (exit 2) in an empty workspace: each must be told before the heavy imports
ERRORS = {
    "chex probe --head glory": ["probe", "--head", "glory"],
    "chex demo --size tinyy": ["demo", "--size", "tinyy"],
    "chex embed (no --checkpoint)": ["embed", "toy"],
    "chex embed --checkpoint missing": ["embed", "toy", "--checkpoint", "{tmp}/missing.pt"],
}


def time_case(code: str, runs: int, exit_code: int = 0) -> list[float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "100"}
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if done.returncode != exit_code:
            raise SystemExit(f"exit {done.returncode}, expected {exit_code}:\n{done.stderr[-2000:]}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    cases = {name: (code, 0) for name, code in CASES.items()}
    for name, argv in ERRORS.items():
        argv = [a.format(tmp=tmp) for a in argv] + ["-w", str(tmp / "ws")]
        cases[name] = ((CHEX_EXIT.format(argv=argv)), 2)
    time_case("pass", 1)  # warm the file cache
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}; {args.runs} runs per case")
    print(f"{'case':<32} {'median s':>9} {'min s':>7} {'max s':>7}")
    # interleave the cases run by run, so a change in load hits every case alike
    results: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.runs):
        for name, (code, exit_code) in cases.items():
            results[name] += time_case(code, 1, exit_code)
    for name, times in results.items():
        print(f"{name:<32} {statistics.median(times):>9.3f} {min(times):>7.3f} {max(times):>7.3f}")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
