"""The contract every task kind meets (docs/architecture.md "Adding a task kind").

A task owns what differs between kinds of downstream task, from the manifest to the report: its outputs and
targets, its training loss, its lr-selection score on val, the tables a run folder holds, the result rows and the
report tables. The probe's loop (pipeline/probe/), the run folder (pipeline/runs/) and the report ask the task;
they never test a kind by name. Targets are one array with the images on the first axis (N, ...), NaN = unknown;
the head's output for a batch is logits with the batch on the first axis, and a sweep's stack adds the heads'
axis in front (H, B, ...): classification is (B, K), segmentation (B, K, h, w).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import torch

    from pipeline.cards import DatasetCard
    from pipeline.probe.data import ProbeData
    from pipeline.probe.sweep import TrainLosses
    from pipeline.report.cells import ReportTable
    from pipeline.report.collect import Collection
    from pipeline.report.figures import FigureResult
    from pipeline.runs.evaluate import CompareConfig, StatsConfig
    from pipeline.runs.record import RunRecord


# The columns of a task's comparison rows (pipeline.stats.comparisons.compare_predictions gives them and more).
COMPARE_COLUMNS = ("output", "metric", "estimate_a", "estimate_b", "diff", "p_value", "p_adjusted", "delong_p",
                   "n_permutations", "model_a", "model_b", "note")  # fmt: skip


@dataclass(frozen=True)
class ReportSettings:
    """What the report's tables and figures of every task share: the paired tests' settings, the seed, resamples."""

    n_permutations: int = 1000
    adjust: str = "holm"
    seed: int = 0
    n_resamples: int = 1000  # bootstrap resamples of CIs the report computes itself


@dataclass
class ReportPart:
    """A task's share of the report: its tables (empty ones are skipped), what is missing (one line each, for the
    index), and per table name the rows of a detail CSV written beside it (`<name>_detail.csv`)."""

    tables: list[ReportTable] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    details: dict[str, pd.DataFrame] = field(default_factory=dict)
    figures: list[FigureResult] = field(default_factory=list)  # report_figures' (PNG + PDF under the figures folder)


class Task(ABC):
    """One task kind. Subclass, implement the abstract methods, and add a `TaskEntry` to pipeline/tasks/registry.py."""

    name: str = "task"
    # The run folder's tables this task writes besides sweep.parquet/head.pt, name -> read text columns as
    # categories; the first is the one that marks a folder as this task's run (pipeline/runs/layout.py).
    tables: ClassVar[dict[str, bool]] = {}
    score_column: str = "val_score"  # the sweep table's column the lr-selection rule ranks (higher is better)
    # Whether training may draw the store's augmented views (random crops and flips of each training image): a task
    # whose targets are tied to the eval view's pixels (segmentation masks) says False.
    uses_train_views: bool = True
    score_name: str = "val score"  # the same in words, for logs, notes and `chex probe`'s summary

    # --- data -------------------------------------------------------------------------------------------------
    @abstractmethod
    def outputs(self, card: DatasetCard) -> list[str]:
        """The head's outputs (K), in card order: findings, horizon outputs, structures."""

    @abstractmethod
    def targets(self, card: DatasetCard, manifest: pd.DataFrame, store: Any = None) -> np.ndarray:
        """Training targets of the manifest's rows: float32 (N, ...), NaN = unknown (masked from loss and metrics).
        `store` is the feature store the probe reads (its grid and crop), None where none is open."""

    def strata(self, targets: np.ndarray) -> np.ndarray | None:
        """(N, K) binary labels to stratify a carved val split by (pipeline/splits.py), or None."""
        return None

    def skipped(self, targets: np.ndarray, outputs: Sequence[str]) -> dict[str, str]:
        """Outputs that cannot be trained or scored on these targets (output -> reason): left out of lr selection
        and scored by a prior. Default: none."""
        return {}

    # --- training ---------------------------------------------------------------------------------------------
    @abstractmethod
    def loss(self, logits: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0,
             reduction: str = "mean") -> torch.Tensor:  # fmt: skip
        """Sum over the H heads of each head's loss: logits (H, B, ...), targets (B, ...). reduction "sum": summed
        over the known units instead of averaged (micro-batches divide once per step by `n_known`)."""

    @abstractmethod
    def member_loss_sums(self, logits: torch.Tensor, targets: torch.Tensor,
                         label_smoothing: float = 0.0) -> tuple[torch.Tensor, int]:  # fmt: skip
        """Each head's loss summed over the batch's known units (H,) float64 on CPU, and the number of known
        units (the divergence check's per-epoch mean train loss)."""

    @abstractmethod
    def n_known(self, targets: torch.Tensor) -> int:
        """Known units of a batch's targets (the divisor of a micro-batched step's summed loss)."""

    @abstractmethod
    def activate(self, logits: torch.Tensor) -> torch.Tensor:
        """The scores a run saves from logits (probabilities), same shape."""

    # --- lr selection -----------------------------------------------------------------------------------------
    @abstractmethod
    def sweep_table(self, lrs: Sequence[float], val_scores: np.ndarray, val_targets: np.ndarray, skip: Sequence[int],
                    rule: str, losses: TrainLosses | None) -> pd.DataFrame:  # fmt: skip
        """sweep.parquet: one row per lr with at least lr, `score_column`, val_loss, diverged, chosen (one True),
        selected_by. val_scores (H, N_val, ...). The divergence rule (`TrainLosses.diverged`) decides eligibility."""

    @abstractmethod
    def rung_score(self, val_scores: np.ndarray, val_targets: np.ndarray, skip: Sequence[int], rule: str) -> float:
        """Successive halving's rank of one head at a rung (higher is better)."""

    # --- the run folder ---------------------------------------------------------------------------------------
    @abstractmethod
    def pass_tables(self, data: ProbeData, test_scores: np.ndarray, val_scores: np.ndarray, identity: dict[str, Any],
                    seed: int, lr: float, skipped: dict[str, str], fold: int = -1,
                    tagged: bool = False) -> dict[str, pd.DataFrame | None]:  # fmt: skip
        """The tables of one pass of the protocol (file name -> rows; None: the task writes no such table here).
        `fold` >= 0 tags CV rows; `tagged` asks every table to carry its seed (and fold): several passes."""

    def read_tables(self, folder: Path) -> dict[str, pd.DataFrame | None]:
        """The run folder's tables of this task (None for those absent)."""
        from pipeline.runs.io import read_table

        return {name: read_table(Path(folder) / name, text_as_categories=cats) for name, cats in self.tables.items()}

    # --- statistics -------------------------------------------------------------------------------------------
    @abstractmethod
    def evaluate(self, tables: dict[str, pd.DataFrame | None], record: RunRecord | None,
                 config: StatsConfig) -> pd.DataFrame:  # fmt: skip
        """results.parquet rows (pipeline.stats.tables.RESULT_COLUMNS) of a run's tables."""

    @abstractmethod
    def headline(self, results: pd.DataFrame) -> float:
        """The run's one number for run.json (`test_macro_auroc`: the task's headline metric), NaN if undefined."""

    @abstractmethod
    def compare(self, run_a: Path, run_b: Path, config: CompareConfig) -> pd.DataFrame:
        """Paired permutation test of two runs of this task over the task's per-unit score (A minus B): rows with
        COMPARE_COLUMNS (what `chex compare` prints and the report's p-value tables read)."""

    # --- report -----------------------------------------------------------------------------------------------
    head_output: str = "vector"  # the head output it trains: "vector" (B, K) logits or "map" (B, K, h, w) logits
    report_heads: tuple[str, ...] = ()  # the heads the report expects a run of per data set (names what is missing)
    planted_oracle: bool = False  # pipeline/synth/oracle.py can fit its outputs on a synthetic set's planted features
    headline_metric: str = "auroc"  # results.parquet's metric of the headline row (output "macro")
    headline_name: str = "macro AUROC"  # the headline in words (`chex probe` prints "test <headline_name>")
    wide_metrics: tuple[str, ...] = ()  # `chex stats` prints these as one row per output, with their CIs
    hidden_metrics: tuple[str, ...] = ()  # ... these not at all (in the file only); any others one row each

    def report_tables(self, coll: Collection, settings: ReportSettings) -> ReportPart:
        """This task's report tables for its data sets (`coll.datasets_of(self)`), and what is missing. Every
        registered task is asked, in registry order, also when the collection has none of its data sets."""
        return ReportPart()

    has_figures: bool = False  # True when `report_figures` draws something (the report's progress counts it)

    def report_figures(self, coll: Collection, out_dir: Path, settings: ReportSettings) -> ReportPart:
        """This task's figures for its data sets, drawn into `out_dir` (FigureResult: files and caption; what is
        missing). Asked after the report's classification/survival figures, when `has_figures`. Default: none."""
        return ReportPart()
