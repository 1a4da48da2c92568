"""Time `chex report` step by step on a fabricated workspace (the test fixture: 2 backbones x 3 heads over
CXR-LT 24 (40 findings), Shenzhen (+ 1% / 10% label runs), JSRT and PLCO survival; 35 run folders).

Prints the seconds of: collecting the runs, the tables without and with the paired permutation tests, and each
figure (PNG + PDF), for the given numbers of permutations and bootstrap resamples. The demo's cost is roughly
the sum. The machine it was written on was shared by several jobs: rerun on a quiet machine for figures to quote.

Usage: python benchmarks/bench_report.py [--permutations 1000] [--resamples 1000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root, for the test fixture

from pipeline.report.attention import attention_figure, attention_runs
from pipeline.report.collect import collect_runs
from pipeline.report.comparisons import best_vs_others
from pipeline.report.figures import (
    label_efficiency_figure,
    model_style,
    per_finding_figure,
    prevalence_band_figure,
)
from pipeline.report.km import best_survival_run, km_figure
from pipeline.report.tables import label_efficiency_table, performance_table, survival_table
from pipeline.report.write import write_report
from tests.pipeline.report.fabricate import fabricate_workspace


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--permutations", type=int, default=1000)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        ws = fabricate_workspace(Path(tmp) / "ws")
        out = Path(tmp) / "figures"

        def timed(label: str, func):
            start = time.perf_counter()
            value = func()
            print(f"{label:<44s} {time.perf_counter() - start:7.2f} s")
            return value

        coll = timed(f"collect {len(collect_runs(None, ws).runs)} runs", lambda: collect_runs(None, ws))
        timed("tables II, IV, label efficiency", lambda: [t(coll) for t in (performance_table, survival_table,
                                                                           label_efficiency_table)])  # fmt: skip
        timed(f"permutation tests ({args.permutations} perms)", lambda: best_vs_others(coll, args.permutations))
        styles = model_style(coll.models())
        timed("figure: per-finding AUROC (40 findings)", lambda: per_finding_figure(coll, "cxrlt24", styles, out))
        timed(f"figure: AUPRC by band ({args.resamples} resamples)",
              lambda: prevalence_band_figure(coll, "cxrlt24", styles, out, n_resamples=args.resamples))  # fmt: skip
        for endpoint in ("cvd", "all_cause"):
            run = best_survival_run(coll, "plco", endpoint)
            timed(f"figure: Kaplan-Meier {endpoint}", lambda run=run, e=endpoint: km_figure(coll, run, e, out))
        timed("figure: label efficiency", lambda: label_efficiency_figure(coll, "shenzhen", styles, out))
        run = attention_runs(coll)[0]
        timed("figure: GLoRI attention overlay", lambda: attention_figure(coll, run, out))
        timed("write_report (everything)", lambda: write_report(ws, progress=False, n_resamples=args.resamples,
                                                                n_permutations=args.permutations))  # fmt: skip


if __name__ == "__main__":
    main()
