"""The format-free shape of a report table: panels of rows of cells, each cell a number with its CI.

Builders (tables.py) fill these; renderers (formats.py, latex.py) turn them into Markdown, CSV, LaTeX and
plain text. Keeping the numbers (not strings) in the cells lets the CSV carry full precision while the
printed formats round.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

CellKind = Literal["metric", "pvalue", "ratio", "percent", "text"]
MISSING = "–"
UNDEFINED = "undefined"  # a run that exists but whose metric cannot be computed (reason in the cell's note)


@dataclass(frozen=True)
class Cell:
    """One number with an optional 95% CI; `text` replaces it (e.g. 'best', or MISSING when there is none)."""

    value: float = math.nan
    low: float = math.nan
    high: float = math.nan
    kind: CellKind = "metric"
    bold: bool = False
    text: str = ""
    note: str = ""  # why the cell is undefined, or why it has no CI, listed under the table
    ci_withheld: bool = False  # too few test positives or negatives for a CI: never bold (results.parquet's note)
    seed_sd: float = math.nan  # `chex probe --seeds N` / `--cv`: the SD over seeds, printed after the CI
    n_seeds: int = 0

    @property
    def has_value(self) -> bool:
        return not math.isnan(self.value)

    @property
    def has_ci(self) -> bool:
        return self.kind in ("metric", "ratio", "percent")

    def display(self, dash: str = "–") -> str:
        """The rounded text a reader sees; `dash` joins the CI ends (LaTeX passes '--')."""
        main, ci = self.parts(dash)
        return f"{main} {ci}" if ci else main

    def parts(self, dash: str = "–") -> tuple[str, str]:
        """(estimate text, '(low–high)' or ''), so renderers can bold the estimate alone."""
        if self.text:
            return self.text, ""
        if not self.has_value:
            return MISSING, ""
        if self.kind == "pvalue":
            return format_p(self.value), ""
        digits = {"metric": 3, "ratio": 2, "percent": 1}[self.kind]
        scale = 100.0 if self.kind == "percent" else 1.0
        main = f"{self.value * scale:.{digits}f}"
        spread = "" if math.isnan(self.seed_sd) else f" ±{self.seed_sd * scale:.{digits}f}"
        if math.isnan(self.low) or math.isnan(self.high):
            return main, spread.strip()
        return main, f"({self.low * scale:.{digits}f}{dash}{self.high * scale:.{digits}f}){spread}"

    @property
    def seed_spread_exceeds_ci(self) -> bool:
        """The seed SD is larger than the CI's half-width: another seed moves the number more than the test set."""
        half = (self.high - self.low) / 2
        return not math.isnan(self.seed_sd) and not math.isnan(half) and self.seed_sd > half


def missing_cell(kind: CellKind = "metric") -> Cell:
    return Cell(kind=kind)


def format_p(p: float) -> str:
    """p-values as papers print them: '<0.001' below 0.001, else three decimals."""
    if math.isnan(p):
        return MISSING
    return "<0.001" if p < 0.001 else f"{p:.3f}"


@dataclass
class Row:
    labels: tuple[str, ...]
    cells: list[Cell]


@dataclass
class Panel:
    """A block of rows under an optional heading (e.g. 'AUPRC' / 'AUROC', or an endpoint)."""

    title: str | None
    rows: list[Row]


@dataclass
class ReportTable:
    """A table as a paper prints it. `name` is its file stem; SYNTHETIC tables say so in title and caption."""

    name: str
    title: str
    caption: str
    row_header: list[str]
    columns: list[str]
    panels: list[Panel]
    panel_header: str = "Panel"
    synthetic: bool = False
    notes: list[str] = field(default_factory=list)
    number: str = ""  # the paper's table number, e.g. 'Table II' (LaTeX numbers its own tables)

    @property
    def full_title(self) -> str:
        """Title with the paper's number and the SYNTHETIC mark, as Markdown and the terminal show it."""
        title = f"{self.number}. {self.title}" if self.number else self.title
        return f"SYNTHETIC — {title}" if self.synthetic else title

    @property
    def latex_title(self) -> str:
        return f"SYNTHETIC — {self.title}" if self.synthetic else self.title

    @property
    def full_caption(self) -> str:
        prefix = "SYNTHETIC data (generated cohort; not a clinical result). " if self.synthetic else ""
        return prefix + self.caption

    def cell(self, panel: str | None, labels: tuple[str, ...], column: str) -> Cell:
        """The cell of one panel, row and column (KeyError when absent); the tests read tables this way."""
        k = self.columns.index(column)
        for p in self.panels:
            if p.title == panel:
                for row in p.rows:
                    if row.labels == labels:
                        return row.cells[k]
        raise KeyError((panel, labels, column))

    @property
    def is_empty(self) -> bool:
        return not any(p.rows for p in self.panels)


def mark_best(cells: list[Cell], higher_is_better: bool = True) -> list[Cell]:
    """The same cells with the best value(s) bold (ties all bold); cells without a value, and cells whose CI was
    withheld (an estimate too uncertain to call best), stay plain and take no part."""
    ranked = [c for c in cells if can_be_best(c)]
    if not ranked:
        return cells
    best = max(c.value for c in ranked) if higher_is_better else min(c.value for c in ranked)
    return [replace(c, bold=True) if any(c is r for r in ranked) and c.value == best else c for c in cells]


def can_be_best(cell: Cell) -> bool:
    """Whether a cell takes part in picking a column's best (bold in the table, 'best' in its p-value companion):
    it has a value, is no text, and its CI was not withheld as too uncertain (issue 25's rule)."""
    return cell.has_value and not cell.text and not cell.ci_withheld


def seed_notes(table: ReportTable) -> list[str]:
    """For cells averaged over seeds (`chex probe --seeds N` or `--cv`): what ±x means, and each cell whose seed
    SD exceeds its CI half-width."""
    cells = [(p.title, row.labels, col, c) for p in table.panels for row in p.rows
             for col, c in zip(table.columns, row.cells, strict=False) if not math.isnan(c.seed_sd)]  # fmt: skip
    if not cells:
        return []
    seeds = sorted({c.n_seeds for *_, c in cells})
    notes = [
        f"±x after a CI: the SD of the estimate over {'/'.join(map(str, seeds))} seeds (each seed's whole protocol: "
        "inits, shuffling, carved splits); the estimate is the seeds' mean and the CI the mean of their test-set CIs"
    ]
    for panel, labels, column, cell in cells:
        if cell.seed_spread_exceeds_ci:
            where = " / ".join([*(x for x in (panel,) if x), *labels, column])
            half = (cell.high - cell.low) / 2
            notes.append(
                f"{where}: the seed SD {cell.seed_sd:.3f} exceeds the CI half-width {half:.3f}: the seed moves "
                "this number more than the test sample"
            )
    return notes


def undefined_notes(table: ReportTable) -> list[str]:
    """One line per undefined cell of `table`, and per estimate printed without its CI: where it is and why (so
    'undefined' or a missing interval is never unexplained)."""
    notes = []
    for panel in table.panels:
        for row in panel.rows:
            for column, cell in zip(table.columns, row.cells, strict=True):
                where = " / ".join([*([panel.title] if panel.title else []), *row.labels, column])
                if cell.text == UNDEFINED:
                    notes.append(f"{where}: undefined ({cell.note or 'no estimate in results.parquet'})")
                elif cell.has_value and cell.note:  # an estimate printed without its CI
                    notes.append(f"{where}: {cell.note}")
    return notes
