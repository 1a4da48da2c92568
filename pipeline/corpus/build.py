"""Build the pretraining corpus: union of source manifests, contamination guard, exact de-duplication,
near-duplicate flags, and a report against the paper's Table I.

Outputs, next to `out` (e.g. `cxr1m.parquet`):
- `cxr1m.parquet`: the corpus manifest. Columns image_id (the source's id, prefixed `<source>_` only where two
  sources use the same id), path, patient_id (`<source>:<source patient id>`: namespaces differ across
  sources), split ('train': every corpus image is for pretraining), view (when a source has it), source,
  source_image_id, source_patient_id, source_split, content_hash, phash, near_duplicate_of,
  near_duplicate_distance (-1 when none), near_eval_image (`<eval set>:<image id>` of a close test image,
  flagged only).
- `cxr1m.sources.json`: `root`, the common parent folder of every source's image root; corpus `path`s are
  relative to it (so any stage taking one image root reads the corpus), plus each source's own root/manifest.
- `cxr1m.removed.parquet`: every dropped row with its reason (unreadable, duplicate, leak_image, leak_patient,
  leak_near_image) and detail (the kept duplicate's id, the evaluation image, or the decode error).
- `cxr1m.report.json` / `.report.md`: per-source counts next to Table I, duplicates per source pair,
  near-duplicate pairs per source pair, contamination drops per source and evaluation set.
- `cxr1m.hashes/<source>/`: the hash cache that makes a rerun after a kill resume.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.corpus.contamination import EvalSet, find_leaks
from pipeline.corpus.dedup import exact_duplicates, near_duplicates
from pipeline.corpus.hashing import DEFAULT_BATCH, hash_manifest
from pipeline.corpus.report import render_markdown, source_rows
from pipeline.corpus.sources import canonical_name, resolve_subset, subset_paper_count
from pipeline.errors import ConfigError
from pipeline.manifest import read_manifest, write_manifest

log = logging.getLogger(__name__)

DEFAULT_NEAR_THRESHOLD = 4


@dataclass(frozen=True)
class SourceInput:
    """A source manifest and the folder its paths are relative to."""

    name: str
    manifest: Path
    root: Path


@dataclass(frozen=True)
class EvalInput:
    """An evaluation manifest whose test split must stay out of the corpus; `patient_sources` are the corpus
    sources sharing its patient ids."""

    name: str
    manifest: Path
    root: Path
    patient_sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class CorpusConfig:
    """Options of a corpus build (see `chex corpus build --help`)."""

    subset: str | tuple[str, ...] | None = None
    near_threshold: int = DEFAULT_NEAR_THRESHOLD
    drop_near_leaks: bool = False
    workers: int = 1
    executor: str = "process"
    scheduler: str | None = None
    batch_size: int = DEFAULT_BATCH
    progress: bool = True


@dataclass
class CorpusResult:
    manifest_path: Path
    corpus: pd.DataFrame
    removed: pd.DataFrame
    report: dict[str, Any] = field(default_factory=dict)


def corpus_paths(out: str | Path) -> dict[str, Path]:
    """The files a build writes beside `out`."""
    out = Path(out)
    stem = out.name.removesuffix(".parquet")
    return {
        "manifest": out,
        "sources": out.with_name(f"{stem}.sources.json"),
        "removed": out.with_name(f"{stem}.removed.parquet"),
        "report_json": out.with_name(f"{stem}.report.json"),
        "report_md": out.with_name(f"{stem}.report.md"),
        "hashes": out.with_name(f"{stem}.hashes"),
    }


def build_corpus(
    sources: Sequence[SourceInput],
    out: str | Path,
    evals: Sequence[EvalInput] = (),
    config: CorpusConfig = CorpusConfig(),
) -> CorpusResult:
    """Union the sources into one de-duplicated, contamination-free corpus manifest at `out`."""
    paths = corpus_paths(out)
    sources = _select(sources, config.subset)
    rows = _union(sources, paths["hashes"], config)
    removed: list[pd.DataFrame] = []

    unreadable = rows["error"].notna().to_numpy()
    removed.append(_removed(rows[unreadable], "unreadable", rows.loc[unreadable, "error"]))
    rows = rows[~unreadable].reset_index(drop=True)

    eval_sets = [_eval_set(e, paths["hashes"], config) for e in evals]
    leaks = find_leaks(rows, eval_sets, config.near_threshold if eval_sets else None)
    drop_reasons = {"image", "patient"} | ({"near_image"} if config.drop_near_leaks else set())
    dropped = leaks[leaks["reason"].isin(drop_reasons)]
    flagged = leaks[~leaks["reason"].isin(drop_reasons)]
    rows["near_eval_image"] = None
    near_eval = flagged["eval_set"] + ":" + flagged["eval_image_id"]
    rows.loc[flagged["row"].to_numpy(), "near_eval_image"] = near_eval.to_numpy()
    leak_rows = rows.loc[dropped["row"].to_numpy()]
    detail = dropped["eval_set"] + ":" + dropped["eval_image_id"].fillna("patient")
    for reason in ("image", "patient", "near_image"):
        mask = (dropped["reason"] == reason).to_numpy()
        removed.append(_removed(leak_rows[mask], f"leak_{reason}", detail[mask]))
    contamination = _contamination_table(leak_rows, dropped)
    rows = rows.drop(index=dropped["row"].to_numpy()).reset_index(drop=True)

    duplicate_of = exact_duplicates(rows["content_hash"], rows["image_id"])
    is_dup = duplicate_of.notna().to_numpy()
    removed.append(_removed(rows[is_dup], "duplicate", duplicate_of[is_dup]))
    exact_pairs = _exact_pair_table(rows, duplicate_of)
    rows = rows[~is_dup].reset_index(drop=True)

    near = near_duplicates(rows["image_id"], rows["phash"], rows["source"], config.near_threshold)
    rows["near_duplicate_of"] = near.near_duplicate_of.to_numpy()
    rows["near_duplicate_distance"] = near.distance

    common_root = _common_root([s.root for s in sources])
    corpus = _corpus_frame(rows, sources, common_root)
    removed_frame = pd.concat(removed, ignore_index=True)
    write_manifest(corpus, paths["manifest"])
    _write_parquet(removed_frame, paths["removed"])
    _write_json(paths["sources"], _sources_sidecar(sources, common_root))
    report = _report(config, sources, corpus, removed_frame, exact_pairs, near, contamination, flagged, rows)
    _write_json(paths["report_json"], report)
    _write_text(paths["report_md"], render_markdown(report))
    log.info("corpus: %d images kept from %d sources -> %s", len(corpus), len(sources), paths["manifest"])
    return CorpusResult(manifest_path=paths["manifest"], corpus=corpus, removed=removed_frame, report=report)


def read_corpus_root(out: str | Path) -> Path:
    """The common image root a corpus manifest's paths are relative to (from its sources sidecar)."""
    sidecar = corpus_paths(out)["sources"]
    if not sidecar.is_file():
        raise ConfigError(f"no {sidecar.name} beside {out}: build the corpus with `chex corpus build` first")
    return Path(json.loads(sidecar.read_text())["root"])


def _select(sources: Sequence[SourceInput], subset: str | Sequence[str] | None) -> list[SourceInput]:
    names = [s.name for s in sources]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise ConfigError(f"source name(s) {repeated} given more than once; name each source once (NAME=PATH)")
    if not sources:
        raise ConfigError("no source manifests given: pass --sources a.parquet b.parquet ...")
    kept = set(resolve_subset(subset, names))
    return [s for s in sources if s.name in kept]


def _union(sources: Sequence[SourceInput], hash_dir: Path, config: CorpusConfig) -> pd.DataFrame:
    """Every row of every source in priority order, with hashes and final (collision-free) image ids."""
    frames = []
    for source in sources:
        manifest = read_manifest(source.manifest)
        hashes = hash_manifest(
            manifest,
            source.root,
            hash_dir / source.name,
            workers=config.workers,
            executor=config.executor,
            scheduler=config.scheduler,
            batch_size=config.batch_size,
            description=f"hashing {source.name}",
            progress=config.progress,
        )
        frame = pd.DataFrame(
            {
                "source": source.name,
                "source_image_id": manifest["image_id"].astype(str).to_numpy(),
                "source_patient_id": manifest["patient_id"].astype(str).to_numpy(),
                "source_split": manifest["split"].astype(str).to_numpy(),
                "view": manifest["view"].to_numpy() if "view" in manifest.columns else None,
                "source_path": manifest["path"].astype(str).to_numpy(),
            }
        )
        for column in ("content_hash", "phash", "height", "width", "dtype", "error"):
            frame[column] = hashes[column].to_numpy()
        frames.append(frame)
    rows = pd.concat(frames, ignore_index=True)
    ids = rows["source_image_id"]
    sources_per_id = rows.groupby("source_image_id")["source"].transform("nunique")
    colliding = (sources_per_id > 1).to_numpy()
    rows["image_id"] = ids.where(~colliding, rows["source"] + "_" + ids)
    if colliding.any():
        log.info("%d image ids are used by more than one source: prefixed with the source name", colliding.sum())
    return rows


def _eval_set(spec: EvalInput, hash_dir: Path, config: CorpusConfig) -> EvalSet:
    manifest = read_manifest(spec.manifest)
    test = manifest[manifest["split"] == "test"].reset_index(drop=True)
    if not len(test):
        raise ConfigError(f"{spec.manifest}: the evaluation manifest has no test split rows to keep out")
    hashes = hash_manifest(
        test,
        spec.root,
        hash_dir / f"eval-{spec.name}",
        workers=config.workers,
        executor=config.executor,
        scheduler=config.scheduler,
        batch_size=config.batch_size,
        description=f"hashing {spec.name} test",
        progress=config.progress,
    )
    unreadable = int(hashes["error"].notna().sum())
    if unreadable:
        log.warning("%s: %d test images cannot be decoded; only their patients are matched", spec.name, unreadable)
    frame = pd.DataFrame(
        {
            "image_id": test["image_id"].astype(str),
            "patient_id": test["patient_id"].astype(str),
            "content_hash": hashes["content_hash"],
            "phash": hashes["phash"],
        }
    )
    links = tuple(canonical_name(s) for s in spec.patient_sources)
    return EvalSet(name=spec.name, test=frame, patient_sources=links)


def _removed(rows: pd.DataFrame, reason: str, detail: pd.Series | np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "image_id": rows["image_id"].to_numpy(),
            "source": rows["source"].to_numpy(),
            "source_image_id": rows["source_image_id"].to_numpy(),
            "path": rows["source_path"].to_numpy(),
            "reason": reason,
            "detail": np.asarray(detail, dtype=object),
        }
    )


def _contamination_table(leak_rows: pd.DataFrame, dropped: pd.DataFrame) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "eval_set": dropped["eval_set"].to_numpy(),
            "source": leak_rows["source"].to_numpy(),
            "reason": dropped["reason"].to_numpy(),
        }
    )
    return frame.groupby(["eval_set", "source", "reason"], sort=False).size().rename("dropped").reset_index()


def _exact_pair_table(rows: pd.DataFrame, duplicate_of: pd.Series) -> pd.DataFrame:
    """Removed exact duplicates per (kept source, removed source)."""
    is_dup = duplicate_of.notna().to_numpy()
    source_of = pd.Series(rows["source"].to_numpy(), index=rows["image_id"].to_numpy())
    frame = pd.DataFrame(
        {
            "kept_source": source_of.loc[duplicate_of[is_dup]].to_numpy(),
            "removed_source": rows["source"].to_numpy()[is_dup],
        }
    )
    counts = frame.groupby(["kept_source", "removed_source"], sort=False).size().rename("images").reset_index()
    return counts.sort_values("images", ascending=False, ignore_index=True)


def _common_root(roots: Sequence[Path]) -> Path:
    return Path(os.path.commonpath([str(Path(r).resolve()) for r in roots]))


def _corpus_frame(rows: pd.DataFrame, sources: Sequence[SourceInput], common_root: Path) -> pd.DataFrame:
    prefix = {s.name: Path(s.root).resolve().relative_to(common_root).as_posix() for s in sources}
    prefixes = rows["source"].map(prefix)
    paths = np.where(prefixes == ".", rows["source_path"], prefixes + "/" + rows["source_path"])
    columns = {
        "image_id": rows["image_id"],
        "path": paths,
        "patient_id": rows["source"] + ":" + rows["source_patient_id"],
        "split": "train",
    }
    if rows["view"].notna().any():
        columns["view"] = rows["view"]
    frame = pd.DataFrame(columns)
    for column in (
        "source",
        "source_image_id",
        "source_patient_id",
        "source_split",
        "content_hash",
        "phash",
        "near_duplicate_of",
        "near_duplicate_distance",
        "near_eval_image",
    ):
        frame[column] = rows[column].to_numpy()
    return frame


def _sources_sidecar(sources: Sequence[SourceInput], common_root: Path) -> dict[str, Any]:
    return {
        "root": str(common_root),
        "sources": {s.name: {"root": str(Path(s.root).resolve()), "manifest": str(s.manifest)} for s in sources},
    }


def _report(
    config: CorpusConfig,
    sources: Sequence[SourceInput],
    corpus: pd.DataFrame,
    removed: pd.DataFrame,
    exact_pairs: pd.DataFrame,
    near: Any,
    contamination: pd.DataFrame,
    flagged_leaks: pd.DataFrame,
    rows: pd.DataFrame,
) -> dict[str, Any]:
    names = [s.name for s in sources]
    near_test = rows.loc[rows["near_eval_image"].notna(), "source"].value_counts()
    per_source = source_rows(names, corpus, removed, near_test)
    subset_name = config.subset if isinstance(config.subset, str) else None
    return {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "subset": config.subset if config.subset is None or isinstance(config.subset, str) else list(config.subset),
        "subset_paper_count": subset_paper_count(subset_name) if subset_name else None,
        "near_threshold": config.near_threshold,
        "drop_near_leaks": config.drop_near_leaks,
        "totals": {
            "manifest_rows": int(len(corpus) + len(removed)),
            "kept": len(corpus),
            **{reason: int(n) for reason, n in removed["reason"].value_counts().items()},
            "near_duplicates_flagged": int(corpus["near_duplicate_of"].notna().sum()),
            "near_duplicate_pairs": int(near.n_pairs),
            "near_eval_flagged": len(flagged_leaks),
        },
        "sources": per_source,
        "exact_duplicates": exact_pairs.to_dict(orient="records"),
        "near_duplicate_pairs": near.pair_counts.to_dict(orient="records"),
        "contamination": contamination.to_dict(orient="records"),
    }


def _write_parquet(frame: pd.DataFrame, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    _write_text(path, json.dumps(data, indent=2, default=_json_default) + "\n")


def _write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    raise TypeError(f"not JSON serialisable: {type(value)}")
