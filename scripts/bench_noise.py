#!/usr/bin/env python
"""Benchmark the noise strategies of the `segmentation` trainer (issue: server-side retraining, §4).

    .venv/bin/python scripts/bench_noise.py cost        [--repeats 7]
    .venv/bin/python scripts/bench_noise.py robustness  [--epochs 6 --steps 40 --rates 0 20 40 60 80]
    .venv/bin/python scripts/bench_noise.py plc         [--epochs 20 --steps 50]   (the app's budget by default)
    .venv/bin/python scripts/bench_noise.py schedule    [--drafts <run>/datastore_oneshot/labels/original] [--seeds 0 1]
    .venv/bin/python scripts/bench_noise.py oeem        [--drafts <run>/datastore_oneshot/labels/original] [--seeds 0]

cost:        seconds per training step of each strategy vs `none`, same batch, same network, median
             of ``--repeats`` samples after 2 warm-up (a sample: one MCPM meta cycle of ``meta_every``
             steps, per step). MCPM variants: the naive look-ahead (autograd double backward), the
             finite-difference meta-gradient every step and every 2nd step, and the last-layer look-ahead.
robustness:  MCPM's protocol (its Table 2) on the sample cohort: of the training studies, ``r``% of the
             organ instances are corrupted by dilation (0–6 voxels) and, separately, by an elastic
             move; each strategy trains with the same budget and seed; Dice per organ on held-out
             test studies against the ground truth, and its ratio to clean-label training (`none`, r = 0).
             Split: subject_a (clean, the `final` label: MCPM's meta set) + pseudo_01..05 (noisy drafts)
             for training, pseudo_06..08 for testing. The labels are TotalSegmentator's output (a silver
             standard) and the cohort is deformed from one subject, so absolute Dice is optimistic.
plc:         does PLC's correction help on GeoS drafts? Drafts of pseudo_01..04: GeoS (the app's ``prnet.prelabel.geos``)
             from every support point at its true location (the oracle propagation: no PRNet model needed).
             `none` and `plc` train on them with the same budget and seed; after each PLC correction the voxels
             flipped and the corrected drafts' mean Dice against the ground truth (which PLC never sees); at the
             first correction, the flipped voxels that are right (new label = ground truth) and wrong (old label
             = ground truth) by distance to the nearest draft boundary; test Dice on pseudo_06..08.

schedule:    the learning-rate schedule (``segmentation.lr_decay``: none vs poly) and the spread over seeds: `none`
             trains on the drafts of support + pseudo_01..04 (``--drafts``: a one-shot run's pre-labels, tag
             ``original``; default: the oracle GeoS drafts as in ``plc``), the app's budget, each seed of ``--seeds``;
             Dice (after the app's fragment removal) on the validation study pseudo_05 and on pseudo_06..08.
oeem:        OEEM's Eq. 6 over the whole patch (the paper) vs within each class (``segmentation.oeem.per_class``), on the
             same drafts as ``schedule``, each seed of ``--seeds``; validation and test Dice.

Prints the tables and writes them to ``<out>/noise_cost.md`` / ``<out>/noise_robustness.md`` / ``<out>/noise_plc.md``
(and the raw numbers as JSON beside them; a finished robustness run is not redone).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from lib.atomic import atomic_write_json, atomic_write_text
from lib.data.corrupt import corrupt_labels
from lib.evaluation.metrics import dice
from lib.evaluation.oracle import oracle_drafts, read_cohort
from lib.evaluation.split import Split
from lib.evaluation.tables import machine, md_table
from lib.evaluation.unet import score_unet, train_and_score
from lib.io import read_volume
from lib.segmentation.config import STRATEGIES, OEEMConfig, SegConfig
from lib.segmentation.data import Study
from lib.segmentation.train import SegTrainer
from lib.settings import AppSettings, app_settings

REPO = Path(__file__).resolve().parents[1]



# --- cost ---------------------------------------------------------------------------------------------
def bench_cost(args, cfg: SegConfig, window) -> str:
    images, labels, names = read_cohort(args.cohort, args.split.studies, window)
    n_cls = max(names.values()) + 1
    variants = [("none", cfg.mcpm), ("plc", cfg.mcpm), ("oeem", cfg.mcpm), ("mcpm", cfg.mcpm)]
    variants += [("mcpm", replace(cfg.mcpm, **kw)) for kw in (
        {"scope": "all", "method": "autograd", "meta_every": 1},  # the naive look-ahead (double backward)
        {"scope": "all", "method": "finite_difference", "meta_every": 1},
        {"scope": "all", "method": "finite_difference", "meta_every": 2},
        {"scope": "head", "method": "finite_difference", "meta_every": 1},
    ) if replace(cfg.mcpm, **kw) != cfg.mcpm]
    split = args.split
    studies = [Study(s, images[s], labels[s], clean=s == split.support) for s in [split.support, *split.train_and_val]]
    sampler = SegTrainer(replace(cfg, noise_strategy="none"), n_cls).sampler
    x, y = sampler.sample(studies, cfg.batch_size)
    meta = sampler.sample(studies[:1], cfg.mcpm.meta_batch)
    times: dict[str, list[float]] = {}
    for strategy, mcpm in variants:
        key = strategy if strategy != "mcpm" else f"mcpm ({mcpm.scope}, {mcpm.method}, every {mcpm.meta_every})"
        key += " [default]" if strategy == "mcpm" and mcpm == cfg.mcpm else ""
        trainer = SegTrainer(replace(cfg, noise_strategy=strategy, mcpm=mcpm), n_cls, seed=0)
        times[key] = []
        every = max(1, trainer.cfg.mcpm.meta_every) if strategy == "mcpm" else 1
        for i in range(args.repeats + 2):  # a sample = one meta cycle (meta_every steps), per step
            t0 = time.perf_counter()
            for _ in range(every):
                trainer.step(x, y, meta if strategy == "mcpm" else None)
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            if i >= 2:
                times[key].append((time.perf_counter() - t0) / every)
        print(f"  {key}: median {statistics.median(times[key]):.3f} s/step", flush=True)
    base = statistics.median(times["none"])
    rows = [[k, statistics.median(v), min(v), max(v), statistics.median(v) / base] for k, v in times.items()]
    table = md_table(["strategy", "median s/step", "min", "max", "× none"], rows)
    # PLC's extra cost is outside the step: the per-epoch correction (sliding window over every draft)
    trainer = SegTrainer(replace(cfg, noise_strategy="plc"), n_cls, seed=0)
    t0 = time.perf_counter()
    trainer.correct([s for s in studies if not s.clean], 0.95)
    plc_s = time.perf_counter() - t0
    head = (f"Batch {cfg.batch_size}×{list(cfg.patch_size)}, UNet {list(cfg.channels)}, meta batch {cfg.mcpm.meta_batch}, "
            f"{args.repeats} timed steps after 2 warm-up; {machine()}.")
    note = (f"\n\nPLC's correction after each epoch (sliding window over the {len(split.train_and_val)} drafts): {plc_s:.1f} s, "
            f"i.e. {plc_s / (cfg.steps_per_epoch * base):.2f}× the steps of one default epoch ({cfg.steps_per_epoch} steps of `none`).")
    out = f"## Cost per training step\n\n{head}\n\n{table}{note}\n"
    atomic_write_json(str(args.out / "noise_cost.json"), {"times": times, "plc_correction_s": plc_s, "machine": machine()})
    return out


# --- robustness ---------------------------------------------------------------------------------------
def run_one(cfg: SegConfig, split: Split, images, train_labels, gt, names, seed: int) -> dict:
    """Train on the clean support and the noisy train + validation studies; Dice per organ on the test studies."""
    studies = [Study(s, images[s], train_labels[s].copy(), clean=s == split.support) for s in [split.support, *split.train_and_val]]
    t0 = time.perf_counter()
    score = train_and_score(cfg, studies, images, gt, names, seed, {"test": split.test})
    return {"dice": score["test"], "seconds": time.perf_counter() - t0}


def bench_robustness(args, cfg: SegConfig, window) -> str:
    images, gt, names = read_cohort(args.cohort, args.split.studies, window)
    split = args.split
    raw_path = args.out / "noise_robustness.json"
    raw = json.loads(raw_path.read_text()) if raw_path.exists() else {}
    cfg = replace(cfg, epochs=args.epochs, steps_per_epoch=args.steps,
                  plc=replace(cfg.plc, warmup_epochs=min(cfg.plc.warmup_epochs, args.epochs // 2)))
    organs = sorted(names.values())
    runs = [(0, "clean")] + [(r, k) for k in ("dilate", "elastic") for r in args.rates if r > 0]
    for rate, kind in runs:
        noisy = {split.support: gt[split.support]}
        if rate:
            corrupted, _ = corrupt_labels({s: gt[s] for s in split.train_and_val}, organs, rate / 100, kind, seed=rate)
            noisy.update(corrupted)
        else:
            noisy.update({s: gt[s] for s in split.train_and_val})
        noise_dice = float(np.mean([dice(noisy[s] == c, gt[s] == c) for s in split.train_and_val for c in organs]))
        for strategy in args.strategies:
            key = f"{kind}/{rate}/{strategy}"
            if key in raw:
                continue
            res = run_one(replace(cfg, noise_strategy=strategy), split, images, noisy, gt, names, seed=args.seed)
            res["train_label_dice"] = noise_dice
            raw[key] = res
            atomic_write_json(str(raw_path), raw)
            print(f"  {key}: mean Dice {np.mean(list(res['dice'].values())):.3f} ({res['seconds']:.0f} s; "
                  f"training labels' Dice {noise_dice:.3f})", flush=True)
    clean_ref = np.mean(list(raw["clean/0/none"]["dice"].values())) if "clean/0/none" in raw else float("nan")
    out = [f"## Noise robustness (MCPM's protocol)\n\nBudget per run: {cfg.epochs} epochs × {cfg.steps_per_epoch} steps, "
           f"batch {cfg.batch_size}×{list(cfg.patch_size)}, seed {args.seed}, PLC warm-up {cfg.plc.warmup_epochs} epochs; {machine()}. Clean-label reference "
           f"(`none`, r = 0): mean Dice {clean_ref:.3f}. Cells: mean Dice over the 7 organs on {', '.join(split.test)} "
           f"(ratio to the clean reference).\n"]
    for kind in ("dilate", "elastic"):
        header = ["r", "train-label Dice"] + list(args.strategies)
        rows = []
        for rate in args.rates:
            k = "clean" if rate == 0 else kind
            cells = []
            for s in args.strategies:
                res = raw.get(f"{k}/{rate}/{s}")
                m = float(np.mean(list(res["dice"].values()))) if res else float("nan")
                cells.append(f"{m:.3f} ({m / clean_ref:.0%})")
            first = raw.get(f"{k}/{rate}/{args.strategies[0]}", {})
            rows.append([f"{rate}%", first.get("train_label_dice", float("nan"))] + cells)
        out.append(f"### {kind}\n\n" + md_table(header, rows) + "\n")
    # per organ at r = 40
    for kind in ("dilate", "elastic"):
        rows = []
        for s in args.strategies:
            res = raw.get(f"{kind}/40/{s}")
            if res:
                rows.append([s] + [res["dice"][n] for n in names])
        if rows:
            out.append(f"### Dice per organ, {kind}, r = 40%\n\n" + md_table(["strategy"] + list(names), rows) + "\n")
    return "\n".join(out)


# --- plc ----------------------------------------------------------------------------------------------
def boundary_distance(label: np.ndarray) -> np.ndarray:
    """Distance (voxels) of every voxel to the nearest voxel whose 6-neighbour has another class."""
    from scipy import ndimage as ndi

    edge = np.zeros(label.shape, bool)
    for a in range(3):
        step = np.diff(label, axis=a) != 0
        edge[tuple(slice(1, None) if i == a else slice(None) for i in range(3))] |= step
        edge[tuple(slice(None, -1) if i == a else slice(None) for i in range(3))] |= step
    return ndi.distance_transform_edt(~edge)


def bench_plc(args, cfg: SegConfig, window) -> str:
    images, gt, names = read_cohort(args.cohort, args.split.studies, window)
    conf = app_settings()
    split = args.split
    drafts = oracle_drafts(args.cohort, conf.prelabel, conf.pseudo_mask_geos, split.train)
    organs = sorted(names.values())
    n_cls = max(organs) + 1

    def label_dice(studies) -> float:
        return float(np.mean([dice(s.label == c, gt[s.id] == c) for s in studies for c in organs]))

    results, trace, bands = {}, [], []
    for strategy in ("none", "plc"):
        run = replace(cfg, noise_strategy=strategy, epochs=args.epochs or cfg.epochs, steps_per_epoch=args.steps or cfg.steps_per_epoch)
        studies = [Study(s, images[s], drafts[s].copy()) for s in split.train]
        trainer = SegTrainer(run, n_cls, seed=args.seed)

        def first_correction(epoch: int, delta: float) -> None:  # voxel by voxel, by distance to the draft's boundary
            if bands:
                return
            for s in studies:
                probs = trainer.predict(s.image)
                pred, conf_ = probs.argmax(0), probs.max(0)
                flip = (pred != s.label) & (conf_ > delta)
                dist = boundary_distance(s.label)
                for lo, hi in ((0, 1.5), (1.5, 3.5), (3.5, 6.5), (6.5, np.inf)):
                    m = flip & (dist >= lo) & (dist < hi)
                    bands.append((f"[{lo}, {hi})", int((m & (pred == gt[s.id])).sum()), int((m & (s.label == gt[s.id])).sum())))

        def after_epoch(epoch: int, row: dict) -> None:
            if "delta" in row:
                trace.append([epoch, round(row["delta"], 3), row["flipped"], label_dice(studies)])
                print(f"  plc epoch {epoch}: δ {row['delta']:.3f}, {row['flipped']} voxels flipped, drafts' Dice {trace[-1][3]:.3f}",
                      flush=True)

        t0 = time.perf_counter()
        trainer.fit(studies, on_epoch=after_epoch, before_correction=first_correction)
        results[strategy] = {"dice": score_unet(trainer, images, gt, names, split.test), "seconds": time.perf_counter() - t0}
        print(f"  {strategy}: test mean Dice {np.mean(list(results[strategy]['dice'].values())):.3f}", flush=True)
    band_rows = {}
    for band, good, bad in bands:
        g, b = band_rows.get(band, (0, 0))
        band_rows[band] = (g + good, b + bad)
    out = [f"## PLC on GeoS drafts\n\nDrafts: GeoS (`prnet.prelabel.geos`) from the support's points at their true locations in "
           f"{', '.join(split.train)}: mean Dice {label_dice([Study(s, images[s], drafts[s]) for s in split.train]):.3f} against the "
           f"ground truth. Budget: {args.epochs or cfg.epochs} epochs × {args.steps or cfg.steps_per_epoch} steps, seed {args.seed}, "
           f"PLC δ {cfg.plc.delta0} × {cfg.plc.decay}/epoch, floor {cfg.plc.floor}, warm-up {cfg.plc.warmup_epochs} epochs; {machine()}.\n",
           "### Test Dice (" + ", ".join(split.test) + ")\n", md_table(["strategy"] + list(names) + ["mean"],
           [[s] + [r["dice"][n] for n in names] + [float(np.mean(list(r["dice"].values())))] for s, r in results.items()]) + "\n",
           "### The drafts after each PLC correction (their Dice against the ground truth, which PLC never sees)\n",
           md_table(["after epoch", "δ", "voxels flipped", "drafts' mean Dice"], trace) + "\n",
           "### The first correction: flipped voxels by distance to the nearest draft boundary (voxels)\n",
           md_table(["distance", "right (new label = truth)", "wrong (old label = truth)"], [[k, g, b] for k, (g, b) in band_rows.items()]) + "\n"]
    return "\n".join(out)


def load_drafts(args, conf: AppSettings) -> tuple[list[str], dict[str, np.ndarray]]:
    """The training studies (support + train) and their drafts: ``--drafts`` (a run's tag ``original``) or oracle."""
    train = sorted([*args.split.train, args.split.support])  # the order the trainer reads the datastore in
    if args.drafts:
        return train, {s: np.rint(read_volume(str(args.drafts / f"{s}.nii.gz")).array).astype(np.int64) for s in train}
    return train, oracle_drafts(args.cohort, conf.prelabel, conf.pseudo_mask_geos, train)


def scored_drafts(cfg: SegConfig, args, drafts, images, gt, names, seed: int, fraction: float) -> dict:
    """``{"val" | "test": {organ: Dice}}`` of a UNet trained on ``drafts`` (after the app's fragment removal)."""
    studies = [Study(s, images[s], drafts[s].copy()) for s in sorted(drafts)]
    return train_and_score(cfg, studies, images, gt, names, seed, {"val": args.split.val, "test": args.split.test}, fraction)


def bench_oeem(args, cfg: SegConfig, window) -> str:
    images, gt, names = read_cohort(args.cohort, args.split.studies, window)
    conf = app_settings()
    train, drafts = load_drafts(args, conf)
    fraction = float(conf.segmentation.min_component_fraction)
    rows = []
    for per_class in (False, True):
        run = replace(cfg, noise_strategy="oeem", oeem=OEEMConfig(per_class=per_class), epochs=args.epochs or cfg.epochs,
                      steps_per_epoch=args.steps or cfg.steps_per_epoch)
        for seed in args.seeds:
            t0 = time.perf_counter()
            score = scored_drafts(run, args, drafts, images, gt, names, seed, fraction)
            v, t = (float(np.mean(list(score[k].values()))) for k in ("val", "test"))
            rows.append(["per class" if per_class else "over the patch (the paper)", seed, v, t]
                        + [score["test"][n] for n in names] + [round(time.perf_counter() - t0)])
            print(f"  oeem per_class {per_class}, seed {seed}: validation {v:.3f}, test {t:.3f}", flush=True)
    source = f"the drafts in `{args.drafts}`" if args.drafts else "oracle GeoS drafts"
    return "\n".join([
        f"## OEEM's Eq. 6 over the patch vs per class\n\nStrategy `oeem` on {source} of {', '.join(train)}; budget "
        f"{run.epochs} epochs × {run.steps_per_epoch} steps; fragment removal {fraction}; validation {', '.join(args.split.val)}, "
        f"test {', '.join(args.split.test)}; {machine()}.\n",
        md_table(["OEEM weights", "seed", "validation", "test"] + list(names) + ["s (train + infer)"], rows) + "\n"])


def bench_schedule(args, cfg: SegConfig, window) -> str:
    images, gt, names = read_cohort(args.cohort, args.split.studies, window)
    conf = app_settings()
    train, drafts = load_drafts(args, conf)
    fraction = float(conf.segmentation.min_component_fraction)
    val = args.split.val
    rows, means = [], {}
    for decay in ("none", "poly"):
        run = replace(cfg, noise_strategy="none", lr_decay=decay, epochs=args.epochs or cfg.epochs,
                      steps_per_epoch=args.steps or cfg.steps_per_epoch)
        for seed in args.seeds:
            t0 = time.perf_counter()
            score = scored_drafts(run, args, drafts, images, gt, names, seed, fraction)
            v, t = (float(np.mean(list(score[k].values()))) for k in ("val", "test"))
            means.setdefault(decay, []).append((v, t))
            rows.append([decay, seed, v, t] + [score["test"][n] for n in names] + [round(time.perf_counter() - t0)])
            print(f"  lr_decay {decay}, seed {seed}: validation {v:.3f}, test {t:.3f}", flush=True)
    summary = [[d, float(np.mean([m[0] for m in ms])), float(np.mean([m[1] for m in ms])),
                float(max(m[1] for m in ms) - min(m[1] for m in ms))] for d, ms in means.items()]
    source = f"the drafts in `{args.drafts}`" if args.drafts else "oracle GeoS drafts"
    return "\n".join([
        f"## Learning-rate schedule and seeds\n\nStrategy `none` on {source} of {', '.join(train)}; budget "
        f"{args.epochs or cfg.epochs} epochs × {args.steps or cfg.steps_per_epoch} steps, lr {cfg.lr}; fragment removal "
        f"{fraction}; validation {', '.join(val)}, test {', '.join(args.split.test)}; {machine()}.\n",
        md_table(["lr_decay", "seed", "validation", "test"] + list(names) + ["s (train + infer)"], rows) + "\n",
        md_table(["lr_decay", "validation, mean of seeds", "test, mean of seeds", "test, max − min"], summary) + "\n"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("part", choices=("cost", "robustness", "plc", "schedule", "oeem"))
    p.add_argument("--cohort", type=Path, default=REPO / "sample-data" / "cohort")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks-out")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--epochs", type=int, help="robustness: 6; plc: the app's")
    p.add_argument("--steps", type=int, help="robustness: 40; plc: the app's")
    p.add_argument("--rates", type=int, nargs="+", default=[0, 20, 40, 60, 80])
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="schedule, oeem: the seeds of each variant")
    p.add_argument("--drafts", type=Path, help="schedule, oeem: a folder of drafts <study>.nii.gz (default: oracle drafts)")
    args = p.parse_args()
    if not (args.cohort / "ground_truth").exists():
        print(f"no cohort at {args.cohort}: run  .venv/bin/python sample-data/build_cohort.py  first", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    args.split = Split.from_cohort(args.cohort)
    conf = app_settings()
    cfg = conf.segmentation
    if args.part == "robustness":
        args.epochs, args.steps = args.epochs or 6, args.steps or 40
    text = {"cost": bench_cost, "robustness": bench_robustness, "plc": bench_plc, "schedule": bench_schedule, "oeem": bench_oeem}[args.part](args, cfg, conf.window)
    print(text)
    atomic_write_text(str(args.out / f"noise_{args.part}.md"), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
