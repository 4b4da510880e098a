#!/usr/bin/env python
"""Benchmark the noise strategies of the `segmentation` trainer (issue: server-side retraining, §4).

    .venv/bin/python scripts/bench_noise.py cost        [--repeats 7]
    .venv/bin/python scripts/bench_noise.py robustness  [--epochs 6 --steps 40 --rates 0 20 40 60 80]

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

Prints the tables and writes them to ``<out>/noise_cost.md`` / ``<out>/noise_robustness.md``
(and the raw numbers as JSON beside them; a finished robustness run is not redone).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lib.atomic import atomic_write_json, atomic_write_text  # noqa: E402
from lib.config import app_config  # noqa: E402
from lib.data.corrupt import corrupt_labels  # noqa: E402
from lib.geos import GeoSConfig, normalize_intensity  # noqa: E402
from lib.io import read_volume  # noqa: E402
from lib.segmentation.config import STRATEGIES, SegConfig  # noqa: E402
from lib.segmentation.data import Study  # noqa: E402
from lib.segmentation.train import SegTrainer  # noqa: E402

TRAIN_CLEAN, TRAIN_NOISY, TEST = ["subject_a"], [f"pseudo_0{i}" for i in range(1, 6)], [f"pseudo_0{i}" for i in range(6, 9)]


def machine() -> str:
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, {dev}, torch {torch.__version__}"


def md_table(header: list[str], rows: list[list]) -> str:
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def load_cohort(cohort: Path, window) -> tuple[dict, dict, dict]:
    names = json.loads((cohort / "ground_truth" / "labels.json").read_text())
    images, labels = {}, {}
    for s in TRAIN_CLEAN + TRAIN_NOISY + TEST:
        images[s] = normalize_intensity(read_volume(str(cohort / "studies" / f"{s}.nii.gz")).array.astype(np.float32), *window).astype(np.float32)
        labels[s] = np.rint(read_volume(str(cohort / "ground_truth" / f"{s}.nii.gz")).array).astype(np.int64)
    return images, labels, names


# --- cost ---------------------------------------------------------------------------------------------
def bench_cost(args, cfg: SegConfig, window) -> str:
    images, labels, names = load_cohort(args.cohort, window)
    n_cls = max(names.values()) + 1
    variants = [("none", cfg.mcpm), ("plc", cfg.mcpm), ("oeem", cfg.mcpm), ("mcpm", cfg.mcpm)]
    variants += [("mcpm", replace(cfg.mcpm, **kw)) for kw in (
        {"scope": "all", "method": "autograd", "meta_every": 1},  # the naive look-ahead (double backward)
        {"scope": "all", "method": "finite_difference", "meta_every": 1},
        {"scope": "all", "method": "finite_difference", "meta_every": 2},
        {"scope": "head", "method": "finite_difference", "meta_every": 1},
    ) if replace(cfg.mcpm, **kw) != cfg.mcpm]
    studies = [Study(s, images[s], labels[s], clean=s in TRAIN_CLEAN) for s in TRAIN_CLEAN + TRAIN_NOISY]
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
    note = (f"\n\nPLC's correction after each epoch (sliding window over the {len(TRAIN_NOISY)} drafts): {plc_s:.1f} s, "
            f"i.e. {plc_s / (cfg.steps_per_epoch * base):.2f}× the steps of one default epoch ({cfg.steps_per_epoch} steps of `none`).")
    out = f"## Cost per training step\n\n{head}\n\n{table}{note}\n"
    atomic_write_json(str(args.out / "noise_cost.json"), {"times": times, "plc_correction_s": plc_s, "machine": machine()})
    return out


# --- robustness ---------------------------------------------------------------------------------------
def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = a.sum() + b.sum()
    return float(2 * np.logical_and(a, b).sum() / s) if s else 1.0


def run_one(cfg: SegConfig, images, train_labels, gt, names, seed: int) -> dict:
    n_cls = max(names.values()) + 1
    studies = [Study(s, images[s], train_labels[s].copy(), clean=s in TRAIN_CLEAN) for s in TRAIN_CLEAN + TRAIN_NOISY]
    trainer = SegTrainer(cfg, n_cls, seed=seed)
    t0 = time.perf_counter()
    for epoch in range(cfg.epochs):
        trainer.epoch(studies, cfg.steps_per_epoch)
        if cfg.noise_strategy == "plc" and cfg.plc.delta(epoch) is not None:
            trainer.correct(studies, cfg.plc.delta(epoch))
    per_organ = {n: [] for n in names}
    for s in TEST:
        pred = trainer.predict(images[s]).argmax(0)
        for n, c in names.items():
            per_organ[n].append(dice(pred == c, gt[s] == c))
    return {"dice": {n: float(np.mean(v)) for n, v in per_organ.items()}, "seconds": time.perf_counter() - t0}


def bench_robustness(args, cfg: SegConfig, window) -> str:
    images, gt, names = load_cohort(args.cohort, window)
    raw_path = args.out / "noise_robustness.json"
    raw = json.loads(raw_path.read_text()) if raw_path.exists() else {}
    cfg = replace(cfg, epochs=args.epochs, steps_per_epoch=args.steps,
                  plc=replace(cfg.plc, warmup_epochs=min(cfg.plc.warmup_epochs, args.epochs // 2)))
    organs = sorted(names.values())
    runs = [(0, "clean")] + [(r, k) for k in ("dilate", "elastic") for r in args.rates if r > 0]
    for rate, kind in runs:
        noisy = {s: gt[s] for s in TRAIN_CLEAN}
        if rate:
            corrupted, _ = corrupt_labels({s: gt[s] for s in TRAIN_NOISY}, organs, rate / 100, kind, seed=rate)
            noisy.update(corrupted)
        else:
            noisy.update({s: gt[s] for s in TRAIN_NOISY})
        noise_dice = float(np.mean([dice(noisy[s] == c, gt[s] == c) for s in TRAIN_NOISY for c in organs]))
        for strategy in args.strategies:
            key = f"{kind}/{rate}/{strategy}"
            if key in raw:
                continue
            res = run_one(replace(cfg, noise_strategy=strategy), images, noisy, gt, names, seed=args.seed)
            res["train_label_dice"] = noise_dice
            raw[key] = res
            atomic_write_json(str(raw_path), raw)
            print(f"  {key}: mean Dice {np.mean(list(res['dice'].values())):.3f} ({res['seconds']:.0f} s; "
                  f"training labels' Dice {noise_dice:.3f})", flush=True)
    clean_ref = np.mean(list(raw["clean/0/none"]["dice"].values())) if "clean/0/none" in raw else float("nan")
    out = [f"## Noise robustness (MCPM's protocol)\n\nBudget per run: {cfg.epochs} epochs × {cfg.steps_per_epoch} steps, "
           f"batch {cfg.batch_size}×{list(cfg.patch_size)}, seed {args.seed}, PLC warm-up {cfg.plc.warmup_epochs} epochs; {machine()}. Clean-label reference "
           f"(`none`, r = 0): mean Dice {clean_ref:.3f}. Cells: mean Dice over the 7 organs on {', '.join(TEST)} "
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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("part", choices=("cost", "robustness"))
    p.add_argument("--cohort", type=Path, default=REPO / "sample-data" / "cohort")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks-out")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--rates", type=int, nargs="+", default=[0, 20, 40, 60, 80])
    p.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if not (args.cohort / "ground_truth").exists():
        print(f"no cohort at {args.cohort}: run  .venv/bin/python sample-data/build_cohort.py  first", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    conf = app_config()
    geos = GeoSConfig.from_dict(conf["geos"])
    cfg = SegConfig.from_dict(conf["segmentation"])
    text = (bench_cost if args.part == "cost" else bench_robustness)(args, cfg, (geos.window_hu, geos.window_out))
    print(text)
    atomic_write_text(str(args.out / f"noise_{args.part}.md"), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
