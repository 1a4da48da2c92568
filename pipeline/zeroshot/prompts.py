"""Zero-shot prompts: per finding, positive and negative prompts whose similarities are soft-maxed.

Default (CheXzero's `run_softmax_eval` with its pair template ("{}", "no {}")): for each of the data set card's
finding columns, positive "<finding>" and negative "no <finding>", the column name in words (underscores as
spaces). Survival endpoints have no default (name them in a prompt file to score them).

A prompt file (YAML or JSON) overrides findings by name:

    Pleural Effusion:
      positive: [pleural effusion, fluid in the pleural space]
      negative: [no pleural effusion]
    Cardiomegaly: [[cardiomegaly], [no cardiomegaly, normal heart size]]   # [positives, negatives]

Several prompts of one side are averaged as unit embeddings (openai/CLIP's `zeroshot_classifier`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import ConfigError

PAIR_TEMPLATE = ("{}", "no {}")  # rajpurkarlab/CheXzero zero_shot.py, cxr_pair_template


@dataclass(frozen=True)
class FindingPrompts:
    positive: tuple[str, ...]
    negative: tuple[str, ...]

    def to_dict(self) -> dict[str, list[str]]:
        return {"positive": list(self.positive), "negative": list(self.negative)}


def default_prompts(finding: str) -> FindingPrompts:
    words = " ".join(finding.replace("_", " ").split())
    return FindingPrompts((PAIR_TEMPLATE[0].format(words),), (PAIR_TEMPLATE[1].format(words),))


def finding_prompts(outputs: list[str], survival: set[str], path: str | Path | None = None):
    """({output: FindingPrompts} in `outputs` order, {output: why it has none}); a prompt file's findings
    replace the defaults. ConfigError naming the file and the entry for a malformed file or an unknown finding."""
    given = read_prompt_file(path) if path is not None else {}
    unknown = sorted(set(given) - set(outputs))
    if unknown:
        raise ConfigError(f"{path}: findings {unknown} are not outputs of this data set; its outputs: {outputs}")
    prompts, left_out = {}, {}
    for output in outputs:
        if output in given:
            prompts[output] = given[output]
        elif output in survival:
            left_out[output] = "a survival endpoint has no default prompt; name it in --prompts to score it"
        else:
            prompts[output] = default_prompts(output)
    if not prompts:
        raise ConfigError(f"no finding to score zero-shot among {outputs}; give prompts with --prompts FILE")
    return prompts, left_out


def read_prompt_file(path: str | Path) -> dict[str, FindingPrompts]:
    """{finding: FindingPrompts} from a YAML/JSON prompt file (format in the module docstring)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"--prompts {path}: no such file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"--prompts {path}: cannot read it as YAML or JSON ({exc})") from None
    if not isinstance(data, dict) or not data:
        raise ConfigError(f"--prompts {path}: expected a mapping finding -> {{positive: [...], negative: [...]}}")
    return {str(finding): _entry(path, str(finding), value) for finding, value in data.items()}


def prompts_digest(prompts: dict[str, FindingPrompts]) -> str:
    text = json.dumps({k: v.to_dict() for k, v in prompts.items()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def _entry(path: Path, finding: str, value: object) -> FindingPrompts:
    if isinstance(value, dict) and set(value) == {"positive", "negative"}:
        sides = (value["positive"], value["negative"])
    elif isinstance(value, list) and len(value) == 2:
        sides = (value[0], value[1])
    else:
        raise ConfigError(
            f"--prompts {path}: entry {finding!r} must be {{positive: [...], negative: [...]}} or "
            "[[positives], [negatives]]"
        )
    out = []
    for name, side in zip(("positive", "negative"), sides, strict=True):
        side = [side] if isinstance(side, str) else side
        if not isinstance(side, list) or not side or not all(isinstance(p, str) and p.strip() for p in side):
            raise ConfigError(f"--prompts {path}: {finding!r} {name} prompts must be a non-empty list of text")
        out.append(tuple(side))
    return FindingPrompts(*out)
