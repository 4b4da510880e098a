#!/usr/bin/env python
"""Benchmark PRNet propagation on the sample cohort (issue: PRNet propagation, §4 a–d).

    .venv/bin/python scripts/bench_prnet.py [--train-steps 600 | --model path/to/prnet.pt] [--out benchmarks-out]

(a) precision of propagated points per class (fraction of kept points that land in the right class)
    and points kept, for τ ∈ {0, 0.5, 0.9} (paper Fig. 6); the localisation error in mm against the
    true correspondence (the cohort's own warp field, recomputed from its seed);
(b) pseudo-mask Dice per organ against the held ground truth for the same τ (paper Table 2), next to two
    references through the same GeoS: every support point at its *true* location (an oracle propagation:
    the ceiling of the GeoS stage) and at the *same voxel index* (no propagation at all); with
    ``prnet.regularize: affine`` (the default) also the localisation error and Dice without it (each point
    on its own, as the paper) and, with ``register_steps``, with the affine map but without its intensity
    refinement; and the error of that refinement started from the identity instead of PRNet's map;
(c) seconds to propagate support points batched vs a per-point loop (one call per point, each with its
    own start patches, as the reference code does): on the same points, and for the whole support of one
    study (the loop's time extrapolated from its timed points), cold (the support encoded in the call) and
    warm (its encodings cached, as the app keeps them); medians of ``--timing-repeats`` runs; ``--timing-only``
    skips (a) and (b);
(d) PRNet training throughput (pairs/s) on this machine.

Support: subject A's simulated scribbles; queries: the deformed pseudo-subjects (ground truth
TotalSegmentator's output, a silver standard; deformed copies of one subject overestimate accuracy).
Prints the tables and writes them to ``<out>/prnet.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from lib.config import load_yaml
from lib.data.cohort import true_locations
from lib.data.deform import DeformConfig
from lib.data.labels import BACKGROUND
from lib.evaluation.metrics import dice
from lib.evaluation.tables import machine
from lib.intensity import normalize_intensity
from lib.io import read_volume
from lib.prnet.prelabel import Prelabel, propagate_support, pseudo_mask
from lib.prnet.propagate import Propagation, apply_affine, bf16_enabled, encode_support, fit_subset, propagate
from lib.registration import refine_affine
from lib.settings import app_settings
from lib.tasks.datastore import AtomicLocalDatastore
from lib.tasks.models import ModelFiles
from lib.prnet.checkpoint import load_prnet
from lib.tasks.train_prnet import PRNetTrain

REPO = Path(__file__).resolve().parents[1]

TAUS = (0.0, 0.5, 0.9)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cohort", type=Path, default=REPO / "sample-data" / "cohort")
    p.add_argument("--model", type=Path, help="a published prnet.pt to use instead of training")
    p.add_argument("--train-steps", type=int, default=600)
    p.add_argument("--timing-points", type=int, default=64, help="support points timed batched vs per point")
    p.add_argument("--queries", type=int, default=0, help="use only the first N pseudo-subjects (0 = all)")
    p.add_argument("--timing-only", action="store_true", help="only (c) (and (d) when training)")
    p.add_argument("--timing-repeats", type=int, default=3, help="(c): each time is the median of this many runs")
    p.add_argument("--precisions", nargs="+", default=["auto", "fp32"], choices=["auto", "fp32", "bf16"],
                   help="(c): the PRNet precisions timed side by side")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks-out")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    conf = app_settings()
    geos = conf.pseudo_mask_geos
    window = conf.window
    prop = conf.propagation
    sampling = conf.prelabel.sampling

    studies, truth = args.cohort / "studies", args.cohort / "ground_truth"
    names = {d["name"]: d["id"] for d in json.loads((args.cohort / "scribbles" / "label_info.json").read_text())}
    bg_id = names[BACKGROUND]
    organs = {n: i for n, i in names.items() if n != BACKGROUND}
    support_id = json.loads((args.cohort / "manifest.json").read_text())["studies"][0]
    support = read_volume(str(studies / f"{support_id}.nii.gz"))
    scribbles = np.rint(read_volume(str(args.cohort / "scribbles" / f"{support_id}.nii.gz")).array).astype(np.int64)
    queries = sorted(q.name[: -len(".nii.gz")] for q in studies.glob("*.nii.gz") if not q.name.startswith(support_id))
    queries = queries[: args.queries] if args.queries else queries
    lines = ["# PRNet propagation on the sample cohort", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
             f"{'CUDA ' + torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU only'}. "
             f"Support: {support_id}'s simulated scribbles (stride {sampling.stride}, per class {sampling.class_strides or 'none'}, at least {sampling.min_points} a class); queries: {len(queries)} deformed pseudo-subjects. "
             "Ground truth: TotalSegmentator output (silver standard); a cohort deformed from one subject overestimates accuracy.", ""]
    device = "cuda" if torch.cuda.is_available() else "cpu"

    # (d) training with the app's own trainer (resumes from <out>/prnet_model), or a given model
    if args.model:
        published = load_prnet(str(args.model), device)
        models, cfg = published.localizer, published.config
        lines += [f"Model: {args.model} (not trained here).", ""]
    else:
        files = ModelFiles(str(args.out / "prnet_model"), "prnet")
        trainer = PRNetTrain(files, replace(conf.prnet, max_steps=args.train_steps, checkpoint_every=50), window)
        ds = AtomicLocalDatastore(str(studies), extensions=["*.nii.gz"], auto_reload=False)
        stats = trainer({"max_steps": args.train_steps}, ds)
        published = load_prnet(files.published, device)
        models, cfg = published.localizer, published.config
        hist = stats["history"]
        fine = "fine_err_mm" in hist[-1]
        lines += ["## (d) Training throughput", "",
                  f"{stats['step']} steps × {cfg.batch_pairs} pairs per model ({'coarse + fine' if fine else 'coarse only'}), "
                  f"patch {cfg.patch_size}, base {cfg.base_channels} channels, lr {cfg.lr}, on {device}: "
                  f"**{np.median([h['pairs_per_s'] for h in hist]):.1f} pairs/s** (median over checkpoints; "
                  f"{stats['elapsed_s']:.0f} s in this run). Mean offset error per axis in the last 50 steps: "
                  f"coarse {hist[-1]['err_mm']:.1f} mm (first 50: {hist[0]['err_mm']:.1f} mm)"
                  + (f", fine {hist[-1]['fine_err_mm']:.1f} mm (first 50: {hist[0]['fine_err_mm']:.1f} mm; "
                     f"pairs within ±{cfg.fine_max_offset_mm:.0f} mm)" if fine else "") + ".", ""]
    cohort_cfg = load_yaml(str(REPO / "configs" / "sample_cohort.yaml"))
    deform = DeformConfig.from_cohort_config(cohort_cfg["deformation"], cohort_cfg["intensity"])

    # (a) + (b): propagate once per query, then threshold at each tau
    prec = {t: {n: [] for n in names} for t in TAUS}
    kept = {t: {n: [] for n in names} for t in TAUS}
    dices = {t: {n: [] for n in organs} for t in TAUS}
    ref_dices = {k: {n: [] for n in organs} for k in ("oracle", "identity")}
    loc_err = {k: [] for k in ("identity", "register_identity", "prnet_none", "prnet_affine", "prnet")}  # mm, fg points
    # ablations at the default τ: without the spatial regularisation (Eq. 4 and DFD only), and with the
    # affine map but without its intensity refinement
    ablations = {}
    if prop.regularize != "none":
        ablations["prnet_none"] = replace(prop, regularize="none")
        if prop.register_steps:
            ablations["prnet_affine"] = replace(prop, register_steps=0)
    dices_abl = {k: {n: [] for n in organs} for k in ablations}
    identity_map = np.vstack([np.eye(3), np.zeros(3)])
    prelabel_s = []
    encodings: dict = {}  # support encodings shared across queries, as prnet_prelabel does in a batch
    support_hu = support.array.astype(np.float32)
    for qid in ([] if args.timing_only else queries):
        q = read_volume(str(studies / f"{qid}.nii.gz"))
        gt = np.rint(read_volume(str(truth / f"{qid}.nii.gz")).array).astype(np.int64)
        q_hu = q.array.astype(np.float32)
        t0 = time.perf_counter()
        res = propagate_support(models, support_hu, scribbles, names, q_hu, q.spacing, window, prop, sampling, device,
                                encodings=encodings, support_spacing=support.spacing)
        prelabel_s.append(time.perf_counter() - t0)
        res_abl = {}
        for k, variant in ablations.items():
            res_abl[k] = propagate_support(models, support_hu, scribbles, names, q_hu, q.spacing, window, variant, sampling,
                                           device, encodings=encodings, support_spacing=support.spacing)
            pseudo_mask(res_abl[k], bg_id, q_hu, q.spacing, geos)
            for name, cid in organs.items():
                dices_abl[k][name].append(dice(res_abl[k].label == cid, gt == cid) if res_abl[k].label is not None else 0.0)
        # the intensity refinement alone, started from the identity (no PRNet)
        registered = refine_affine(normalize_intensity(support_hu, *window), normalize_intensity(q_hu, *window), identity_map,
                                   support.spacing, q.spacing, prop.register_steps, prop.register_levels_mm,
                                   device=device) if prop.register_steps else None
        # the true correspondence: the pseudo-subject's warp, recomputed from the cohort's seed
        true = true_locations(res.points, qid, q.array.shape, deform, int(cohort_cfg["seed"]))
        for cid, pts in res.points.items():
            if cid != bg_id:
                loc_err["identity"].append(np.linalg.norm((pts - true[cid]) * q.spacing, axis=1))
                loc_err["prnet"].append(np.linalg.norm((res.propagation[cid].located - true[cid]) * q.spacing, axis=1))
                for k, r in res_abl.items():
                    loc_err[k].append(np.linalg.norm((r.propagation[cid].located - true[cid]) * q.spacing, axis=1))
                if registered is not None:
                    loc_err["register_identity"].append(np.linalg.norm((apply_affine(registered, pts) - true[cid]) * q.spacing, axis=1))
        for ref in ref_dices:
            located = true if ref == "oracle" else res.points
            r = Prelabel(label=None, propagation={c: Propagation(p, np.ones(len(p)), np.ones(len(p), bool)) for c, p in located.items()})
            pseudo_mask(r, bg_id, q_hu, q.spacing, geos)
            for name, cid in organs.items():
                ref_dices[ref][name].append(dice(r.label == cid, gt == cid) if r.label is not None else 0.0)
        for tau in TAUS:
            for name, cid in names.items():
                pr = res.propagation.get(cid)
                if pr is None:
                    continue
                keep = pr.sim > tau
                hit = gt[tuple(pr.located[keep].T)]
                want = 0 if cid == bg_id else cid
                kept[tau][name].append(int(keep.sum()))
                if keep.any():
                    prec[tau][name].append(float(np.mean(hit == want)))
            pseudo_mask(res, bg_id, q_hu, q.spacing, geos, tau)
            for name, cid in organs.items():
                dices[tau][name].append(dice(res.label == cid, gt == cid) if res.label is not None else 0.0)
        print(f"{qid}: propagated in {prelabel_s[-1]:.1f} s; Dice at tau=0.5: "
              + ", ".join(f"{n} {dices[0.5][n][-1]:.2f}" for n in organs), flush=True)

    def avg(x):
        return float(np.mean(x)) if x else float("nan")

    if not args.timing_only:
        lines += ["## (a) Precision of propagated points (kept points in the right class) and points kept per study", "",
                  "| class | " + " | ".join(f"precision τ={t}" for t in TAUS) + " | " + " | ".join(f"kept τ={t}" for t in TAUS) + " |",
                  "|---|" + "---|" * (2 * len(TAUS))]
        for name in names:
            lines.append(f"| {name} | " + " | ".join(f"{avg(prec[t][name]):.3f}" for t in TAUS) + " | "
                         + " | ".join(f"{avg(kept[t][name]):.0f}" for t in TAUS) + " |")
        fg_prec = {t: avg([v for n in organs for v in prec[t][n]]) for t in TAUS}
        lines += ["| **foreground (mean)** | " + " | ".join(f"**{fg_prec[t]:.3f}**" for t in TAUS) + " | | | |", ""]
        err = {k: np.concatenate(v) for k, v in loc_err.items() if v}
        lines += ["Localisation error of the foreground support points against the true correspondence (mm, all studies):", "",
                  "| located by | median | mean | 90th percentile |", "|---|---|---|---|"]
        for k, label in (("identity", "same voxel index (no propagation)"),
                         ("register_identity", "intensity registration started from the identity (no PRNet)"),
                         ("prnet_none", "PRNet (Eq. 4), each point on its own"),
                         ("prnet_affine", "PRNet (Eq. 4), regularize: affine, no intensity refinement"),
                         ("prnet", f"PRNet (Eq. 4), regularize: {prop.regularize}"
                                   + (f", intensity refinement ({prop.register_steps} steps)" if prop.register_steps else ""))):
            if k in err:
                lines.append(f"| {label} | {np.median(err[k]):.1f} | {err[k].mean():.1f} | {np.percentile(err[k], 90):.1f} |")
        ref_titles = ["true locations (oracle)", "same voxel index"]
        for k, title in (("prnet_none", "regularize: none"), ("prnet_affine", "affine, no refinement")):
            if k in dices_abl:
                ref_dices[k] = dices_abl[k]
                ref_titles.append(f"τ={prop.tau}, {title}")
        lines += ["", "## (b) Pseudo-mask Dice per organ (GeoS from the kept points, whole volume)", "",
                  "| organ | " + " | ".join([f"τ={t}" for t in TAUS] + ref_titles) + " |",
                  "|---|" + "---|" * (len(TAUS) + len(ref_titles))]
        for name in organs:
            lines.append(f"| {name} | " + " | ".join(f"{avg(dices[t][name]):.3f}" for t in TAUS) + " | "
                         + " | ".join(f"{avg(ref_dices[k][name]):.3f}" for k in ref_dices) + " |")
        lines += ["| **mean** | " + " | ".join(f"**{avg([avg(dices[t][n]) for n in organs]):.3f}**" for t in TAUS) + " | "
                  + " | ".join(f"**{avg([avg(ref_dices[k][n]) for n in organs]):.3f}**" for k in ref_dices) + " |", "",
                  "The oracle column puts every support point at its true location and keeps it: the most any "
                  "propagation can give through this GeoS. The same-voxel-index column uses no propagation at all (the "
                  "pseudo-subjects are warps of the support, so the same index is already near).", ""]

    # (c) batched vs per-point loop, on the same points and for the whole support, cold and warm
    s01 = normalize_intensity(support_hu, *window)
    q = read_volume(str(studies / f"{queries[0]}.nii.gz"))
    q01 = normalize_intensity(q.array.astype(np.float32), *window)
    pts = np.concatenate(list(sampling.points(scribbles, names).values()))
    rng = np.random.default_rng(0)
    sub = pts[rng.choice(len(pts), size=min(args.timing_points, len(pts)), replace=False)]

    def timed(fn) -> float:
        """The median wall time (s) of ``--timing-repeats`` runs of ``fn``."""
        runs = []
        for _ in range(max(1, args.timing_repeats)):
            t0 = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - t0)
        return float(np.median(runs))

    kw = dict(device=device, support_spacing=support.spacing)
    rows = []
    for precision in args.precisions:  # one table, a row group per precision
        cfg = replace(prop, precision=precision)

        def run_loop():
            for pt in sub:
                propagate(models, s01, pt[None], q01, q.spacing, replace(cfg, batch_size=1, register_steps=0), device=device)

        loop = timed(run_loop)
        batched = timed(lambda: propagate(models, s01, sub, q01, q.spacing, cfg, **kw))
        cold = timed(lambda: propagate(models, s01, pts, q01, q.spacing, cfg, **kw))  # the support encoded too
        enc = encode_support(models, s01, pts, cfg.batch_size, device, cfg.precision, fit_subset(len(pts), cfg))
        warm = timed(lambda: propagate(models, s01, pts, q01, q.spacing, cfg, encoded_support=enc, **kw))
        loop_ms = 1000 * loop / len(sub)
        loop_all = loop_ms * len(pts) / 1000
        name = f"`{precision}` ({'bf16' if bf16_enabled(precision, device) else 'fp32'})"
        rows += [f"| {name} | per-point loop (one call per point, as the reference code; support encoding included; no intensity "
                 f"registration) | {len(sub)} | {loop:.2f} | {loop_ms:.1f} | 1 |",
                 f"| {name} | batched, the same points | {len(sub)} | {batched:.2f} | {1000 * batched / len(sub):.1f} | {loop / batched:.1f}× |",
                 f"| {name} | batched, the whole support, cold (support encoded in the call; ≤ {prop.fit_points or len(pts)} located "
                 f"to fit the affine map) | {len(pts)} | {cold:.2f} | {1000 * cold / len(pts):.1f} | **{loop_all / cold:.1f}×** |",
                 f"| {name} | batched, the whole support, warm (support encodings cached, as `prnet_prelabel` keeps them across "
                 f"requests and the studies of a batch) | {len(pts)} | {warm:.2f} | {1000 * warm / len(pts):.1f} | **{loop_all / warm:.1f}×** |"]
        print(rows[-4:], flush=True)
    lines += ["## (c) Propagation time, batched vs per-point loop (one study)", "",
              f"Median of {max(1, args.timing_repeats)} runs each, query {queries[0]}; {machine()}. The batched rows include the "
              f"intensity registration and the mirror check; \"loop / this\" for the whole support extrapolates the loop from "
              f"its {len(sub)} timed points ({len(pts)} points at stride {stride}, per class {class_strides or 'none'}).", "",
              "| precision (here) | variant | points | seconds | ms / point | loop / this |", "|---|---|---|---|---|---|", *rows, "",
              "The cohort run above (support encoded once) took a "
              + (f"median {np.median(prelabel_s):.1f} s per study." if prelabel_s else "(not run: --timing-only)."), ""]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    (args.out / "prnet.md").write_text(text)
    print(f"written to {args.out / 'prnet.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
