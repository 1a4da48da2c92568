"""`chex store verify`: check every finished unit of a store against what its done marker recorded, and a
projected store's basis against its own record.

A damaged unit (a file missing, of another size, or, in the deep check, with another sha256) loses its done
marker (kept under `ledger/damaged/` with the problems) and its files, so its rows are hidden from readers and
the next run of the command that wrote the store (`chex embed`, or `chex store compress` for a compressed one)
writes exactly those units again. A damaged basis (pipeline/store/projection.py) takes back every unit and the
basis itself (attribute first, then its arrays), since every patch row is stored in it: the rerun refits the
basis, never reading a zero one, and rewrites all rows. Units finished by a chex version that kept no records
cannot be checked; they are listed as unverifiable.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import zarr

from pipeline.errors import StoreError
from pipeline.store.integrity import check_files, unit_files
from pipeline.store.ledger import Ledger
from pipeline.store.projection import ARRAYS, projection_problems, repair_command

log = logging.getLogger(__name__)


@dataclass
class VerifyReport:
    """The outcome of checking a store: unit names by state."""

    path: Path
    intact: list[str] = field(default_factory=list)
    damaged: dict[str, list[str]] = field(default_factory=dict)  # unit -> problems
    unverifiable: list[str] = field(default_factory=list)  # done before records were kept
    pending: list[str] = field(default_factory=list)  # planned, not done (not checked)
    projection: list[str] = field(default_factory=list)  # problems of a projected store's basis
    repair: str = "chex embed"  # the command whose rerun writes taken-back units again

    @property
    def ok(self) -> bool:
        return not self.damaged and not self.projection


def verify_store(path: str | Path, deep: bool = True, take_back: bool = True) -> VerifyReport:
    """Check every done unit's recorded files (sizes; sha256 too when `deep`) and the basis of a projected store.
    With `take_back`, damaged units become pending again (done marker moved to ledger/damaged/, their files
    deleted); a damaged basis takes back every unit and is removed."""
    path = Path(path)
    if not (path / "zarr.json").is_file() or not (path / "ledger").is_dir():
        raise StoreError(f"no feature store at {path}; run `chex embed` to create it")
    attrs = dict(zarr.open_group(path, mode="r").attrs)
    ledger = Ledger(path)
    report = VerifyReport(path, repair=repair_command(attrs))
    done = ledger.done_indices()
    units = ledger.units()
    problems_of: dict[int, list[str]] = {}
    for unit in units:
        files = ledger.done_record(unit.index).get("files") if unit.index in done else None
        if files:
            problems_of[unit.index] = check_files(path, files, deep=deep)
    # the basis: its own record, plus older stores' unit records that listed its files (under unit 0)
    report.projection = projection_problems(path, deep=deep) + [
        p for problems in problems_of.values() for p in problems if p.startswith("projection_")
    ]
    for unit in units:
        if unit.index not in done:
            report.pending.append(unit.name)
            continue
        if report.projection:
            problems = [f"its rows are stored in the damaged projection ({'; '.join(report.projection)})"]
        elif unit.index not in problems_of:
            report.unverifiable.append(unit.name)
            continue
        else:
            problems = problems_of[unit.index]
        if not problems:
            report.intact.append(unit.name)
            continue
        report.damaged[unit.name] = problems
        if take_back:
            log.warning("feature store %s: %s is damaged (%s)", path, unit.name, "; ".join(problems))
            ledger.mark_damaged(unit, problems)
            for file in unit_files(path, unit).values():
                if file is not None:
                    file.unlink(missing_ok=True)
    if report.projection and take_back:
        log.warning("feature store %s: its projection is damaged (%s)", path, "; ".join(report.projection))
        drop_projection(path)
    return report


def drop_projection(path: Path) -> None:
    """Remove a store's basis: the attribute first (a store without it has no basis yet), then its arrays."""
    group = zarr.open_group(path, mode="r+")
    group.attrs.pop("projection", None)
    for name in ARRAYS:
        shutil.rmtree(path / name, ignore_errors=True)
