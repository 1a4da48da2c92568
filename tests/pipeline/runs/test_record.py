"""The run.json contract: the writer (RunRecord.to_dict), the reader (RunRecord.from_dict), the test fabricator
and the report's provenance all go through one dataclass, so a field renamed on one side only fails here."""

from __future__ import annotations

import dataclasses
import json

import pytest

from pipeline.report.collect import Collection, Run
from pipeline.report.index import provenance
from pipeline.runs import RECORD_VERSION, RunFolder, RunRecord, RunRecordError, read_record, write_record
from pipeline.workspace import Workspace
from tests.pipeline.report.fabricate import fabricated_record


def _record(tmp_path) -> RunRecord:
    record = fabricated_record("jsrt", "vits-a", "glori", 1.0, ["Nodule"], 25, tmp_path / "features")
    return dataclasses.replace(record, test_macro_auroc=0.75)  # NaN != NaN would spoil the equality below


def test_record_round_trips_and_its_json_keys_are_the_dataclass_fields(tmp_path):
    record = _record(tmp_path)
    write_record(record, tmp_path)
    assert read_record(tmp_path) == record
    keys = set(json.loads((tmp_path / "run.json").read_text()))
    assert keys == {f.name for f in dataclasses.fields(RunRecord)}
    assert json.loads((tmp_path / "run.json").read_text())["version"] == RECORD_VERSION


def test_a_field_renamed_on_one_side_only_is_refused(tmp_path):
    data = _record(tmp_path).to_dict()
    data["best_lr"] = data.pop("chosen_lr")  # the writer renamed a field the reader still expects
    with pytest.raises(RunRecordError, match=r"missing fields \['chosen_lr'\], unknown fields \['best_lr'\]"):
        RunRecord.from_dict(data)
    (tmp_path / "run.json").write_text(json.dumps({**_record(tmp_path).to_dict(), "version": RECORD_VERSION + 1}))
    with pytest.raises(RunRecordError, match="rerun the probe"):
        read_record(tmp_path)
    assert read_record(tmp_path / "nowhere") is None


def test_the_report_reads_provenance_through_the_record(tmp_path):
    record = _record(tmp_path)
    folder = RunFolder.of(Workspace(tmp_path), "jsrt", "vits-a", "glori", 1.0).root
    run = Run("jsrt", "vits-a", "glori", 1.0, folder, results=None, record=record)  # type: ignore[arg-type]
    prov = provenance(Collection([run], {}, set(), []), [])
    assert prov["backbones"]["vits-a"] == {
        "family": [],  # the record's store attributes name none
        "checkpoint_sha256": [record.checkpoint_sha256],
        "checkpoint": [record.checkpoint],
        "store": [record.store_path],
    }
    (row,) = prov["runs"]
    assert (row["seed"], row["lr"]) == (record.seed, record.chosen_lr)
    assert json.loads(row["head_config"]) == record.head_config
