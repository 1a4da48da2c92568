"""The probe stage: heads trained on cached features (lr sweep, choice on val, refit, test predictions).

Entry points: `run_probe(workspace, dataset, head, backbone, config)` for one probe, `run_probes(...)` for many
(optionally spread over a dask.distributed cluster), `ProbeConfig` for the knobs.
"""

from pipeline.probe.distributed import ProbeJob, run_probes
from pipeline.probe.protocol import PAPER_LRS, ProbeConfig, RunSummary, resolve_backbone, run_probe

__all__ = ["PAPER_LRS", "ProbeConfig", "ProbeJob", "RunSummary", "resolve_backbone", "run_probe", "run_probes"]
