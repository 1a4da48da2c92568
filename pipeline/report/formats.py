"""Render a ReportTable as Markdown, CSV (full-precision numbers) or plain text for the terminal."""

from __future__ import annotations

import csv
import io

from rich import box
from rich.table import Table

from pipeline.atomic import csv_cell
from pipeline.report.cells import Cell, ReportTable

FORMATS = ("md", "csv", "tex")


def to_markdown(table: ReportTable, heading_level: int = 3) -> str:
    """A pipe table under the title, panels as italic separator rows, best values bold, caption below."""
    lead = len(table.row_header)
    header = [*table.row_header, *table.columns]
    lines = [
        f"{'#' * heading_level} {table.full_title}",
        "",
        "| " + " | ".join(_md_escape(h) for h in header) + " |",
        "|" + "|".join([":---"] * lead + ["---:"] * len(table.columns)) + "|",
    ]
    for panel in table.panels:
        if panel.title is not None:
            lines.append("| " + " | ".join([f"*{_md_escape(panel.title)}*"] + [""] * (len(header) - 1)) + " |")
        for row in panel.rows:
            cells = [_md_escape(x) for x in row.labels] + [_md_cell(c) for c in row.cells]
            lines.append("| " + " | ".join(cells) + " |")
    if table.is_empty:
        lines.append("| " + " | ".join(["(no runs)"] + [""] * (len(header) - 1)) + " |")
    lines += ["", f"*{table.full_caption}*"]
    lines += [f"- {note}" for note in table.notes]
    return "\n".join(lines) + "\n"


def to_csv(table: ReportTable) -> str:
    """One line per row: panel, row labels, then per column its estimate (and CI ends) at full precision."""
    with_ci = [any(row.cells[k].has_ci for p in table.panels for row in p.rows) for k in range(len(table.columns))]
    header = [table.panel_header, *table.row_header]
    for column, ci in zip(table.columns, with_ci, strict=True):
        header += [column, f"{column} CI low", f"{column} CI high"] if ci else [column]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([csv_cell(h) for h in header])
    for panel in table.panels:
        for row in panel.rows:
            values: list[object] = [panel.title or "", *row.labels]
            for cell, ci in zip(row.cells, with_ci, strict=True):
                values.append(_csv_value(cell, cell.value))
                if ci:
                    values += [_csv_value(cell, cell.low, main=False), _csv_value(cell, cell.high, main=False)]
            writer.writerow([csv_cell(v) for v in values])  # no spreadsheet formula from a label
    return buffer.getvalue()


def to_text(table: ReportTable) -> str:
    """Aligned plain text for a terminal; best values carry a trailing '*'."""
    header = [*table.row_header, *table.columns]
    body: list[list[str] | str] = []
    for panel in table.panels:
        if panel.title is not None:
            body.append(panel.title)
        for row in panel.rows:
            body.append([*row.labels, *[c.display("-") + ("*" if c.bold else " ") for c in row.cells]])
    widths = [len(h) + (k >= len(table.row_header)) for k, h in enumerate(header)]
    for line in body:
        if isinstance(line, list):
            widths = [max(w, len(x)) for w, x in zip(widths, line, strict=True)]
    lead = len(table.row_header)

    def fmt(values: list[str]) -> str:
        return "  ".join(
            v.ljust(w) if k < lead else v.rjust(w) for k, (v, w) in enumerate(zip(values, widths, strict=True))
        )

    out = [table.full_title, fmt([*header[:lead], *[h + " " for h in header[lead:]]]), "-" * len(fmt(header))]
    out += [fmt(line) if isinstance(line, list) else f"[{line}]" for line in body]
    return "\n".join(out) + "\n"


def to_rich(table: ReportTable, panel: str | None = None, columns: list[int] | None = None) -> Table:
    """A narrow terminal table: one panel (every panel if None), chosen columns, estimate over CI, best bold."""
    keep = list(range(len(table.columns))) if columns is None else columns
    out = Table(
        title=table.full_title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True
    )
    for name in table.row_header:
        out.add_column(name, no_wrap=True)
    for k in keep:
        out.add_column(table.columns[k], justify="right")
    for block in table.panels:
        if panel is not None and block.title not in (panel, None):
            continue
        if panel is None and block.title is not None:
            out.add_row(f"[italic]{block.title}")
        for row in block.rows:
            cells = []
            for cell in (row.cells[k] for k in keep):
                main, ci = cell.parts("–")
                if ci and cell.kind in ("metric", "ratio"):  # two decimals keep five data sets inside 80 columns
                    ci = f"{cell.low:.2f}–{cell.high:.2f}"
                main = f"[bold]{main}[/]" if cell.bold else main
                cells.append(f"{main}\n[dim]{ci}[/]" if ci else main)
            out.add_row(*row.labels, *cells)
    return out


def _md_cell(cell: Cell) -> str:
    main, ci = cell.parts("–")
    main = _md_escape(main)
    if cell.bold:
        main = f"**{main}**"
    return f"{main} {ci}" if ci else main


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|")


def _csv_value(cell: Cell, value: float, main: bool = True) -> object:
    if cell.text:
        return cell.text if main else ""
    return "" if value != value else repr(float(value))  # NaN -> empty; repr keeps every digit
