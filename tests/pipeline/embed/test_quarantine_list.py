"""The store's quarantine.csv: every unreadable image with its reason, safe to open in a spreadsheet."""

from __future__ import annotations

import csv

from pipeline.embed.stage import write_quarantine
from pipeline.store.ledger import Ledger, Unit


def test_quarantine_csv_lists_each_image_and_runs_no_formula(tmp_path):
    ledger = Ledger(tmp_path / "store")
    ledger.ensure()
    unit = Unit(0, 0, ["=HYPERLINK(1)", "ok"], [0, 0])
    ledger.add_unit(unit)
    ledger.quarantine(unit, "=HYPERLINK(1)", "/data/=HYPERLINK(1).png", "cannot identify image file")
    ledger.quarantine(unit, "ok", "/data/a,b.png", "truncated")
    target = write_quarantine(ledger, tmp_path / "store")
    with open(target, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["image_id"] for r in rows] == ["'=HYPERLINK(1)", "ok"]
    assert rows[0]["path"] == "/data/=HYPERLINK(1).png" and rows[1]["path"] == "/data/a,b.png"
    assert all(r["unit"] == "unit-000000" for r in rows)
