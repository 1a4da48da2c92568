"""Many probes (heads x data sets x backbones x label fractions): in this process, or over dask.distributed.

Each job reads the feature store directly (no features travel through the scheduler) and writes its own run
folder, so jobs are independent; a failed job does not stop the others, and the failures are reported
together at the end (finished runs are kept, and a rerun skips them).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from pipeline.errors import ChexError
from pipeline.probe.protocol import ProbeConfig, RunSummary, run_probe
from pipeline.workspace import Workspace, resolve_workspace

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProbeJob:
    """One probe to run."""

    dataset: str
    head: str
    backbone: str | None = None
    config: ProbeConfig = field(default_factory=ProbeConfig)


class ProbeJobsFailed(ChexError):
    """Some probes of a batch failed (the others finished and were written)."""


def run_probes(
    workspace: Workspace | str | Path,
    jobs: Sequence[ProbeJob],
    force: bool = False,
    progress: bool = True,
    dask: str | None = None,
    n_workers: int | None = None,
) -> list[RunSummary]:
    """Run every job; `dask` = a scheduler address, 'local' for a local cluster, or None for this process."""
    ws = workspace if isinstance(workspace, Workspace) else resolve_workspace(workspace)
    if dask is None:
        outcomes = [_attempt(ws.root, job, force, progress) for job in jobs]
    else:
        outcomes = _run_on_dask(ws.root, list(jobs), force, dask, n_workers)
    failures = [(job, error) for job, error in zip(jobs, outcomes, strict=True) if isinstance(error, str)]
    if failures:
        lines = "; ".join(f"{j.dataset}/{j.head}: {e}" for j, e in failures)
        raise ProbeJobsFailed(f"{len(failures)} of {len(jobs)} probes failed ({lines})")
    return [o for o in outcomes if isinstance(o, RunSummary)]


def _attempt(root: Path, job: ProbeJob, force: bool, progress: bool) -> RunSummary | str:
    try:
        return run_probe(root, job.dataset, job.head, job.backbone, job.config, force=force, progress=progress)
    except ChexError as exc:
        log.error("%s/%s failed: %s", job.dataset, job.head, exc)
        return str(exc)


def _dask_job(root: str, job: ProbeJob, force: bool) -> RunSummary | str:
    from distributed import get_worker

    with contextlib.suppress(ValueError, AttributeError):  # one torch thread per dask thread: no oversubscription
        torch.set_num_threads(max(1, get_worker().state.nthreads))
    return _attempt(Path(root), job, force, progress=False)


def _run_on_dask(root: Path, jobs: list[ProbeJob], force: bool, address: str, n_workers: int | None):
    from distributed import Client, LocalCluster

    cluster = None
    if address == "local":
        cluster = LocalCluster(n_workers=n_workers or 1, threads_per_worker=1, processes=True, dashboard_address=None)
        client = Client(cluster)
    else:
        client = Client(address)
    try:
        log.info("running %d probes on dask scheduler %s", len(jobs), client.scheduler.address)
        futures = [client.submit(_dask_job, str(root.resolve()), job, force, pure=False) for job in jobs]
        return client.gather(futures)
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
