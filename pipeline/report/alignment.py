"""Table III (image-text alignment): each CLIP backbone's zero-shot run (`chex zeroshot`, pipeline/zeroshot/)
beside the same backbone's probes, macro AUPRC / AUROC per data set, best per column bold. The zero-shot rows
are ordinary runs, so they also appear in Table II; this table keeps only the backbones that have one."""

from __future__ import annotations

from pipeline.report.cells import ReportTable
from pipeline.report.collect import Collection, dataset_name
from pipeline.report.tables import MACRO_SET_NOTE, classification_datasets, macro_panels

ZERO_SHOT = "zeroshot"  # pipeline.zeroshot.run.HEAD


def alignment_table(coll: Collection) -> ReportTable:
    """Table III: rows = backbone x head for the backbones with a zero-shot run; empty when none has one."""
    datasets = classification_datasets(coll)
    runs = [r for d in datasets for r in coll.full_runs(d)]
    aligned = {r.backbone for r in runs if r.head == ZERO_SHOT}
    models = [m for m in coll.models(runs) if m[0] in aligned]
    panels = macro_panels(datasets, models, coll.run)
    return ReportTable(
        name="table3_alignment",
        number="Table III",
        title="Image-text alignment: zero-shot classification of the CLIP models beside their probes",
        caption=(
            "Zero-shot rows: per finding, the softmax of the image embedding's similarity to the positive vs the "
            "negative prompts ('<finding>' vs 'no <finding>', CheXzero's, unless a prompt file was given), no "
            "training. Macro-averaged AUPRC and AUROC on each data set's test split with 95% bootstrap confidence "
            f"intervals. {MACRO_SET_NOTE} Best model per column in bold; – marks a run that is missing."
        ),
        row_header=["Backbone", "Head"],
        columns=[dataset_name(d) for d in datasets],
        panels=panels,
        panel_header="Metric",
        synthetic=coll.is_synthetic(datasets),
    )
