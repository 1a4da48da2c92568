"""`chex report`: paper tables (Markdown, CSV, LaTeX) and figures (PNG, PDF) from the probe outputs.

Entry point: `write_report(workspace, out_dir=None, formats=("md", "csv", "tex"), progress=True, ...)`
-> `ReportSummary`. The pieces: collect.py (find and load run folders), tables.py (table contents),
formats.py / latex.py (renderers), comparisons.py (paired permutation tests), figures.py / km.py /
attention.py (figures), missing.py (what is missing and the command that makes it), index.py (front page).
"""

from pipeline.report.collect import Collection, Run, collect_runs
from pipeline.report.write import ReportSummary, write_report

__all__ = ["Collection", "ReportSummary", "Run", "collect_runs", "write_report"]
