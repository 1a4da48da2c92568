"""`run_zeroshot`: zero-shot classification of one data set by a CLIP family's feature store, as a run folder.

No training and no sweep: for each finding, p(positive) = softmax(s * [cos(image, positive prompts),
cos(image, negative prompts)])[0] (CheXzero's positive/negative softmax), s = the checkpoint's exp(logit_scale)
(`scale="model"`) or 1 (`scale="none"`: CheXzero's zero_shot.py, which soft-maxes raw cosines; AUROC is the same
either way). Image embeddings come from the store (pipeline/zeroshot/alignment.py): the store is embedded once
and serves every prompt set. The run folder is an ordinary one (results/<dataset>/<backbone>/zeroshot[@tag]/,
pipeline/runs/): predictions.parquet and val_predictions.parquet with the probe's columns (lr 0), results.parquet
from `evaluate_run`, run.json; so `chex stats`, `chex compare` and the report read it like any run.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import CheckpointError, ConfigError
from pipeline.locks import folder_lock
from pipeline.runs import (
    PREDICTIONS_FILE,
    RECORD_FILE,
    RESULTS_FILE,
    VAL_PREDICTIONS_FILE,
    RunFolder,
    RunRecord,
    config_tag,
    finish_run,
)
from pipeline.workspace import Workspace, resolve_workspace
from pipeline.zeroshot.prompts import FindingPrompts, finding_prompts, prompts_digest

log = logging.getLogger(__name__)

HEAD = "zeroshot"
SCALES = ("model", "none")
_READ_ROWS = 4096  # store rows read at a time (only the last layer's global token is kept)


@dataclass(frozen=True)
class ZeroShotConfig:
    """The options of a zero-shot run (`chex zeroshot`)."""

    prompts: str | None = None  # prompt file (pipeline/zeroshot/prompts.py); None: CheXzero's pair per finding
    scale: str = "model"  # "model": the checkpoint's logit scale; "none": raw cosines (CheXzero's zero_shot.py)
    checkpoint: str | None = None  # default: the checkpoint the store records
    tokenizer: str | None = None  # default: beside the checkpoint
    seed: int = 0  # of the val split carving and the bootstrap
    n_resamples: int = 1000

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise ConfigError(f"--scale {self.scale!r}: choose one of {SCALES}")


def run_zeroshot(
    workspace: Workspace | str | Path | None,
    dataset: str,
    backbone: str | None = None,
    config: ZeroShotConfig | None = None,
) -> Path:
    """Score `dataset`'s val and test images zero-shot with `backbone`'s store and its checkpoint's text side;
    write the run folder and return it."""
    from pipeline.probe.data import check_in_store, load_probe_data, outputs_without_both_classes
    from pipeline.probe.protocol import resolve_backbone
    from pipeline.store.reader import FeatureStore

    started = time.perf_counter()
    config = config or ZeroShotConfig()
    ws = workspace if isinstance(workspace, Workspace) else resolve_workspace(workspace)
    name = resolve_backbone(ws, backbone)
    store = FeatureStore.open(ws.features_dir(name))
    data = load_probe_data(ws, dataset, seed=config.seed)
    survival = {c for t in data.card.survival_tasks for c in t.columns}
    prompts, left_out = finding_prompts(list(data.outputs), survival, config.prompts)
    side = image_text_of(store, config)
    positions = np.concatenate([data.val, data.test])
    check_in_store(store, list(data.image_ids[positions]), dataset, name)

    outputs = list(prompts)
    keep = [data.outputs.index(o) for o in outputs]
    data = dataclasses.replace(data, outputs=outputs, labels=data.labels[:, keep])
    scale = side.logit_scale if config.scale == "model" else 1.0
    probs = zero_shot_probabilities(side, global_tokens(store, data.image_ids[positions]), prompts, scale)
    val_probs, test_probs = probs[: len(data.val)], probs[len(data.val) :]

    head_config = {
        "name": HEAD, "family": side.family, "scale": config.scale, "logit_scale": scale,
        "prompts": {o: p.to_dict() for o, p in prompts.items()}, "prompt_file": config.prompts,
        "tokenizer": side.tokenizer.source, "image_embedding": "stored last-layer global token x the image projection",
    }  # fmt: skip
    tag = _tag(prompts, config)
    folder = RunFolder.of(ws, dataset, name, HEAD, 1.0, tag=tag)
    key = _key(store, side, prompts, config, data)
    record = RunRecord(
        key=key, dataset=dataset, backbone=name, head=HEAD, label_fraction=1.0, seed=config.seed,
        n_resamples=config.n_resamples, chosen_lr=0.0, val_macro_auroc=float("nan"), test_macro_auroc=float("nan"),
        selected_by="none (zero-shot: no training, no sweep)", epochs=0, batch_size=0, train_views=0,
        head_config=head_config, config={"seed": config.seed, "n_resamples": config.n_resamples}, outputs=outputs,
        skipped_train={}, skipped_test=outputs_without_both_classes(data.labels[data.test], outputs),
        threshold_transfer="quantile", store_path=str(store.path),
        checkpoint=side.source, checkpoint_sha256=side.sha256,
        store_attrs={k: v for k, v in store.attrs.items() if k != "layout"}, synthetic=bool(data.card.synthetic),
        data={"n_val": len(data.val), "n_test": len(data.test), "left_out": left_out, **data.notes},
        timings={"scoring_s": time.perf_counter() - started}, versions=_versions(),
    )  # fmt: skip
    identity = dict(dataset=dataset, backbone=name, head=HEAD, label_fraction=1.0)
    with folder_lock(folder.root, "zero-shot run folder"):
        return write_zero_shot_run(folder, record, data, identity, val_probs, test_probs)


def image_text_of(store, config: ZeroShotConfig):
    """The alignment of the checkpoint that made `store` (or `config.checkpoint`), checked against the store's
    family and weights sha256."""
    from pipeline.backbone.found import inspect_path
    from pipeline.backbone.registry import Family, get_family
    from pipeline.zeroshot.alignment import no_text_tower

    attrs = store.attrs
    family = attrs.get("family")
    if family is None:
        raise ConfigError(f"feature store {store.path} records no backbone family; embed it again with this chex")
    fam = get_family(str(family))
    if type(fam).image_text is Family.image_text:
        raise CheckpointError(f"feature store {store.path}: " + no_text_tower(fam.name))
    checkpoint = config.checkpoint or attrs.get("checkpoint")
    if not checkpoint or not Path(str(checkpoint)).exists():
        raise ConfigError(
            f"feature store {store.path} records checkpoint {attrs.get('checkpoint')!r}, which is not on disk; "
            "pass the files it was embedded from with --checkpoint PATH"
        )
    tokenizer = Path(config.tokenizer) if config.tokenizer else None
    side = fam.image_text(inspect_path(checkpoint), tokenizer)
    if attrs.get("checkpoint_sha256") and side.sha256 != attrs["checkpoint_sha256"]:
        raise CheckpointError(
            f"{checkpoint} (sha256 {side.sha256[:12]}) is not the checkpoint feature store {store.path} was embedded "
            f"with (sha256 {str(attrs['checkpoint_sha256'])[:12]}); pass that one with --checkpoint"
        )
    if side.image_projection.shape[1] != store.dim:
        raise CheckpointError(
            f"{checkpoint}: the image projection takes {side.image_projection.shape[1]}-wide tokens, the store "
            f"holds {store.dim}"
        )
    return side


def global_tokens(store, image_ids):
    """(N, D) float32: each image's (view 0) last-layer global token, read a few thousand rows at a time."""
    import torch

    rows = store.rows(list(image_ids))
    parts = [store.read(rows[i : i + _READ_ROWS], ("cls",))["cls"][:, -1] for i in range(0, len(rows), _READ_ROWS)]
    return torch.cat(parts) if parts else torch.zeros((0, store.dim))


def zero_shot_probabilities(side, tokens, prompts: dict[str, FindingPrompts], scale: float) -> np.ndarray:
    """(N, K) p(positive) per image and finding (module docstring)."""
    import torch

    images = side.image_embeddings(tokens)  # (N, E) unit
    classes = torch.stack(
        [
            torch.stack([side.class_embedding(list(p.positive)), side.class_embedding(list(p.negative))])
            for p in prompts.values()
        ]
    )  # (K, 2, E) fmt: skip
    logits = scale * torch.einsum("ne,kse->nks", images, classes)
    return logits.softmax(dim=-1)[..., 0].double().numpy()


def write_zero_shot_run(folder: RunFolder, record: RunRecord, data, identity: dict, val_probs, test_probs) -> Path:
    """Finish the run folder through pipeline/runs' `finish_run` (tables, results by the run's task, run.json
    last) with the zero-shot scores as the prediction tables."""
    from pipeline.probe.results import prediction_frame

    tables = {
        PREDICTIONS_FILE: prediction_frame(data, data.test, test_probs, identity, record.seed, 0.0),
        VAL_PREDICTIONS_FILE: prediction_frame(data, data.val, val_probs, identity, record.seed, 0.0),
    }
    record = dataclasses.replace(record, files=[*tables, RESULTS_FILE, RECORD_FILE])
    finish_run(folder.root, record, tables)
    log.info("%s: zero-shot %s -> %s", record.dataset, record.backbone, folder.root)
    return folder.root


def _tag(prompts: dict[str, FindingPrompts], config: ZeroShotConfig) -> str:
    """'' for the card's default prompts at the model's scale; else a tag naming what differs."""
    differences: list[tuple[str, object]] = []
    if config.prompts is not None:
        differences.append(("prompts", prompts_digest(prompts)[:6]))
    if config.scale != "model":
        differences.append(("scale", config.scale))
    return config_tag(differences, {"prompts": prompts_digest(prompts), "scale": config.scale})


def _key(store, side, prompts, config: ZeroShotConfig, data) -> str:
    import hashlib
    import json

    identity = {
        "store": str(store.attrs.get("checkpoint_sha256")), "rows": len(store), "weights": side.sha256,
        "prompts": prompts_digest(prompts), "scale": config.scale, "seed": config.seed,
        "n_resamples": config.n_resamples, "test": len(data.test), "val": len(data.val),
    }  # fmt: skip
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()


def _versions() -> dict[str, str]:
    import platform

    import torch

    import pipeline

    return {"chex": pipeline.__version__, "torch": torch.__version__, "python": platform.python_version()}
