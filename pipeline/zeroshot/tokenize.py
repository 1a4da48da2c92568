"""Prompt tokenizers of the CLIP families, built with the `tokenizers` package from the published vocabulary.

- OpenAI CLIP BPE (CheXzero): `bpe_simple_vocab_16e6.txt.gz`, read as openai/CLIP clip/simple_tokenizer.py
  reads it (the first 49152 - 256 - 2 merges; the vocabulary is the 256 byte characters, the same with `</w>`,
  the merged pairs, `<|startoftext|>`, `<|endoftext|>`), run as transformers' CLIP converter
  (convert_slow_tokenizer.py `CLIPConverter`) runs it: NFC, whitespace collapsed, lower case, CLIP's word
  pattern, byte-level characters, BPE with end-of-word suffix `</w>`. (SimpleTokenizer also runs `ftfy.fix_text`
  and unescapes HTML; that only changes mis-encoded text, which prompts are not.)
- A transformers CLIP tokenizer folder (PubMedCLIP): tokenizer.json, else vocab.json + merges.txt as above.
- A BERT WordPiece folder (BiomedCLIP's PubMedBERT): tokenizer.json, else vocab.txt (BERT normaliser, lower
  case per tokenizer_config.json `do_lower_case`, default on; `[CLS] ... [SEP]`).
Prompts are truncated to the model's context length keeping the closing special token (as open_clip's
tokenizers do) and padded to the longest prompt.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path

from pipeline.errors import CheckpointError

OPENAI_BPE = "bpe_simple_vocab_16e6.txt.gz"
SOT, EOT = "<|startoftext|>", "<|endoftext|>"
CLIP_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""
_OPENAI_MERGES = 49152 - 256 - 2


@dataclass
class PromptTokenizer:
    """A `tokenizers.Tokenizer` with the model's context length; `encode(prompts)` -> (ids, mask) tensors."""

    tokenizer: object  # tokenizers.Tokenizer
    context_length: int
    pad_id: int
    source: str = ""

    def __post_init__(self) -> None:
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(max_length=self.context_length)

    def encode(self, prompts: list[str]):
        import torch

        encoded = [e.ids for e in self.tokenizer.encode_batch(list(prompts))]
        width = max(len(ids) for ids in encoded)
        ids = torch.full((len(encoded), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(encoded), width), dtype=torch.bool)
        for row, tokens in enumerate(encoded):
            ids[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            mask[row, : len(tokens)] = True
        return ids, mask


def find_tokenizer_files(where: Path, names: tuple[tuple[str, ...], ...], family: str, hint: str) -> dict[str, Path]:
    """The first group of `names` whose files all sit in `where` (a folder, or a file whose name is one of them);
    CheckpointError naming every file looked for."""
    where = Path(where)
    folder, given = (where.parent, where.name) if where.is_file() else (where, None)
    for group in names:
        if given is not None and given not in group:
            continue
        if all((folder / name).is_file() for name in group):
            return {name: folder / name for name in group}
    wanted = " or ".join(" + ".join(group) for group in names)
    raise CheckpointError(f"no {family} tokenizer at {where}: looked for {wanted}. {hint}")


def openai_clip_bpe(path: Path, context_length: int) -> PromptTokenizer:
    """CheXzero's / OpenAI CLIP's tokenizer from bpe_simple_vocab_16e6.txt.gz."""
    try:
        with gzip.open(path, "rt", encoding="utf-8") as handle:
            lines = handle.read().split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"cannot read {path} as openai/CLIP's gzipped BPE merges file: {exc}") from None
    merges = [tuple(line.split()) for line in lines[1 : _OPENAI_MERGES + 1] if line.strip()]
    if any(len(m) != 2 for m in merges):
        raise CheckpointError(f"{path}: a merges line is not two symbols; expected openai/CLIP's BPE merges file")
    chars = list(_bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + [SOT, EOT]
    return _clip_bpe({token: i for i, token in enumerate(vocab)}, merges, context_length, pad_id=0, source=str(path))


def hf_clip_folder(files: dict[str, Path], context_length: int) -> PromptTokenizer:
    """A transformers CLIP tokenizer: tokenizer.json, else vocab.json + merges.txt."""
    if "tokenizer.json" in files:
        tok = _from_json(files["tokenizer.json"])
        eot = tok.token_to_id(EOT)
        if eot is None:
            raise CheckpointError(f"{files['tokenizer.json']}: no {EOT} token; expected a CLIP tokenizer")
        return PromptTokenizer(tok, context_length, pad_id=eot, source=str(files["tokenizer.json"]))
    try:
        vocab = json.loads(files["vocab.json"].read_text(encoding="utf-8"))
        lines = files["merges.txt"].read_text(encoding="utf-8").split("\n")
    except (OSError, ValueError) as exc:
        raise CheckpointError(
            f"cannot read the CLIP tokenizer files {sorted(map(str, files.values()))}: {exc}"
        ) from exc
    merges = [tuple(line.split()) for line in lines if line.strip() and not line.startswith("#version")]
    return _clip_bpe(vocab, merges, context_length, pad_id=vocab.get(EOT, 0), source=str(files["vocab.json"]))


def bert_folder(files: dict[str, Path], context_length: int) -> PromptTokenizer:
    """A BERT WordPiece tokenizer: tokenizer.json, else vocab.txt (+ tokenizer_config.json's do_lower_case)."""
    from tokenizers import Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import WordPiece

    if "tokenizer.json" in files:
        tok = _from_json(files["tokenizer.json"])
        pad = tok.token_to_id("[PAD]")
        source = str(files["tokenizer.json"])
        return PromptTokenizer(tok, context_length, pad_id=0 if pad is None else pad, source=source)
    vocab_file = files["vocab.txt"]
    words = vocab_file.read_text(encoding="utf-8").split("\n")  # one token a line, as transformers' load_vocab
    if words and words[-1] == "":
        words.pop()
    vocab = {w: i for i, w in enumerate(words)}
    missing = [t for t in ("[CLS]", "[SEP]", "[UNK]", "[PAD]") if t not in vocab]
    if missing:
        raise CheckpointError(f"{vocab_file}: no {missing} token; expected a BERT vocab.txt")
    config = vocab_file.parent / "tokenizer_config.json"
    lower = bool(json.loads(config.read_text()).get("do_lower_case", True)) if config.is_file() else True
    tok = Tokenizer(WordPiece(vocab, unk_token="[UNK]", continuing_subword_prefix="##", max_input_chars_per_word=100))
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, lowercase=lower)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    return PromptTokenizer(tok, context_length, pad_id=vocab["[PAD]"], source=str(vocab_file))


def _clip_bpe(vocab: dict[str, int], merges: list, context_length: int, pad_id: int, source: str) -> PromptTokenizer:
    from tokenizers import Regex, Tokenizer, normalizers, pre_tokenizers, processors
    from tokenizers.models import BPE

    missing = [t for t in (SOT, EOT) if t not in vocab]
    if missing:
        raise CheckpointError(f"{source}: no {missing} token; expected a CLIP BPE vocabulary")
    tok = Tokenizer(BPE(vocab, merges, continuing_subword_prefix="", end_of_word_suffix="</w>", fuse_unk=False))
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(CLIP_PATTERN), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.post_processor = processors.TemplateProcessing(
        single=f"{SOT} $A {EOT}", special_tokens=[(SOT, vocab[SOT]), (EOT, vocab[EOT])]
    )
    return PromptTokenizer(tok, context_length, pad_id=pad_id, source=source)


def _from_json(path: Path):
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(path))
    except Exception as exc:  # tokenizers raises its own Exception type for a malformed file
        raise CheckpointError(f"cannot read {path} as a tokenizers tokenizer.json: {exc}") from None


def _bytes_to_unicode() -> dict[int, str]:
    """openai/CLIP's (and GPT-2's) printable character for each byte."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))
