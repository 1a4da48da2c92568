"""Per backbone family: embed throughput vs the family's bare library forward, and store MB per image.

(a) Throughput: each family's release is built at full size (random init) with its original library where one is
installed (transformers for RAD-DINO / PubMedCLIP, open_clip for CheXzero / BiomedCLIP, timm for ConvNeXt, EVA-X's
timm Eva, ViTs), saved in its release layout and opened through chex's family (`open_backbone`). "bare" is that
library's own forward over the same batches, returning the same tokens (hidden states of the last L blocks through
the final norm: transformers `output_hidden_states`, open_clip / timm `forward_intermediates`, ConvNeXt
`forward_features`); "chex" is chex's embed loop (`Backbone.tokens` + float16 store writes, as `chex embed` runs it
after decoding). Same batch size, same input size (`--size`, default 224 px for every family so the run fits a
CPU; `--size 0` = each release's own size), fastest of `--repeats` interleaved runs.
(b) Store MB per image at each release's own input size, from the store layout (uncompressed: float16 tokens of
the last L blocks, L = 4, 3 for ConvNeXt's last stage), full and projected (`--rank` R = L·D/4, float16 and int8).

Run: python benchmarks/bench_backbones.py [--families eva-x,rad-dino] [--images 16 --batch-size 8 --size 224]
Prints figures and ratios; asserts nothing. On a shared machine timings are noisy (check `uptime`).

Measured on a quiet machine (2 CPU cores, load 0.2-1.9, 224 px, 8 images, batch 4, best of 3, 2026-12-02):
chex / bare 0.999 chex, 1.003 dinov2, 0.962 MAE, 0.927 timm-vit, 0.978 RAD-DINO, 0.972 EVA-X, 0.965 ConvNeXt, 0.949
CheXzero, 0.903 PubMedCLIP, 0.965 BiomedCLIP, 0.937 timm:vit_small_patch14_reg4_dinov2: every family >= 0.9x. (On
2 cores shared at load 4-15 the same ratios scattered from 0.54 to 1.50: quote quiet runs only.) Store MB
per image (fp16, uncompressed; projected R = L·D/4 fp16 / int8): CheXFound ViT-L/16-512 8.43 / 2.14 / 1.09;
RAD-DINO 518 px (37x37) 8.42 / 2.11 / 1.06; timm ViT-S/14-reg4 518 px 4.22 / 1.07 / 0.55; ViT-B/16-224 (MAE,
timm, EVA-X B, BiomedCLIP) 1.21 / 0.31 / 0.16; ViT-B/32-224 (CheXzero, PubMedCLIP) and ConvNeXt-B-224 (3 layers of
7x7 x 1024) 0.31 / 0.08 / 0.04.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (EVA-X's reference) and benchmarks/ from anywhere

from benchmarks.bench_embed import timed_embed
from pipeline.backbone.registry import open_backbone
from pipeline.store import StoreLayout, store_attrs

Bare = Callable[[torch.Tensor], object]


@dataclass
class Release:
    name: str  # what the release is, e.g. "RAD-DINO ViT-B/14 518 px"
    path: Path
    size: int  # the release's own input size
    bare: Callable[[int], Bare]  # input size -> the library's forward at that size
    layers: int = 4
    num_heads: int | None = None
    family: str | None = None


def _timm_intermediates(model, n: int) -> Bare:
    return lambda x: model.forward_intermediates(
        x, indices=n, norm=True, output_fmt="NLC", intermediates_only=True, return_prefix_tokens=True
    )


def _timm_at(model, size: int):
    if tuple(model.patch_embed.img_size) != (size, size):
        model.set_input_size(img_size=size)
    return model


def chex_vitl(root: Path) -> Release:
    from pipeline.backbone import build_backbone, preset
    from pipeline.backbone.checkpoint import save_checkpoint

    cfg = preset("vit_large_patch16_chexfound")
    model = build_backbone(cfg).eval()
    save_checkpoint(model, cfg, root / "chexfound")
    return Release("CheXFound ViT-L/16 reg4 512 px (chex folder)", root / "chexfound", cfg.img_size,
                   lambda s: _timm_intermediates(_timm_at(model, s), 4))  # fmt: skip


def dinov2_vitl(root: Path) -> Release:
    """The same network saved as a DINOv2 teacher checkpoint (`teacher.backbone.*`, `mlp.w12/w3`, CLS position)."""
    from pipeline.backbone import build_backbone, preset

    cfg = preset("vit_large_patch16_chexfound")
    model = build_backbone(cfg).eval()
    sd = {}
    for k, v in model.state_dict().items():
        k = k.replace(".mlp.fc1.", ".mlp.w12.").replace(".mlp.fc2.", ".mlp.w3.")
        if k == "reg_token":
            k = "register_tokens"
        if k == "pos_embed":
            v = torch.cat([torch.zeros_like(v[:, :1]), v], dim=1)
        sd[f"teacher.backbone.{k}"] = v
    torch.save({"teacher": sd}, root / "teacher_checkpoint.pth")
    return Release("CheXFound/DINOv2 teacher_checkpoint.pth ViT-L/16 reg4 512 px", root / "teacher_checkpoint.pth",
                   cfg.img_size, lambda s: _timm_intermediates(_timm_at(model, s), 4), num_heads=16)  # fmt: skip


def mae_vitb(root: Path) -> Release:
    import timm

    model = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0).eval()
    sd = dict(model.state_dict())
    sd |= {"mask_token": torch.zeros(1, 1, 512), "decoder_embed.weight": torch.zeros(512, 768),
           "decoder_pred.weight": torch.zeros(768, 512)}  # fmt: skip
    torch.save({"model": sd}, root / "mae_pretrain_vit_base.pth")
    return Release("MAE ViT-B/16 224 px (pretraining .pth)", root / "mae_pretrain_vit_base.pth", 224,
                   lambda s: _timm_intermediates(_timm_at(model, s), 4), num_heads=12)  # fmt: skip


def timm_vitb(root: Path) -> Release:
    import timm

    model = timm.create_model("vit_base_patch16_224", pretrained=False).eval()
    torch.save(model.state_dict(), root / "vit_base.pth")
    return Release("timm vit_base_patch16_224 state dict", root / "vit_base.pth", 224,
                   lambda s: _timm_intermediates(_timm_at(model, s), 4), num_heads=12)  # fmt: skip


def rad_dino(root: Path) -> Release:
    import transformers

    cfg = transformers.Dinov2Config(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, patch_size=14,
                                    image_size=518)  # fmt: skip
    model = transformers.Dinov2Model(cfg).eval()
    model.save_pretrained(root / "rad-dino")
    processor = transformers.BitImageProcessor(
        size={"shortest_edge": 518}, crop_size={"height": 518, "width": 518}, image_mean=[0.5307] * 3,
        image_std=[0.2583] * 3,
    )  # fmt: skip
    processor.save_pretrained(root / "rad-dino")

    def bare(_size: int) -> Bare:
        def run(x):
            hidden = model(pixel_values=x, output_hidden_states=True).hidden_states[-4:]
            return [model.layernorm(h) for h in hidden]

        return run

    return Release("RAD-DINO ViT-B/14 518 px (transformers folder)", root / "rad-dino", 518, bare)


def eva_x_base(root: Path) -> Release:
    from tests.pipeline.backbone.eva_x_reference import EvaXMIM

    ref = EvaXMIM(224, 16, 768, 12, 12, subln=True, predict_dim=1024).eval()
    path = root / "eva_x_base_patch16_merged520k_mim.pt"
    torch.save({"model": ref.state_dict(), "acc": np.float64(0.0)}, path)
    del ref
    held = {}

    def bare(size: int) -> Bare:  # timm Eva as EVA-X's eva_x.py builds it: the library EVA-X itself uses
        model = held.setdefault(size, open_backbone(path, image_size=size).model)
        return lambda x: model.forward_intermediates(
            x, indices=4, norm=True, output_fmt="NLC", intermediates_only=True, return_prefix_tokens=True
        )

    return Release("EVA-X B/16 224 px (MIM .pt)", path, 224, bare)


def convnext_base(root: Path) -> Release:
    import timm
    from timm.models import save_for_hf

    model = timm.create_model("convnext_base.fb_in22k", pretrained=False).eval()
    save_for_hf(model, str(root / "convnext"), safe_serialization=True)
    return Release("ConvNeXt-B fb_in22k 224 px (timm save_for_hf)", root / "convnext", 224,
                   lambda _s: model.forward_features, layers=3)  # fmt: skip


def _openai_vitb32():
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    return CLIP(
        embed_dim=512, vision_cfg=CLIPVisionCfg(layers=12, width=768, patch_size=32, image_size=224),
        text_cfg=CLIPTextCfg(context_length=77, vocab_size=49408, width=512, heads=8, layers=12), quick_gelu=True,
    ).eval()  # fmt: skip


def chexzero(root: Path) -> Release:
    model = _openai_vitb32()
    sd = {k: (v.half() if v.ndim >= 2 and "embedding" not in k else v) for k, v in model.state_dict().items()}
    torch.save(sd, root / "best_64_5e-05_original_22000_0.864.pt")
    model.load_state_dict({k: v.float() for k, v in sd.items()})
    visual = model.visual

    def bare(size: int) -> Bare:
        if size != 224:
            raise SystemExit("chexzero: open_clip's OpenAI-CLIP tower has a fixed input size (224 px)")
        return lambda x: visual.forward_intermediates(
            x, indices=4, normalize_intermediates=True, intermediates_only=True, output_fmt="NLC",
            output_extra_tokens=True,
        )  # fmt: skip

    return Release("CheXzero ViT-B/32 224 px (OpenAI-CLIP .pt)", root / "best_64_5e-05_original_22000_0.864.pt", 224,
                   bare, num_heads=12)  # fmt: skip


def pubmedclip(root: Path) -> Release:
    import transformers

    cfg = transformers.CLIPConfig(
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                           image_size=224, patch_size=32),
    )  # fmt: skip
    model = transformers.CLIPModel(cfg).eval()
    model.save_pretrained(root / "pubmed-clip")
    transformers.CLIPImageProcessor().save_pretrained(root / "pubmed-clip")
    vision = model.vision_model

    def bare(size: int) -> Bare:
        def run(x):
            out = vision(pixel_values=x, output_hidden_states=True, interpolate_pos_encoding=size != 224)
            return [vision.post_layernorm(h) for h in out.hidden_states[-4:]]

        return run

    return Release("PubMedCLIP ViT-B/32 224 px (transformers CLIPModel folder)", root / "pubmed-clip", 224, bare)


def biomedclip(root: Path) -> Release:
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg
    from open_clip.push_to_hf_hub import save_config_for_hf

    vision = dict(timm_model_name="vit_base_patch16_224", timm_model_pretrained=False, timm_pool="",
                  timm_proj="linear", image_size=224)  # fmt: skip
    text = dict(context_length=16, vocab_size=100, width=32, heads=2, layers=1)  # the text tower is set aside
    model = CLIP(embed_dim=512, vision_cfg=CLIPVisionCfg(**vision), text_cfg=CLIPTextCfg(**text)).eval()
    model.visual.image_mean, model.visual.image_std = OPENAI_DATASET_MEAN, OPENAI_DATASET_STD  # BiomedCLIP's
    folder = root / "biomedclip"
    folder.mkdir()
    torch.save(model.state_dict(), folder / "open_clip_pytorch_model.bin")
    config = {"embed_dim": 512, "vision_cfg": vision, "text_cfg": text}
    save_config_for_hf(model, folder / "open_clip_config.json", config)
    trunk = model.visual.trunk
    return Release("BiomedCLIP ViT-B/16 224 px (open_clip hf-hub folder)", folder, 224,
                   lambda s: _timm_intermediates(_timm_at(trunk, s), 4))  # fmt: skip


def timm_named(root: Path) -> Release:
    import timm

    name = "vit_small_patch14_reg4_dinov2"
    model = timm.create_model(name, pretrained=False, num_classes=0).eval()
    torch.save(model.state_dict(), root / f"{name}.pth")
    return Release(f"timm:{name} 518 px (state dict)", root / f"{name}.pth", 518,
                   lambda s: _timm_intermediates(_timm_at(model, s), 4), family=f"timm:{name}")  # fmt: skip


FAMILIES = {
    "chex": chex_vitl, "dinov2": dinov2_vitl, "mae": mae_vitb, "timm-vit": timm_vitb, "rad-dino": rad_dino,
    "eva-x": eva_x_base, "convnext": convnext_base, "chexzero": chexzero, "pubmedclip": pubmedclip,
    "biomedclip": biomedclip, "timm:NAME": timm_named,
}  # fmt: skip


def bare_loop(fn: Bare, batches) -> float:
    start = time.perf_counter()
    with torch.inference_mode():
        for x in batches:
            fn(x)
    return time.perf_counter() - start


def chex_loop(backbone, batches, layers: int, store: Path) -> float:
    layout = StoreLayout(layers, backbone.dim, backbone.n_patches, backbone.n_registers, "float16",
                         patch_grid=backbone.grid)  # fmt: skip
    attrs = store_attrs("bench", backbone.config, "random", backbone.sha256, list(range(layers)), "float16", {})
    return timed_embed(backbone, batches, layout, attrs, store)


def store_mb(backbone, layers: int) -> dict[str, float]:
    """Uncompressed MB per image: full float16 store, projected (R = L·D/4) float16 and int8."""
    rank = layers * backbone.dim // 4
    common = dict(n_layers=layers, dim=backbone.dim, n_patches=backbone.n_patches, n_registers=backbone.n_registers,
                  patch_grid=backbone.grid)  # fmt: skip
    return {
        "full": StoreLayout(**common).bytes_per_image / 1e6,
        "proj": StoreLayout(**common, rank=rank).bytes_per_image / 1e6,
        "proj_int8": StoreLayout(**common, rank=rank, dtype="int8").bytes_per_image / 1e6,
        "rank": rank,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", default=",".join(FAMILIES))
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--size", type=int, default=224, help="throughput input size (0: each release's own)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    torch.manual_seed(0)
    print(f"{torch.get_num_threads()} threads; {args.images} images, batch {args.batch_size}, best of {args.repeats}")
    header = (f"{'family':<11} {'release':<56} {'grid':>7} {'D':>5} {'L':>2} {'px':>4} {'bare':>7} {'chex':>7} "
              f"{'ratio':>6} | {'MB full':>8} {'MB proj':>8} {'MB p-i8':>8} {'R':>5}")  # fmt: skip
    rows = []
    for name in args.families.split(","):
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            release = FAMILIES[name](root)
            # (b) at the release's own size
            at_release = open_backbone(release.path, num_heads=release.num_heads, family=release.family)
            mb = store_mb(at_release, release.layers)
            grid, dim = at_release.grid, at_release.dim
            del at_release
            # (a) at the throughput size
            size = args.size or release.size
            backbone = open_backbone(release.path, image_size=size, num_heads=release.num_heads, family=release.family)
            images = torch.randn(args.images, 3, size, size)
            batches = list(images.split(args.batch_size))
            bare_fn = release.bare(size)
            bare_loop(bare_fn, batches[:1])  # warm-up
            chex_loop(backbone, batches[:1], release.layers, root / "warm")
            bare, chex = [], []
            for r in range(args.repeats):  # interleaved: both see the same noise
                bare.append(bare_loop(bare_fn, batches))
                chex.append(chex_loop(backbone, batches, release.layers, root / f"store-{r}"))
            b, c = args.images / min(bare), args.images / min(chex)
            row = dict(family=name, release=release.name, grid=list(grid), dim=dim, layers=release.layers,
                       size=size, bare_img_s=b, chex_img_s=c, ratio=c / b, **mb)  # fmt: skip
            rows.append(row)
            if len(rows) == 1:
                print(header)
            print(f"{name:<11} {release.name[:56]:<56} {f'{grid[0]}x{grid[1]}':>7} {dim:>5} {release.layers:>2} "
                  f"{size:>4} {b:>7.2f} {c:>7.2f} {c / b:>6.3f} | {mb['full']:>8.3f} {mb['proj']:>8.3f} "
                  f"{mb['proj_int8']:>8.3f} {mb['rank']:>5}", flush=True)  # fmt: skip
    print("bare / chex: images per second at `px` (bare: the library's forward, same batches; chex: Backbone.tokens "
          "+ float16 store writes); MB: uncompressed store bytes per image at the release's own size "
          "(grid shown); proj: patch tokens projected on R = L·D/4 directions, CLS full")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
