"""`chex store verify`: check every finished unit of a store against what its done marker recorded.

A damaged unit (a file missing, of another size, or, in the deep check, with another sha256) loses its done
marker (kept under `ledger/damaged/` with the problems) and its files, so its rows are hidden from readers and
the next `chex embed` of the same inputs embeds exactly those units again. Units finished by a chex version
that kept no records cannot be checked; they are listed as unverifiable.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import StoreError
from pipeline.store.integrity import check_files, unit_files
from pipeline.store.ledger import Ledger

log = logging.getLogger(__name__)


@dataclass
class VerifyReport:
    """The outcome of checking a store: unit names by state."""

    path: Path
    intact: list[str] = field(default_factory=list)
    damaged: dict[str, list[str]] = field(default_factory=dict)  # unit -> problems
    unverifiable: list[str] = field(default_factory=list)  # done before records were kept
    pending: list[str] = field(default_factory=list)  # planned, not done (not checked)

    @property
    def ok(self) -> bool:
        return not self.damaged


def verify_store(path: str | Path, deep: bool = True, take_back: bool = True) -> VerifyReport:
    """Check every done unit's recorded files (sizes; sha256 too when `deep`). With `take_back`, damaged units
    become pending again (done marker moved to ledger/damaged/, their files deleted)."""
    path = Path(path)
    if not (path / "zarr.json").is_file() or not (path / "ledger").is_dir():
        raise StoreError(f"no feature store at {path}; run `chex embed` to create it")
    ledger = Ledger(path)
    report = VerifyReport(path)
    done = ledger.done_indices()
    for unit in ledger.units():
        if unit.index not in done:
            report.pending.append(unit.name)
            continue
        files = ledger.done_record(unit.index).get("files")
        if not files:
            report.unverifiable.append(unit.name)
            continue
        problems = check_files(path, files, deep=deep)
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
    return report
