"""Tiny random-init CLIP models built by the original libraries and saved in each release's layout, with the
tokenizer files the release ships: CheXzero (open_clip's CLIP = openai/CLIP's modules, a flat state dict +
openai/CLIP's real BPE vocabulary), BiomedCLIP (an open_clip hf-hub folder whose text tower is a transformers
BERT with a small WordPiece vocab.txt) and PubMedCLIP (a transformers CLIPModel folder + CLIPTokenizer files).
Each builder returns (the reference model in eval mode, its tokenizer as the library makes it, the path)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

PROMPTS = [
    "pleural effusion",
    "no pleural effusion",
    "Cardiomegaly",
    "no  enlarged cardiomediastinum.",
    "pneumothorax, left apical",
    "no lung opacity",
    " ".join(["left pleural effusion with cardiomegaly and no pneumothorax"] * 12),  # past every context length
]
BIOMEDCLIP_MEAN, BIOMEDCLIP_STD = (0.5, 0.45, 0.4), (0.25, 0.26, 0.27)
BERT_WORDS = (  # noqa: SIM905 (a vocab.txt, one token a line)
    "[PAD] [UNK] [CLS] [SEP] [MASK] no pleural effusion card ##io ##me ##galy en ##larged cardio ##media ##stin ##um "
    "pneumo ##thorax left apical lung op ##acity , . a b c d e f g h i j k l m n o p q r s t u v w x y z ##a ##b ##c "
    "##d ##e ##f ##g ##h ##i ##j ##k ##l ##m ##n ##o ##p ##q ##r ##s ##t ##u ##v ##w ##x ##y ##z"
).split()


def _jitter(model: torch.nn.Module, scale: float = 0.3) -> None:
    """Move norms and embeddings away from their init (ones/zeros), so a mixed-up key shows in the outputs."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln" in name or "norm" in name.lower() or "embedding" in name or "proj" in name:
                p.add_(torch.randn_like(p) * scale)


def chexzero(folder: Path):
    """A CheXzero-layout .pt (matrices fp16 as openai/CLIP's convert_weights) + bpe_simple_vocab_16e6.txt.gz."""
    import open_clip
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(0)
    model = CLIP(
        embed_dim=16,
        vision_cfg=CLIPVisionCfg(layers=2, width=32, head_width=16, patch_size=8, image_size=32),
        text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=128, heads=2, layers=2),
        quick_gelu=True,
    ).eval()
    _jitter(model)
    folder.mkdir(parents=True)
    path = folder / "best_64_5e-05_original_22000_0.864.pt"
    sd = {k: (v.half() if v.ndim >= 2 and "embedding" not in k else v) for k, v in model.state_dict().items()}
    torch.save(sd, path)
    model.load_state_dict({k: v.float() for k, v in sd.items()})
    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    shutil.copy(bpe, folder / bpe.name)
    return model, open_clip.tokenizer.SimpleTokenizer(str(bpe)), path


def biomedclip(folder: Path):
    """An open_clip hf-hub folder: timm ViT image tower, BERT text tower (cls_last_hidden_state pooler, mlp
    projection, as BiomedCLIP), open_clip_config.json, and the BERT tokenizer's files."""
    import transformers
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg, CustomTextCLIP
    from open_clip.push_to_hf_hub import save_config_for_hf
    from open_clip.tokenizer import HFTokenizer

    folder.mkdir(parents=True)
    bert = folder.parent / f"{folder.name}-bert-config"
    bert.mkdir()
    (bert / "vocab.txt").write_text("\n".join(BERT_WORDS) + "\n")
    transformers.BertConfig(
        vocab_size=len(BERT_WORDS), hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=96,
        max_position_embeddings=64,
    ).save_pretrained(bert)  # fmt: skip
    tokenizer = transformers.BertTokenizer(vocab=str(bert / "vocab.txt"), do_lower_case=True)
    tokenizer.save_pretrained(folder)
    shutil.copy(bert / "vocab.txt", folder / "vocab.txt")  # the release ships it beside tokenizer.json
    torch.manual_seed(0)
    vision = dict(timm_model_name="vit_tiny_patch16_224", timm_model_pretrained=False, timm_pool="", timm_proj="linear",
                  image_size=224)  # fmt: skip
    text = dict(hf_model_name=str(bert), hf_tokenizer_name=str(folder), hf_proj_type="mlp", context_length=40,
                hf_pooler_type="cls_last_hidden_state_pooler", hf_model_pretrained=False)  # fmt: skip
    model = CustomTextCLIP(embed_dim=16, vision_cfg=CLIPVisionCfg(**vision), text_cfg=CLIPTextCfg(**text)).eval()
    _jitter(model)
    model.visual.image_mean, model.visual.image_std = BIOMEDCLIP_MEAN, BIOMEDCLIP_STD
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    save_config_for_hf(
        model, folder / "open_clip_config.json", {"embed_dim": 16, "vision_cfg": vision, "text_cfg": text}
    )
    return model, HFTokenizer(str(folder), context_length=40), folder


def pubmedclip(folder: Path):
    """A transformers CLIPModel folder (save_pretrained) with CLIPImageProcessor and CLIPTokenizer files, the
    tokenizer's vocabulary openai/CLIP's (vocab.json + merges.txt written from it)."""
    import open_clip
    import transformers

    bpe = open_clip.tokenizer.SimpleTokenizer()
    words = folder.parent / f"{folder.name}-vocab"
    words.mkdir(parents=True)
    names = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}  # open_clip renamed openai's
    (words / "vocab.json").write_text(json.dumps({names.get(k, k): v for k, v in bpe.encoder.items()}))
    merges = sorted(bpe.bpe_ranks, key=bpe.bpe_ranks.get)
    (words / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n")
    torch.manual_seed(0)
    cfg = transformers.CLIPConfig(
        text_config=dict(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                         vocab_size=len(bpe.encoder), max_position_embeddings=77, eos_token_id=49407),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=32, patch_size=8),
        projection_dim=8,
    )  # fmt: skip
    model = transformers.CLIPModel(cfg).eval()
    _jitter(model)
    model.save_pretrained(folder)
    transformers.CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        folder
    )
    tokenizer = transformers.CLIPTokenizer(str(words / "vocab.json"), str(words / "merges.txt"))
    tokenizer.save_pretrained(folder)
    for name in ("vocab.json", "merges.txt"):  # the release ships them beside tokenizer.json
        shutil.copy(words / name, folder / name)
    return model, tokenizer, folder
