"""Step (b) of sharding: write ONE shard, independently of every other, so it can run in a process pool or on
a dask worker on another machine (paths must then be on a shared file system).

Crash safety: the tar is written to `<file>.tmp`, fsynced and renamed into place; only then is the sidecar
`<file>.done.json` (record, samples, quarantine, plan fingerprint) written the same way. A shard counts as done
only when both exist and agree, so a kill at any moment leaves either a finished shard or one to redo.
Tar members carry fixed metadata (mtime 0, uid 0, mode 0644), so the same inputs give byte-identical shards.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import os
import tarfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from pipeline.atomic import fsync_dir
from pipeline.errors import ImageReadError
from pipeline.imageio import DECODE_POLICY, MAX_PIXELS, VoiMode, check_within, decode_image, read_bytes
from pipeline.shard.plan import ShardTask
from pipeline.shard_format import IMAGE_EXT, META_EXT, PIXEL_KEY, encode_png, pixel_digest, sanitize_key

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
DONE_SUFFIX = ".done.json"
TMP_SUFFIX = ".tmp"


@dataclass(frozen=True)
class WriteOptions:
    """How images become samples; part of every shard's fingerprint (changing one rewrites the shards)."""

    max_side: int | None = None
    voi: VoiMode = "auto"
    max_pixels: int = MAX_PIXELS
    decode: str = DECODE_POLICY  # recorded in each sidecar; a new decoding rule rewrites old shards


@dataclass
class ShardResult:
    """What `write_shard` returns and stores in the sidecar."""

    record: dict[str, Any]  # shard, index, n_samples, bytes, sha256
    samples: list[dict[str, Any]] = field(default_factory=list)  # image_id, key, height, width, bit_depth, pixel_sha256
    quarantine: list[dict[str, Any]] = field(default_factory=list)  # path, image_id, reason
    fingerprint: str = ""
    options: dict[str, Any] = field(default_factory=dict)  # the WriteOptions it was written with
    written: bool = True  # False when a finished shard was found and reused

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("written")
        return {"version": FORMAT_VERSION, **data}


def write_shard(
    task: ShardTask,
    image_root: str | Path,
    out_dir: str | Path,
    *,
    max_side: int | None = None,
    voi: VoiMode = "auto",
    max_pixels: int = MAX_PIXELS,
) -> ShardResult:
    """Write `task`'s shard into `out_dir` (tmp + fsync + rename, then its sidecar); unreadable images (and links
    out of the image root) are quarantined, never fatal; on any failure the temp file is removed. Returns the
    index record, per-sample facts and quarantine entries."""
    options = WriteOptions(max_side, voi, max_pixels)
    root, out_dir = Path(image_root), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final, done, tmp = out_dir / task.file, done_path(out_dir, task), out_dir / (task.file + TMP_SUFFIX)
    done.unlink(missing_ok=True)  # a stale sidecar must never vouch for the tar written below

    samples: list[dict[str, Any]] = []
    quarantine: list[dict[str, Any]] = []
    with _written_then_renamed(tmp, final) as raw:
        sink = _HashingWriter(raw)
        with tarfile.open(fileobj=sink, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for row in task.rows:
                image_id, rel = str(row["image_id"]), str(row["path"])
                try:
                    check_within(root / rel, root)  # a link out of the image root is never followed
                    png, facts = _sample_png(root / rel, options)
                except ImageReadError as exc:
                    quarantine.append({"path": rel, "image_id": image_id, "reason": _reason(exc, root / rel)})
                    continue
                key = sanitize_key(image_id)
                meta = {**row, PIXEL_KEY: facts[PIXEL_KEY]}  # the content key store rows are matched by
                meta = json.dumps(meta, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
                _add_member(tar, f"{key}.{IMAGE_EXT}", png)
                _add_member(tar, f"{key}.{META_EXT}", meta)
                samples.append({"image_id": image_id, "key": key, **facts})
    fsync_dir(out_dir)

    record = {
        "shard": task.file,
        "index": task.index,
        "n_samples": len(samples),
        "bytes": sink.size,
        "sha256": sink.digest.hexdigest(),
    }
    result = ShardResult(record, samples, quarantine, fingerprint(task, options), asdict(options))
    _write_json_atomic(done, result.to_json())
    log.debug("wrote %s: %d samples, %d quarantined", task.file, len(samples), len(quarantine))
    return result


def done_path(out_dir: str | Path, task: ShardTask) -> Path:
    return Path(out_dir) / (task.file + DONE_SUFFIX)


def load_done(
    task: ShardTask, out_dir: str | Path, options: WriteOptions | None = None, *, verify: str = "size"
) -> ShardResult | None:
    """The finished shard's result if its tar and sidecar are present, match this task and `options` (None:
    whatever options it was written with), and the tar passes `verify` ("size": its byte count; "sha256": a
    full re-hash), and records its samples' content keys; None if it must be (re)written."""
    out_dir = Path(out_dir)
    try:
        data = json.loads(done_path(out_dir, task).read_text())
        tar_size = (out_dir / task.file).stat().st_size
    except (OSError, ValueError):
        return None
    if data.get("version") != FORMAT_VERSION:
        return None
    try:
        expected = options or WriteOptions(**data.get("options", {}))
    except TypeError:
        return None
    if data.get("fingerprint") != fingerprint(task, expected):
        return None
    record = data["record"]
    if record.get("bytes") != tar_size:
        return None
    if verify == "sha256" and _sha256_file(out_dir / task.file) != record.get("sha256"):
        return None
    if any(PIXEL_KEY not in sample for sample in data.get("samples", [])):
        return None  # written before content keys: rewritten, so store rows can be matched by content
    return ShardResult(record, data["samples"], data["quarantine"], data["fingerprint"], data["options"], written=False)


def fingerprint(task: ShardTask, options: WriteOptions) -> str:
    """Hash of everything that determines the shard's bytes: rows, file name, options, format version."""
    payload = {"version": FORMAT_VERSION, "file": task.file, "rows": task.rows, "options": asdict(options)}
    text = json.dumps(payload, sort_keys=True, ensure_ascii=False, allow_nan=False, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _sample_png(path: Path, options: WriteOptions) -> tuple[bytes, dict[str, int | str]]:
    data = read_bytes(path)
    decoded = decode_image(data, path, options.max_side, max_pixels=options.max_pixels, voi=options.voi)
    pixels = decoded.pixels
    png = data if decoded.plain_png else encode_png(pixels)
    facts = {"height": int(pixels.shape[0]), "width": int(pixels.shape[1]), "bit_depth": pixels.dtype.itemsize * 8,
             PIXEL_KEY: pixel_digest(pixels)}  # fmt: skip
    return png, facts


def _reason(exc: ImageReadError, path: Path) -> str:
    text = str(exc)
    prefix = f"{path}: "
    return text[len(prefix) :] if text.startswith(prefix) else text


@contextlib.contextmanager
def _written_then_renamed(tmp: Path, final: Path) -> Iterator[BinaryIO]:
    """`tmp` open for writing; after the block it is fsynced and renamed to `final`. On any failure (a full disk,
    a signal, a bug) it is removed: a half-written shard never stays behind."""
    try:
        with open(tmp, "wb") as raw:
            yield raw
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    info.mode = 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


class _HashingWriter:
    """File-like sink for tarfile that hashes and counts bytes on the way to disk."""

    def __init__(self, raw: io.BufferedWriter) -> None:
        self.raw, self.digest, self.size = raw, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.raw.write(data)
        self.digest.update(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size

    def flush(self) -> None:
        self.raw.flush()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 22):
            digest.update(block)
    return digest.hexdigest()


def _write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    with _written_then_renamed(path.with_name(path.name + TMP_SUFFIX), path) as raw:
        raw.write(text.encode("utf-8"))
    fsync_dir(path.parent)
