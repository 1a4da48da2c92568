"""The report's front page: index.md (and index.html) linking every table and figure, with provenance.

The results come first: the SYNTHETIC banner, the tables, the cautions about them, the figures; then the
missing inputs and the provenance, each folded (<details>) under a one-line summary.
"""

from __future__ import annotations

import html
import json
import os
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from markdown_it import MarkdownIt

from heads.registry import head_names, head_spec
from pipeline import __version__
from pipeline.report.cells import ReportTable
from pipeline.report.collect import Collection, Run, dataset_name, head_name
from pipeline.report.figures import FigureResult
from pipeline.report.formats import to_markdown
from pipeline.report.tables import ORACLE


@dataclass
class IndexEntry:
    """One table (rendered inline, files linked) for the index."""

    table: ReportTable
    files: list[Path] = field(default_factory=list)


def provenance(coll: Collection, sources: list[str]) -> dict:
    """What made this report: chex version, date, inputs, backbones' checkpoint hashes and stores, runs."""
    backbones = {}
    for run in coll.runs:
        entry = backbones.setdefault(
            run.backbone, {"family": set(), "checkpoint_sha256": set(), "checkpoint": set(), "store": set()}
        )
        record = run.record
        if record is not None:
            for key, value in (
                ("family", (record.store_attrs or {}).get("family")),
                ("checkpoint_sha256", record.checkpoint_sha256),
                ("checkpoint", record.checkpoint),
                ("store", record.store_path),
            ):
                if value:
                    entry[key].add(str(value))
    runs = []
    for run in sorted(coll.runs, key=lambda r: (r.dataset, r.backbone, r.model[1], r.label_fraction)):
        record = run.record
        runs.append(
            {
                "dataset": run.dataset,
                "backbone": run.backbone,
                "head": head_name(run.model[1]),
                "label_fraction": run.label_fraction,
                "seed": record.seed if record else None,
                "lr": record.chosen_lr if record else None,
                "head_config": json.dumps(record.head_config, sort_keys=True, default=str) if record else "",
                "folder": str(run.folder),
            }
        )
    return {
        "chex_version": __version__,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "sources": sources,
        "synthetic": sorted(coll.synthetic),
        "backbones": {b: {k: sorted(v) for k, v in e.items()} for b, e in sorted(backbones.items())},
        "runs": runs,
        "head_configs": _head_configs(coll),
        "oracle": _oracle(coll),
    }


def _head_configs(coll: Collection) -> dict[str, str]:
    """Each head configuration once: its printed name -> its options, readable ('embed_dim 64, num_heads 8')."""
    configs: dict[str, str] = {}
    for run in sorted(coll.runs, key=lambda r: (r.model[1], r.dataset)):
        if run.record is None or run.record.head_config.get("oracle") or run.model[1] in configs:
            continue
        options = {k: v for k, v in run.record.head_config.items() if k != "name"}
        declared = list(head_spec(run.head).shorts()) if run.head in head_names() else []  # run.json sorts keys
        options = dict(sorted(options.items(), key=lambda kv: declared.index(kv[0]) if kv[0] in declared else 99))
        configs[run.model[1]] = ", ".join(f"{k} {_value(v)}" for k, v in options.items()) or "no options"
    return {head_name(key): text for key, text in sorted(configs.items())}


def _oracle(coll: Collection) -> dict | None:
    """What the planted-features reference rows are: the model, the features and their truth files."""
    runs = [r for r in coll.runs if r.record is not None and r.record.head_config.get("oracle")]
    if not runs:
        return None
    config = runs[0].record.head_config
    features = sorted({f for r in runs for f in r.record.head_config.get("features", [])})
    shown = [f for f in features if f.startswith("shown:")]
    return {
        "model": str(config.get("model", "")),
        "features": [
            *([f"{len(shown)} 'shown:' finding flags"] if shown else []),
            *(f for f in features if f not in shown),
        ],
        "truth": sorted({_truth_file(r, coll) for r in runs}),
        "datasets": sorted({r.dataset for r in runs}),
    }


def _truth_file(run: Run, coll: Collection) -> str:
    if run.record is not None and run.record.store_path:
        return run.record.store_path
    if coll.workspace is not None:
        from pipeline.synth.cohort import truth_path

        return str(truth_path(coll.workspace, run.dataset))
    return f"{run.dataset}.truth.parquet"


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return f"{value:g}" if isinstance(value, float) else str(value)


def index_markdown(
    coll: Collection,
    tables: list[IndexEntry],
    figures: list[FigureResult],
    missing: list[str],
    prov: dict,
    out_dir: Path,
    cautions: list[str] | None = None,
) -> str:
    """index.md: title, SYNTHETIC banner, each table inline, cautions, each figure embedded; then the missing
    inputs and the provenance, folded."""
    synthetic = coll.is_synthetic()
    title = "chex report" + (" — SYNTHETIC" if synthetic else "")
    lines = [f"# {title}", ""]
    if synthetic:
        names = ", ".join(dataset_name(d) for d in sorted(coll.synthetic))
        lines += [
            f"> **SYNTHETIC.** {names}: made from chex's generated cohort, not from real patients. These numbers "
            "test the pipeline; they are not clinical results.",
            "",
        ]
    lines += ["## Tables", ""]
    for entry in tables:
        links = " · ".join(f"[{p.suffix[1:]}]({_rel(p, out_dir)})" for p in entry.files)
        lines += [to_markdown(entry.table, heading_level=3).rstrip(), "", f"Files: {links}", ""]
    if not tables:
        lines += ["(no tables: no probe results were found)", ""]
    if cautions:
        lines += ["## Cautions", "", *[f"- {c}" for c in cautions], ""]
    lines += ["## Figures", ""]
    for figure in figures:
        png = next((p for p in figure.paths if p.suffix == ".png"), None)
        links = " · ".join(f"[{p.suffix[1:]}]({_rel(p, out_dir)})" for p in figure.paths)
        lines += [f"### {figure.title or figure.name}", ""]
        if png is not None:
            lines += [f"![{figure.name}]({_rel(png, out_dir)})", ""]
        lines += [f"*{figure.caption}*", "", f"Files: {links}", ""]
    if not figures:
        lines += ["(no figures)", ""]
    if missing:
        lines += ["## Missing inputs", "", _summary(f"{len(missing)} runs or files that would add to this report"),
                  "", *[f"- {m}" for m in missing], "", "</details>", ""]  # fmt: skip
    summary = f"chex {prov['chex_version']}, {prov['date']}, {len(prov['runs'])} runs"
    lines += ["## Provenance", "", _summary(summary), "", *_provenance_lines(prov, out_dir), "", "</details>", ""]
    return "\n".join(lines)


def _summary(text: str) -> str:
    """The opening line of a folded section (index_html passes it through as HTML)."""
    return f"<details><summary>{html.escape(text)}</summary>"


_TRUSTED_LINES = ("<details><summary>Runs</summary>", "</details>")
_TRUSTED_PATTERN = r"<details><summary>[\w .,:+()-]*</summary>"  # _summary's lines: our own words, no markup


def index_html(markdown: str, title: str) -> str:
    """The same page as HTML (markdown-it, tables enabled) with a small stylesheet.

    Raw HTML in the markdown is escaped (html off): folder, backbone and data set names come from users. Only
    the index's own <details> lines pass through as tags."""
    md = MarkdownIt("commonmark", {"html": False}).enable("table")
    trusted = "|".join([*(re.escape(t) for t in _TRUSTED_LINES), _TRUSTED_PATTERN])
    chunks = re.split(f"^({trusted})$", markdown, flags=re.MULTILINE)
    body = "".join(chunk + "\n" if re.fullmatch(trusted, chunk) else md.render(chunk) for chunk in chunks)
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.4}"
        "table{border-collapse:collapse;font-size:0.85em;margin:0.5em 0}th,td{padding:2px 8px;"
        "border-bottom:1px solid #ddd}th{border-bottom:2px solid #444}img{max-width:520px;display:block}"
        "blockquote{background:#fff3cd;border-left:4px solid #c90;margin:0;padding:0.5em 1em}"
    )
    return (
        f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{style}</style></head>\n<body>\n{body}</body></html>\n"
    )


def write_text_atomic(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def _provenance_lines(prov: dict, out_dir: Path) -> list[str]:
    lines = [
        f"- chex version: {prov['chex_version']}",
        f"- date: {prov['date']}",
        f"- inputs: {', '.join(prov['sources'])}",
    ]
    if prov["synthetic"]:
        lines.append(f"- SYNTHETIC data sets: {', '.join(prov['synthetic'])}")
    oracle = prov.get("oracle")
    for backbone, entry in prov["backbones"].items():
        if oracle is not None and backbone == ORACLE[0]:
            lines.append(
                f"- backbone `{backbone}` (SYNTHETIC reference, not a model): {oracle['model']}, fitted on the "
                f"planted features ({', '.join(oracle['features'])}) of {', '.join(oracle['truth'])}"
            )
            continue
        sha = ", ".join(s[:16] for s in entry["checkpoint_sha256"]) or "unknown (no run.json)"
        store = ", ".join(entry["store"]) or "unknown"
        checkpoint = f", checkpoint {', '.join(entry['checkpoint'])}" if entry["checkpoint"] else ""
        family = f" (family {', '.join(entry['family'])})" if entry.get("family") else ""
        lines.append(f"- backbone `{backbone}`{family}: checkpoint sha256 `{sha}`{checkpoint}; store {store}")
    seeds = sorted({str(r["seed"]) for r in prov["runs"] if r["seed"] is not None})
    lines.append(f"- seeds: {', '.join(seeds) or 'unknown'}")
    for head, options in prov.get("head_configs", {}).items():
        lines.append(f"- head {head}: {options}")
    lines += ["", "<details><summary>Runs</summary>", ""]
    lines += [
        "| data set | backbone | head | label fraction | seed | lr | folder |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for r in prov["runs"]:
        lr = "" if r["lr"] is None else f"{r['lr']:g}" if isinstance(r["lr"], int | float) else str(r["lr"])
        seed = "" if r["seed"] is None else str(r["seed"])
        lines.append(
            f"| {r['dataset']} | {r['backbone']} | {r['head']} | {r['label_fraction']:g} | {seed} | {lr} | "
            f"{_rel(Path(r['folder']), out_dir)} |"
        )
    lines += ["", "</details>"]
    return lines


def _rel(path: Path, out_dir: Path) -> str:
    try:
        return os.path.relpath(path, out_dir)
    except ValueError:  # another drive on Windows
        return str(path)
