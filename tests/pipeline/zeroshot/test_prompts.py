"""Zero-shot prompts: CheXzero's default pair per finding, a YAML/JSON file overriding findings, and errors
that name the file and the entry."""

from __future__ import annotations

import pytest

from pipeline.errors import ConfigError
from pipeline.zeroshot.prompts import FindingPrompts, finding_prompts, prompts_digest, read_prompt_file


def test_defaults_are_chexzeros_pair_and_survival_endpoints_are_left_out():
    prompts, left_out = finding_prompts(["Pleural_Effusion", "Cardiomegaly", "death_cvd_12y"], {"death_cvd_12y"})
    assert prompts["Pleural_Effusion"] == FindingPrompts(("Pleural Effusion",), ("no Pleural Effusion",))
    assert list(prompts) == ["Pleural_Effusion", "Cardiomegaly"] and set(left_out) == {"death_cvd_12y"}


def test_a_file_overrides_named_findings_in_either_form(tmp_path):
    yaml_file = tmp_path / "p.yaml"
    yaml_file.write_text("Cardiomegaly:\n  positive: [enlarged heart, cardiomegaly]\n  negative: normal heart size\n")
    json_file = tmp_path / "p.json"
    json_file.write_text('{"Cardiomegaly": [["enlarged heart", "cardiomegaly"], ["normal heart size"]]}')
    for path in (yaml_file, json_file):
        prompts, _ = finding_prompts(["Cardiomegaly", "Edema"], set(), path)
        assert prompts["Cardiomegaly"] == FindingPrompts(("enlarged heart", "cardiomegaly"), ("normal heart size",))
        assert prompts["Edema"] == FindingPrompts(("Edema",), ("no Edema",))
    assert prompts_digest(read_prompt_file(yaml_file)) == prompts_digest(read_prompt_file(json_file))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Cardiomegaly: [only one side]\n", "Cardiomegaly"),
        ("Cardiomegaly: {positive: [], negative: [x]}\n", "non-empty"),
        ("- a list\n", "mapping"),
        ("Cardiomegaly: [[a], [b]\n", "cannot read"),
    ],
)
def test_malformed_files_name_the_problem(tmp_path, text, expected):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected) as info:
        read_prompt_file(path)
    assert str(path) in str(info.value)


def test_an_unknown_finding_lists_the_outputs(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("Cardiomegally: [[a], [b]]\n")
    with pytest.raises(ConfigError, match=r"Cardiomegally.*Cardiomegaly"):
        finding_prompts(["Cardiomegaly"], set(), path)
