"""Does the probe protocol's choice flip with the seed? lr flips and seed-to-seed SD of test AUROC per selection rule.

For each seed: one sweep (every lr side by side on train, scored on val: `ProbeStage.sweep`, the protocol's own
code), then the lr each rule chooses from that same sweep, then the protocol's refit (`ProbeStage.refit`, seed + 1)
of every distinct chosen lr, cached per (seed, lr), and its test macro AUROC. Rules:

  auroc-any  the rule before issue 25: best val macro AUROC, diverging lrs included
  auroc      best val macro AUROC among the lrs whose training did not diverge
  one-se     the smallest non-diverged lr within one DeLong SE of the best val AUROC
  loss       the lowest val loss among the non-diverged lrs

Per rule it prints the chosen lr per seed, the number of seeds whose lr differs from the rule's most common lr
("flips"), the number of distinct lrs, the mean and SD (ddof 1) of test macro AUROC over seeds, and the SD a
`--seeds N` mean would have if the seeds were independent (SD / sqrt(N): arithmetic, not measured).
`--standardize` adds the same study with standardised inputs; `--compare-store NAME` reruns the chosen rule on
another store (e.g. the projected R = L·D/4 one) and prints the paired per-seed difference.

    PYTHONPATH=. python benchmarks/bench_protocol_seeds.py --workspace WS --dataset shenzhen --head glori \\
        --seeds 10 [--rules auroc-any,auroc,one-se,loss] [--standardize] [--compare-store demo-r128]

`--save DIR` keeps each refit's test probabilities; `--blocks N` then prints what `--seeds N` gives over
disjoint blocks of N seeds: the mean of their AUROCs (what chex reports) and the AUROC of their averaged
probabilities (`chex stats --combine ensemble`). `--fixed-lr LR --compare-store NAME` skips the sweep: per seed
the refit at LR on both stores, paired, and (with --save) the two stores' seed ensembles.

Figures, 2026-12-02 (this script's output), 2 cores shared with ~6 engineers
(load 9-15), one torch thread, the small demo's protocol (9 lrs, 25 epochs, batch 32, GLoRI 64/128) on its fully
pretrained store (480 steps), Shenzhen (266 train / 57 val / 77 test, manifest splits); 30-120 s per seed:
  GLoRI, seeds 0-24 (seeds 0-9 in brackets), divergence never flagged:
    auroc   flips 9 of 25 [4 of 10], test AUROC 0.941, seed SD 0.048 [0.072]; --seeds 5 over 5 blocks: mean SD
            0.023, ensemble 0.978 SD 0.0045
    one-se  flips 11 [3], 0.936, SD 0.058 [0.069]; 5-seed mean SD 0.025, ensemble 0.975 SD 0.0064
    loss    flips 14 [6], 0.934, SD 0.059 [0.084]; 5-seed mean SD 0.037, ensemble 0.975 SD 0.0065
    The refit at lr 5e-3 collapses in some seeds (test 0.735, 0.766) though val chose it; at a fixed lr 1e-3 the
    seed SD is still 0.031 (10 seeds). No rule meets <= 1 flip or SD <= 0.01; the 5-seed ensemble meets the SD.
  R = L·D/4 = 128 (`chex store compress demo-dino --rank 128`, variance kept 0.9991), paired on the same seeds:
    Shenzhen, protocol, seeds 0-24: flips auroc 10, one-se 9, loss 12 of 25; single-seed diffs -0.14..+0.24 (lr
      flips); 5-seed ensembles r128 - full: auroc +0.0014 -0.0047 -0.0007 -0.0007 -0.0149 (mean -0.0039),
      one-se mean +0.0015 (max 0.0061), loss +0.0019 (max 0.0142); 25-seed ensembles 0.9777 vs 0.9851 (auroc,
      -0.0074), one-se -0.0020, loss -0.0047. Fixed lr 1e-3: single seeds mean +0.011 (SD 0.026), 10-seed
      ensembles 0.9784 vs 0.9811 (-0.0027; 5-seed blocks -0.0034, -0.0020). Not shown within 0.005 on Shenzhen.
    CheXpert (10 epochs), fixed lr 5e-3 (the demo run's choice), seeds 0-9: mean +0.0000, max |diff| 0.0007;
      ensemble +0.0007.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

RULES = ("auroc-any", "auroc", "one-se", "loss")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", help="the workspace with the store (not needed with --from-logs)")
    parser.add_argument("--from-logs", default=None, help="summarise the per-seed lines of these logs (comma-sep.)")
    parser.add_argument("--dataset", default="shenzhen")
    parser.add_argument("--head", default="glori")
    parser.add_argument("--backbone", default=None, help="feature store (default: the workspace's only/default one)")
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--rules", default=",".join(RULES))
    parser.add_argument("--standardize", action="store_true", help="also: the study with --standardize")
    parser.add_argument("--compare-store", default=None, help="also: the --rule's test AUROC on this store")
    parser.add_argument("--rule", default="one-se", help="the rule of --compare-store")
    parser.add_argument("--save", default=None, help="folder: each seed's test probabilities per chosen lr (npz)")
    parser.add_argument("--blocks", type=int, default=0, help="also: disjoint blocks of N seeds, as --seeds N")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--from-saved", action="store_true", help="--fixed-lr: compare the --save runs, no training")
    parser.add_argument("--show-sweep", action="store_true", help="print each seed's val AUROC and loss per lr")
    parser.add_argument("--fixed-lr", type=float, default=None,
                        help="only: refit at this lr per seed on the store and on --compare-store, paired")  # fmt: skip
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    rules = args.rules.split(",")
    if args.from_logs:  # seeds run in several processes (a shared machine): one summary over all their lines
        summarise(from_logs(args.from_logs.split(","), rules), rules, f"raw inputs, from {args.from_logs}")
        if args.blocks and args.save:
            blocks(Path(args.save), rules, args.blocks, args.backbone)
        return
    print(f"[protocol seeds] {args.dataset} / {args.head}, seeds {args.first_seed}..{args.first_seed + args.seeds - 1}"
          f", load {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    if args.fixed_lr is not None:
        if args.from_saved:  # the fixed-lr runs' saved probabilities, compared as ensembles
            stores = [args.backbone, args.compare_store]
            seeds = list(range(args.first_seed, args.first_seed + args.seeds))
            ensemble_paired(Path(args.save), [f"{n}-fixed" for n in stores], args.fixed_lr, seeds)
            return
        fixed_lr(args, [args.backbone, args.compare_store] if args.compare_store else [args.backbone], args.fixed_lr)
        return
    base = study(args, args.backbone, rules, standardize=False)
    summarise(base, rules, "raw inputs (the paper's protocol)")
    if args.blocks and args.save:
        blocks(Path(args.save), rules, args.blocks, args.backbone)
    if args.standardize:
        std = study(args, args.backbone, rules, standardize=True)
        summarise(std, rules, "standardised inputs (--standardize)")
        paired(base, std, rules, "standardised - raw")
    if args.compare_store:
        other = study(args, args.compare_store, [args.rule], standardize=False)
        summarise(other, [args.rule], f"store {args.compare_store}")
        paired(base, other, [args.rule], f"{args.compare_store} - {args.backbone or 'default store'}")


def study(args, backbone: str | None, rules: list[str], standardize: bool) -> dict[str, list[tuple[float, float]]]:
    """rule -> [(chosen lr, test macro AUROC)] per seed."""
    from pipeline.probe.sweep import macro_auroc

    ws, store, name, config = _setup(args, backbone, standardize)
    out: dict[str, list[tuple[float, float]]] = {r: [] for r in rules}
    partial = Path(tempfile.mkdtemp(prefix="bench-seeds-"))
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        t0 = time.perf_counter()
        data, stage = _stage(args, ws, store, name, config, seed, standardize)
        timings: dict[str, float] = {}
        swept = stage.sweep(data, seed, partial, f"-s{seed}", timings)
        if args.show_sweep:
            table = swept.table("auroc")
            print(f"  seed {seed} sweep: " + "; ".join(
                f"{r.lr:g} val {r.val_macro_auroc:.3f} loss {r.val_loss:.3f}{' DIV' if r.diverged else ''}"
                for r in table.itertuples()), flush=True)  # fmt: skip
        cache: dict[float, float] = {}
        line = []
        for rule in rules:
            table = _without_divergence(swept) if rule == "auroc-any" else swept.table(rule)
            lr = float(table.loc[table["chosen"], "lr"].iloc[0])
            if lr not in cache:
                _, probs, _ = stage.refit(data, seed, lr, partial, f"-s{seed}-{lr:g}", timings, swept.standardizer)
                cache[lr] = macro_auroc(probs, data.labels[data.test], swept.skip_idx)[0]
                if args.save:
                    save_probs(Path(args.save), name, standardize, seed, lr, probs, data, swept.skip_idx)
            if args.save:
                _record_choice(Path(args.save), name, standardize, seed, rule, lr)
            out[rule].append((lr, cache[lr]))
            line.append(f"{rule} lr {lr:g} test {cache[lr]:.4f}")
        diverged = [f"{lr:g}" for lr, d in zip(swept.lrs, swept.losses.diverged(), strict=True) if d]
        print(f"  seed {seed} ({name}{', standardised' if standardize else ''}; {time.perf_counter() - t0:.0f} s, "
              f"diverged: {', '.join(diverged) or 'none'}): " + "; ".join(line), flush=True)  # fmt: skip
    return out


def _setup(args, backbone: str | None, standardize: bool):
    """(workspace, store, store name, the demo's small ProbeConfig for this data set and head)."""
    from pipeline.demo import SIZES, SMALL_SETS, _head_options
    from pipeline.probe.protocol import ProbeConfig, resolve_backbone
    from pipeline.store import FeatureStore
    from pipeline.workspace import Workspace

    ws = Workspace(Path(args.workspace))
    name = resolve_backbone(ws, backbone)
    store = FeatureStore.open(ws.features_dir(name))
    plan = SIZES["small"]
    epochs = plan.epochs_small if args.dataset in SMALL_SETS else plan.epochs_large
    config = ProbeConfig(lrs=plan.lrs, epochs=epochs, batch_size=plan.batch_size, standardize=standardize,
                         head_options=_head_options(args.head, plan, args.dataset))  # fmt: skip
    return ws, store, name, config


def _stage(args, ws, store, name: str, config, seed: int, standardize: bool):
    """(probe data, ProbeStage) of one seed, as the protocol builds them."""
    from heads import head_spec
    from pipeline.device import pick_device
    from pipeline.probe.data import Features, load_probe_data
    from pipeline.probe.protocol import ProbeStage, _factory, _schedule

    data = load_probe_data(ws, args.dataset, seed)
    ep, bs = _schedule(data, config)
    parts = ("cls", "patch") if head_spec(args.head).uses_patch(config.head_options) else ("cls",)
    train_ids = list(data.image_ids[np.concatenate([data.train, data.refit_val])])
    max_views = store.n_views(train_ids) if config.train_views else 1
    features = Features(store, list(data.image_ids), parts, max_views=max_views)
    factory = _factory(args.head, store, len(data.outputs), config.head_options)
    stage = ProbeStage(args.head, factory, features, config, ep, bs, pick_device(None), max_views > 1,
                       f"bench-{seed}-{standardize}-{name}", progress=False)  # fmt: skip
    return data, stage


def fixed_lr(args, backbones: list[str | None], lr: float) -> None:
    """The store question without the selection noise: per seed, the protocol's refit at one lr on each store
    (same seed, so the same init and batches where the widths agree), test macro AUROC, paired differences."""
    from pipeline.probe.sweep import macro_auroc

    results = {}
    for backbone in backbones:
        ws, store, name, config = _setup(args, backbone, standardize=False)
        partial = Path(tempfile.mkdtemp(prefix="bench-fixed-"))
        values = []
        for seed in range(args.first_seed, args.first_seed + args.seeds):
            data, stage = _stage(args, ws, store, name, config, seed, False)
            _, probs, _ = stage.refit(data, seed, lr, partial, f"-s{seed}-{lr:g}", {}, None)
            skip = [k for k in range(len(data.outputs)) if k in _skipped(data)]
            values.append(macro_auroc(probs, data.labels[data.test], skip)[0])
            if args.save:
                save_probs(Path(args.save), f"{name}-fixed", False, seed, lr, probs, data, skip)
            print(f"  fixed lr {lr:g}, {name}, seed {seed}: test {values[-1]:.4f}", flush=True)
        results[name] = np.array(values)
    names = list(results)
    if args.save and len(names) > 1:
        seeds = list(range(args.first_seed, args.first_seed + args.seeds))
        ensemble_paired(Path(args.save), [f"{n}-fixed" for n in names], lr, seeds)
    for other in names[1:]:
        diff = results[other] - results[names[0]]
        sd = diff.std(ddof=1) if len(diff) > 1 else float("nan")
        print(f"\n  fixed lr {lr:g}: {names[0]} mean {results[names[0]].mean():.4f} (seed SD "
              f"{results[names[0]].std(ddof=1):.4f}); {other} mean {results[other].mean():.4f} (seed SD "
              f"{results[other].std(ddof=1):.4f}); paired {other} - {names[0]}: mean {diff.mean():+.4f}, SD "
              f"{sd:.4f}, SE {sd / np.sqrt(len(diff)):.4f}, max |diff| {np.abs(diff).max():.4f}; "
              f"per seed {' '.join(f'{d:+.4f}' for d in diff)}", flush=True)  # fmt: skip


def ensemble_paired(folder: Path, tags: list[str], lr: float, seeds: list[int], draws: int = 2000) -> None:
    """The stores compared as ensembles: each store's test probabilities averaged over the seeds, the macro AUROC
    of that average, and the difference's spread over seed resamples (the same resampled seeds for both stores),
    over disjoint blocks of 5 seeds too."""
    from pipeline.probe.sweep import macro_auroc

    runs = {tag: [np.load(folder / f"{tag}-s{s}-lr{lr:g}.npz") for s in seeds] for tag in tags}
    labels, skip = runs[tags[0]][0]["labels"], set(runs[tags[0]][0]["skip"].tolist())
    probs = {tag: np.stack([r["probs"] for r in runs[tag]]) for tag in tags}

    def auroc(tag: str, idx) -> float:
        return macro_auroc(probs[tag][idx].mean(axis=0), labels, skip)[0]

    every = np.arange(len(seeds))
    base = tags[0]
    rng = np.random.default_rng(0)
    for other in tags[1:]:
        diff = auroc(other, every) - auroc(base, every)
        boot = []
        for _ in range(draws):
            idx = rng.integers(0, len(seeds), len(seeds))
            boot.append(auroc(other, idx) - auroc(base, idx))
        blocks = [auroc(other, every[b : b + 5]) - auroc(base, every[b : b + 5]) for b in range(0, len(seeds) - 4, 5)]
        print(f"  ensembles of {len(seeds)} seeds at lr {lr:g}: {base} {auroc(base, every):.4f}, {other} "
              f"{auroc(other, every):.4f}; {other} - {base} {diff:+.4f} (seed-resampling SD {np.std(boot):.4f}, 95% "
              f"{np.percentile(boot, 2.5):+.4f}..{np.percentile(boot, 97.5):+.4f}); 5-seed blocks "
              f"{' '.join(f'{d:+.4f}' for d in blocks)}", flush=True)  # fmt: skip


def _skipped(data) -> set[int]:
    """Outputs the macro leaves out: no positive or no negative in train (the sweep's rule) or in test."""
    skip = set()
    for k in range(len(data.outputs)):
        for rows in (data.train, data.test):
            y = data.labels[rows, k]
            y = y[~np.isnan(y)]
            if not ((y == 1).any() and (y == 0).any()):
                skip.add(k)
    return skip


def _tag(name: str | None, standardize: bool) -> str:
    return f"{name or 'default'}{'-std' if standardize else ''}"


def save_probs(folder: Path, name: str, standardize: bool, seed: int, lr: float, probs, data, skip_idx) -> None:
    """One refit's test probabilities, labels and the outputs the macro skips (to combine seeds afterwards)."""
    folder.mkdir(parents=True, exist_ok=True)
    np.savez(folder / f"{_tag(name, standardize)}-s{seed}-lr{lr:g}.npz", probs=np.asarray(probs),
             labels=np.asarray(data.labels[data.test]), skip=np.asarray(list(skip_idx), dtype=np.int64))  # fmt: skip


def _record_choice(folder: Path, name: str, standardize: bool, seed: int, rule: str, lr: float) -> None:
    with open(folder / f"{_tag(name, standardize)}-choices.tsv", "a") as handle:
        handle.write(f"{seed}\t{rule}\t{lr:g}\n")


def blocks(folder: Path, rules: list[str], size: int, name: str | None) -> None:
    """What `--seeds N` would report, over disjoint blocks of `size` consecutive seeds (the saved runs): the
    block's mean of the seeds' test macro AUROC (what `chex probe --seeds N` reports: metric averaging) and the
    macro AUROC of the seeds' averaged probabilities (`chex stats --combine ensemble`), and their SD over blocks;
    with several stores saved, the paired per-block differences of their ensembles against the first."""
    from pipeline.probe.sweep import macro_auroc

    tags = sorted({path.name.rsplit("-choices.tsv", 1)[0] for path in folder.glob("*-choices.tsv")})
    by_tag: dict[str, dict[str, list[float]]] = {}
    for tag in tags:
        choice: dict[str, dict[int, str]] = {}
        for line in (folder / f"{tag}-choices.tsv").read_text().splitlines():
            seed, rule, lr = line.split("\t")
            choice.setdefault(rule, {})[int(seed)] = lr
        print(
            f"\n  --seeds {size} over disjoint seed blocks ({tag}): block means of test macro AUROC (metric "
            "averaging, what chex reports) and the AUROC of the block's averaged probabilities (ensembling)"
        )
        for rule in rules:
            seeds = sorted(choice.get(rule, {}))
            n_blocks = len(seeds) // size
            means, ensembles = [], []
            for b in range(n_blocks):
                runs = [
                    np.load(folder / f"{tag}-s{s}-lr{choice[rule][s]}.npz") for s in seeds[b * size : (b + 1) * size]
                ]
                skip = set(runs[0]["skip"].tolist())
                means.append(np.mean([macro_auroc(r["probs"], r["labels"], skip)[0] for r in runs]))
                ensembles.append(macro_auroc(np.mean([r["probs"] for r in runs], axis=0), runs[0]["labels"], skip)[0])
            by_tag.setdefault(tag, {})[rule] = ensembles
            if n_blocks < 2:
                print(f"  {rule:9s} {len(seeds)} seeds: fewer than 2 blocks of {size}")
                continue
            print(f"  {rule:9s} {n_blocks} blocks of {size} (seeds {seeds[0]}-{seeds[n_blocks * size - 1]}): metric "
                  f"mean {np.mean(means):.4f} SD {np.std(means, ddof=1):.4f} ({' '.join(f'{m:.4f}' for m in means)}); "
                  f"ensemble {np.mean(ensembles):.4f} SD {np.std(ensembles, ddof=1):.4f} "
                  f"({' '.join(f'{m:.4f}' for m in ensembles)})", flush=True)  # fmt: skip
    for other in tags[1:]:
        print(f"\n  paired per block, {other} - {tags[0]}: the blocks' ensembles (the same seeds)")
        for rule in rules:
            a, b = by_tag[tags[0]].get(rule, []), by_tag[other].get(rule, [])
            diff = np.array(b[: len(a)]) - np.array(a[: len(b)])
            if len(diff):
                print(f"  {rule:9s} {' '.join(f'{d:+.4f}' for d in diff)}; mean {diff.mean():+.4f}, max |diff| "
                      f"{np.abs(diff).max():.4f}", flush=True)  # fmt: skip


def from_logs(paths: list[str], rules: list[str]) -> dict[str, list[tuple[float, float]]]:
    """rule -> [(lr, test AUROC)] from the `  seed N (...): rule lr X test Y; ...` lines of earlier runs."""
    import re

    per_seed: dict[int, dict[str, tuple[float, float]]] = {}
    for path in paths:
        for line in Path(path).read_text().splitlines():
            m = re.match(r"\s+seed (\d+) \((?![^)]*standardised)", line)
            if not m:
                continue
            found = re.findall(r"([a-z-]+) lr ([0-9.e-]+) test ([0-9.]+)", line.split("): ", 1)[1])
            per_seed[int(m.group(1))] = {rule: (float(lr), float(a)) for rule, lr, a in found}
    return {rule: [per_seed[s][rule] for s in sorted(per_seed)] for rule in rules}


def _without_divergence(swept):
    """The pre-issue-25 rule: the sweep table with every lr eligible, best val macro AUROC."""
    from pipeline.probe.sweep import sweep_table

    return sweep_table(swept.lrs, swept.val_probs, swept.val_labels, swept.skip_idx, "auroc", None)


def summarise(result: dict[str, list[tuple[float, float]]], rules: list[str], title: str) -> None:
    print(
        f"\n  {title}: per rule, lr flips (seeds whose lr is not the rule's most common), distinct lrs, test macro "
        "AUROC mean and seed SD (ddof 1); SD/sqrt(3), SD/sqrt(5): a --seeds 3 / 5 mean if seeds were independent"
    )
    for rule in rules:
        lrs = [lr for lr, _ in result[rule]]
        auroc = np.array([a for _, a in result[rule]])
        mode, count = Counter(lrs).most_common(1)[0]
        sd = float(auroc.std(ddof=1)) if len(auroc) > 1 else float("nan")
        print(f"  {rule:9s} flips {len(lrs) - count} of {len(lrs)} (mode {mode:g}), {len(set(lrs))} distinct lrs; "
              f"test AUROC {auroc.mean():.4f} SD {sd:.4f} (SD/sqrt3 {sd / np.sqrt(3):.4f}, SD/sqrt5 "
              f"{sd / np.sqrt(5):.4f}); lrs {' '.join(f'{lr:g}' for lr in lrs)}", flush=True)  # fmt: skip


def paired(a: dict, b: dict, rules: list[str], title: str) -> None:
    print(f"\n  paired per seed, {title}")
    for rule in rules:
        diff = np.array([y for _, y in b[rule]]) - np.array([x for _, x in a[rule]])
        same = sum(x == y for (x, _), (y, _) in zip(a[rule], b[rule], strict=True))
        sd = diff.std(ddof=1) if len(diff) > 1 else float("nan")
        print(
            f"  {rule:9s} mean diff {diff.mean():+.4f} (SD {sd:.4f}, SE {sd / np.sqrt(len(diff)):.4f}); "
            f"same lr in {same} of {len(diff)} seeds; max |diff| {np.abs(diff).max():.4f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
