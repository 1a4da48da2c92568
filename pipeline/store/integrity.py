"""What a finished write unit wrote, and whether it is still there: the per-unit file records of the ledger.

Every row array of the store (whatever arrays it holds: token parts, scales, ids) is split along N
into blocks of whole units, one file (or folder of files) per block under `<array>/c/<block>`. When a unit is
done its files are recorded with size and sha256. A quick check compares sizes (a stat per file: missing,
emptied or shortened files); a deep check also compares digests (a flipped byte). Each chunk inside a file
also carries a crc32c, so a damaged chunk fails to decode instead of reading as the fill value.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from pipeline.store.ledger import Unit

_READ_BLOCK = 4 << 20


def array_names(store_path: Path) -> list[str]:
    """Every array of the store's rows (folders holding a zarr.json), sorted. Not the projection's arrays: they
    belong to no unit and are recorded in their own attribute (pipeline/store/projection.py)."""
    return sorted(
        p.parent.name
        for p in Path(store_path).glob("*/zarr.json")
        if p.parent.name != "ledger" and not p.parent.name.startswith("projection_")
    )


def _row_block(array_dir: Path) -> int:
    """Rows per file along N: the shard (or chunk) size of the array's first axis."""
    meta = json.loads((array_dir / "zarr.json").read_text())
    return int(meta["chunk_grid"]["configuration"]["chunk_shape"][0])


def unit_files(store_path: Path, unit: Unit) -> dict[str, Path | None]:
    """Relative path -> file of every chunk file holding the unit's rows; None where no file exists (a block
    Zarr left unwritten because it holds only the fill value)."""
    store_path = Path(store_path)
    out: dict[str, Path | None] = {}
    for name in array_names(store_path):
        array_dir = store_path / name
        block = _row_block(array_dir)
        if not unit.image_ids:
            continue
        for k in range(unit.start // block, (unit.stop - 1) // block + 1):
            base = array_dir / "c" / str(k)
            files = [base] if base.is_file() else sorted(f for f in base.rglob("*") if f.is_file())
            if not files:
                out[f"{name}/c/{k}"] = None
            for f in files:
                out[f.relative_to(store_path).as_posix()] = f
    return out


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_READ_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def record_files(store_path: Path, unit: Unit, fsync: bool = True) -> dict[str, list | None]:
    """{relative path: [size, sha256]} of the unit's files (None: no file, the block is all fill value),
    each flushed to disk first so the done marker never claims data that is not durable."""
    record: dict[str, list | None] = {}
    for rel, path in unit_files(store_path, unit).items():
        if path is None:
            record[rel] = None
            continue
        if fsync:
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        record[rel] = [path.stat().st_size, sha256_file(path)]
    return record


def check_files(store_path: Path, files: dict[str, list | None], deep: bool = False) -> list[str]:
    """Problems of one unit's recorded files: missing, wrong size, and (deep) wrong sha256; [] when intact."""
    problems = []
    for rel, want in files.items():
        if want is None:
            continue
        path = Path(store_path) / rel
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            problems.append(f"{rel} is missing")
            continue
        if size != want[0]:
            problems.append(f"{rel} has {size} bytes, written with {want[0]}")
        elif deep and sha256_file(path) != want[1]:
            problems.append(f"{rel} does not match its sha256 (changed since it was written)")
    return problems
