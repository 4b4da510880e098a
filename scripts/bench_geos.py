#!/usr/bin/env python
"""Interactive GeoS on the development set: every structure of every scan, Slicer's scribbles and OHIF's
one click, settings chosen by leave-one-subject-out, end to end through the real server.

    .venv/bin/python scripts/bench_geos.py [--sections grid server oracle] [--before REV] [--out benchmarks-out]

Cases (``lib/data/interactive.py``): per structure, medial-axis strokes on 3 axial slices and a background
ring on each (sized in mm), ROI = the structure's box + 8 voxels, one click at its deepest voxel.

- ``grid``: in-process, the same scribbles and ROI for plain GeoS (two seed sets, 2 raster passes, no
  additions) and each candidate setting; the defaults are chosen by leave-one-subject-out (a subject and
  the scans re-acquired from it form one group); the MR window ablation. The 0.7 mm copy (50 M voxels)
  is left out of the grid (its stored-voxel runs take minutes) and kept for ``server``.
- ``server``: ``scribbles_geos`` (``MONAILabelClient.infer`` with the scribbles volume and label_info, as
  Slicer sends it) and ``points_geos`` (one click) on every case, for this checkout and (``--before``) a
  ``git worktree`` of an older one: Dice, end-to-end latency (median, p95), the first request after start, and
  the first request on each study ``--think-s`` after the viewer downloaded it (``GET /datastore/image``).
- ``passes``: the default setting with 2, 3, 4 and 6 raster-scan passes against plain GeoS (2 passes): mean
  Dice per subject, leave-one-subject-out, the structures below plain GeoS (0.7 mm copy left out, as in ``grid``).
- ``oracle``: distance accuracy against the exact geodesic (Dijkstra on the voxel graph) and time, per
  raster-scan passes and working voxel size, on three crops.

Writes ``<out>/geos.md`` (and ``geos.json``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import numpy as np

from lib.atomic import atomic_write_text
from lib.data.interactive import BACKGROUND, devset_cases
from lib.evaluation.metrics import dice, leave_one_group_out
from lib.evaluation.tables import machine
from lib.geos import (
    GeoSConfig,
    block_reduce,
    exact_geodesic_distance,
    geodesic_distance,
    geos_segment,
    working_factors,
)
from lib.intensity import normalize_intensity, seed_window, study_window
from lib.io import read_volume, write_like
from lib.settings import app_settings
from lib.workflow.server import start_server, stop_server

REPO = Path(__file__).resolve().parents[1]

DEVSET = REPO / "sample-data" / "devset"
PLAIN = GeoSConfig(iterations=2, intensity_weight=0.0, largest_component=False, fill_holes=False,
                   roi_border_background=False)
BG, FG = 2, 3  # Slicer's scribble ids with one label


def window_for(case, cfg: GeoSConfig, mode: str = "seed"):
    """The intensity window of a case as the task builds it (CT: the HU window; MR: ``mode``)."""
    if case.modality == "CT" or mode == "hu":
        return None
    (lo, hi), _, _ = study_window(case.image.array, cfg.window_hu, cfg.window_out, "MR")
    if mode == "study":
        return (lo, hi), (0.0, 1.0)
    half = float(mode[4:]) if mode.startswith("seed") and len(mode) > 4 else cfg.mr_window_half_width
    return seed_window((lo, hi), case.image.array[case.foreground], half)


def run_inprocess(case, cfg: GeoSConfig, mode: str = "seed") -> tuple[float, float]:
    t = time.perf_counter()
    pred, _ = geos_segment(case.image.array.astype(np.float32), {1: case.foreground}, case.background,
                           case.image.spacing, cfg, case.roi, window=window_for(case, cfg, mode))
    return dice(pred == 1, case.truth), time.perf_counter() - t


def grid(cases, base: GeoSConfig) -> tuple[list[str], dict]:
    settings = {"plain GeoS": PLAIN}
    for ws in (0.0, 2.0, 3.0):
        for beta in (0.0, 0.5, 1.5):
            settings[f"β {beta:g}, working {ws:g} mm"] = replace(base, intensity_weight=beta, working_spacing_mm=ws,
                                                                working_voxels=0)
    scores = {k: {} for k in settings}
    times = {k: {} for k in settings}
    groups, info = {}, {}
    for c in cases:
        key = (c.scan, c.structure)
        groups[key], info[key] = c.group, c.modality
        for name, cfg in settings.items():
            scores[name][key], times[name][key] = run_inprocess(c, cfg)
        print(f"{c.scan} {c.structure}: " + ", ".join(f"{n.split(',')[0] if n.startswith('plain') else n} "
              f"{scores[n][key]:.3f}" for n in settings), flush=True)
    candidates = {k: v for k, v in scores.items() if k != "plain GeoS"}
    loso = leave_one_group_out(candidates, groups)
    lines = ["## Settings on the development set (in-process, same scribbles and ROI)", "",
             f"Machine: {machine()}. Mean Dice per scan type; compute time median / p95 (s). "
             "Leave-one-subject-out picks each subject's setting from the other subjects.", ""]
    kinds = sorted({(c.group, c.modality) for c in cases})
    head = "| setting | " + " | ".join(f"{g} ({m})" for g, m in kinds) + " | mean over subjects | median s | p95 s |"
    lines += [head, "|---" * (len(kinds) + 4) + "|"]
    for name in settings:
        per = [np.mean([v for k, v in scores[name].items() if groups[k] == g]) for g, _ in kinds]
        ts = np.array(list(times[name].values()))
        lines.append(f"| {name} | " + " | ".join(f"{x:.3f}" for x in per) +
                     f" | {np.mean(per):.3f} | {np.median(ts):.3f} | {np.percentile(ts, 95):.3f} |")
    lines += ["", "Leave-one-subject-out: " + "; ".join(f"{g} → {loso['chosen'][g]} ({loso['score'][g]:.3f})"
                                                        for g in sorted(loso["chosen"])),
              f"; mean over subjects {loso['mean']:.3f}.", ""]
    return lines, {"scores": {k: {f"{a}/{b}": v for (a, b), v in d.items()} for k, d in scores.items()},
                   "loso": loso}


def passes(cases, base: GeoSConfig, counts=(2, 3, 4, 6)) -> tuple[list[str], dict]:
    """Raster-scan passes of the default setting against plain GeoS (itself 2 passes): mean Dice per subject,
    leave-one-subject-out, and the structures that fall below plain GeoS."""
    settings = {f"{n} passes": replace(base, iterations=n) for n in counts}
    scores = {k: {} for k in ["plain GeoS", *settings]}
    times = {k: {} for k in settings}
    groups = {}
    for c in cases:
        key = (c.scan, c.structure)
        groups[key] = c.group
        scores["plain GeoS"][key] = run_inprocess(c, PLAIN)[0]
        for name, cfg in settings.items():
            scores[name][key], times[name][key] = run_inprocess(c, cfg)
    names = sorted(set(groups.values()))
    loso = leave_one_group_out({k: scores[k] for k in settings}, groups)
    lines = ["## Raster-scan passes (in-process, the default setting otherwise)", "",
             "| setting | " + " | ".join(names) + " | mean over subjects | structures below plain GeoS | their total "
             "| median s |", "|---" * (len(names) + 5) + "|"]
    for name, d in scores.items():
        per = [np.mean([v for k, v in d.items() if groups[k] == g]) for g in names]
        below = [k for k, v in d.items() if v < scores["plain GeoS"][k] - 1e-9]
        total = sum(d[k] - scores["plain GeoS"][k] for k in below)
        t = f"{np.median(list(times[name].values())):.3f}" if name in times else ""
        lines.append(f"| {name} | " + " | ".join(f"{x:.3f}" for x in per) + f" | {np.mean(per):.3f} | {len(below)} "
                     f"| {total:+.3f} | {t} |")
    lines += ["", "Leave-one-subject-out: " + "; ".join(f"{g} → {loso['chosen'][g]} ({loso['score'][g]:.3f})"
                                                        for g in names) + f"; mean {loso['mean']:.3f}.", ""]
    return lines, {"scores": {k: {f"{a}/{b}": v for (a, b), v in d.items()} for k, d in scores.items()}, "loso": loso}


def mr_windows(cases, cfg: GeoSConfig) -> list[str]:
    modes = ["hu", "study", "seed0.1", "seed0.2", "seed0.3"]
    mr = [c for c in cases if c.modality == "MR"]
    if not mr:
        return []
    res = {m: {(c.scan, c.structure): run_inprocess(c, cfg, m)[0] for c in mr} for m in modes}
    groups = {(c.scan, c.structure): c.group for c in mr}
    loso = leave_one_group_out(res, groups)
    names = sorted(set(groups.values()))
    lines = ["## MR intensity window (in-process, the default settings)", "",
             "hu: the CT window applied to MR values; study: the study's robust range → [0, 1]; seedH: "
             "the foreground seeds' median ± H × that range → 0.2…0.8 (`geos.mr_window_half_width`).", "",
             "| window | " + " | ".join(names) + " | mean |", "|---" * (len(names) + 2) + "|"]
    for m in modes:
        per = [np.mean([v for k, v in res[m].items() if groups[k] == g]) for g in names]
        lines.append(f"| {m} | " + " | ".join(f"{x:.3f}" for x in per) + f" | {np.mean(per):.3f} |")
    lines += ["", "Leave-one-subject-out: " + "; ".join(f"{g} → {loso['chosen'][g]} ({loso['score'][g]:.3f})"
                                                        for g in names), ""]
    return lines


def server_runs(cases, checkouts: dict[str, Path], work: Path, think_s: float = 2.0) -> tuple[list[str], dict]:
    studies = work / "studies"
    studies.mkdir(parents=True, exist_ok=True)
    files = {}
    for c in cases:
        link = studies / c.image_path.name
        if not link.exists():
            os.symlink(c.image_path, link)
        f = work / "scribbles" / f"{c.scan}_{c.structure}.nii.gz"
        f.parent.mkdir(exist_ok=True)
        slicer = np.where(c.scribbles == 1, FG, np.where(c.scribbles == BACKGROUND, BG, 0)).astype(np.uint8)
        files[(c.scan, c.structure)] = write_like(slicer, str(c.image_path), str(f))
    results = {}
    for label, repo in checkouts.items():
        server = start_server(studies, work / label.split()[0], repo=repo)
        client = server.client()
        rows = []
        try:
            first, opened = None, set()
            for c in cases:
                image_id = c.image_path.name.split(".")[0]
                if image_id not in opened:  # the viewer opens the study (Slicer downloads it), then the user draws
                    opened.add(image_id)
                    with urllib.request.urlopen(f"{server.url}/datastore/image?image={image_id}", timeout=300) as r:
                        r.read()
                    time.sleep(think_s)
                    new_study = True
                info = [{"name": c.structure, "id": 1}, {"name": "background_scribbles", "id": BG},
                        {"name": "foreground_scribbles", "id": FG}]
                params = {"label_info": info, "selected_label_name": c.structure, "roi": c.roi}
                t = time.perf_counter()
                out, _ = client.infer("scribbles_geos", image_id, params, label_in=files[(c.scan, c.structure)])
                dt = time.perf_counter() - t
                d = dice(read_volume(out).array > 0, c.truth)
                Path(out).unlink(missing_ok=True)
                t = time.perf_counter()
                out, _ = client.infer("points_geos", image_id, {"foreground": [c.click], "background": []})
                dp = time.perf_counter() - t
                p = dice(read_volume(out).array > 0, c.truth)
                Path(out).unlink(missing_ok=True)
                if first is None:
                    first = dt
                rows.append({"scan": c.scan, "structure": c.structure, "group": c.group, "scribbles": d,
                             "scribbles_s": dt, "points": p, "points_s": dp, "first_on_study": new_study})
                new_study = False
                print(f"[{label}] {c.scan} {c.structure}: scribbles {d:.3f} {dt:.2f}s, click {p:.3f} {dp:.2f}s", flush=True)
        finally:
            stop_server(server)
        results[label] = {"rows": rows, "first_s": first}
    labels = list(results)
    lines = ["## End to end through the server (MONAILabelClient, as Slicer and OHIF send)", "",
             f"Machine: {machine()}. Dice per scan (mean over its structures) and latency (upload, compute, download).", "",
             "| scan | " + " | ".join(f"scribbles {lab}" for lab in labels) + " | "
             + " | ".join(f"one click {lab}" for lab in labels) + " |", "|---" * (1 + 2 * len(labels)) + "|"]
    scans = list(dict.fromkeys(r["scan"] for r in results[labels[0]]["rows"]))
    for s in scans:
        sc = [np.mean([r["scribbles"] for r in results[lab]["rows"] if r["scan"] == s]) for lab in labels]
        pt = [np.mean([r["points"] for r in results[lab]["rows"] if r["scan"] == s]) for lab in labels]
        lines.append(f"| {s} | " + " | ".join(f"{x:.3f}" for x in sc + pt) + " |")
    for key, name in (("scribbles", "scribbles"), ("points", "one click")):
        per = [np.mean([np.mean([r[key] for r in results[lab]["rows"] if r["group"] == g])
                        for g in sorted({r["group"] for r in results[lab]["rows"]})]) for lab in labels]
        lines.append(f"| **mean over subjects, {name}** | " + " | ".join(f"{x:.3f}" for x in per) + " |")
    lines += ["", f"First request on a study: the scribbles request {think_s:g} s (the annotator drawing) after the viewer "
              "downloaded the study (`GET /datastore/image`, as Slicer does after Next Sample), median and max over the "
              "studies.", "",
              "| checkout | task | median s | p95 s | max s | first request after start s | first request on a study: "
              "median s | max s |", "|---|---|---|---|---|---|---|---|"]
    for lab in labels:
        for key in ("scribbles", "points"):
            ts = np.array([r[f"{key}_s"] for r in results[lab]["rows"]])
            first = f"{results[lab]['first_s']:.3f}" if key == "scribbles" else ""
            on_study = np.array([r["scribbles_s"] for r in results[lab]["rows"] if r["first_on_study"]])
            per_study = f"{np.median(on_study):.3f} | {on_study.max():.3f}" if key == "scribbles" else " | "
            lines.append(f"| {lab} | {key} | {np.median(ts):.3f} | {np.percentile(ts, 95):.3f} | {ts.max():.3f} | {first} "
                         f"| {per_study} |")
    if len(labels) == 2:
        a, b = labels
        worse = [(r["scan"], r["structure"], q["scribbles"], r["scribbles"])
                 for q, r in zip(results[a]["rows"], results[b]["rows"]) if r["scribbles"] < q["scribbles"] - 0.02]
        lines += ["", f"Structures where {b} is more than 0.02 below {a} (scribbles): "
                  + (", ".join(f"{s}/{o} {x:.3f} → {y:.3f}" for s, o, x, y in worse) or "none") + "."]
    return lines + [""], results


def oracle(cases, cfg: GeoSConfig) -> list[str]:
    """Distance error against the exact geodesic on three crops, per raster passes and working size."""
    picks = [c for c in cases if (c.scan, c.structure) in {("subject_a", "liver"), ("a_08x08x5", "spleen"),
                                                           ("mr_b", "kidney_left")}]
    lines = ["## Raster scan against the exact geodesic (Dijkstra on the voxel graph)", "",
             "Foreground seeds of the case, its ROI. Error = |d − exact| / max(exact) over the crop: median and "
             "max; time of one distance map. A working grid is another metric (a step costs its length × the "
             "intensity change, so coarser voxels make an edge cost more against noise along a path): its "
             "raster scan is compared with the exact geodesic of that grid, its effect on the result is the "
             "Dice of the settings table.", "",
             "| crop | voxels | option | median error | max error | s |", "|---|---|---|---|---|---|"]
    for c in picks:
        box = tuple(slice(c.roi[2 * a], c.roi[2 * a + 1]) for a in range(3))
        w = window_for(c, cfg) or (cfg.window_hu, cfg.window_out)
        img = normalize_intensity(c.image.array[box].astype(np.float32), *w)
        seeds = c.foreground[box]
        t = time.perf_counter()
        exact = exact_geodesic_distance(img, seeds, c.image.spacing)
        te = time.perf_counter() - t
        scale = float(exact.max())
        lines.append(f"| {c.scan}/{c.structure} | {img.size} | exact (Dijkstra) | 0 | 0 | {te:.2f} |")
        for it in (1, 2, 4, 8):
            t = time.perf_counter()
            g = geodesic_distance(img, seeds, c.image.spacing, 1.0, it)
            dt = time.perf_counter() - t
            err = np.abs(g - exact) / scale
            lines.append(f"| | | GeodisTK {it} passes | {np.median(err):.4f} | {err.max():.4f} | {dt:.3f} |")
        for ws in (2.0, 3.0):
            f = working_factors(img.shape, c.image.spacing, ws)
            if max(f) == 1:
                continue
            sp = tuple(s * x for s, x in zip(c.image.spacing, f))
            ci, cs = block_reduce(img, f, "mean"), block_reduce(seeds, f, "any")
            t = time.perf_counter()
            gc = geodesic_distance(ci, cs, sp, 1.0, cfg.iterations)
            dt = time.perf_counter() - t
            ec = exact_geodesic_distance(ci, cs, sp)
            err = np.abs(gc - ec) / float(ec.max())
            lines.append(f"| | {ci.size} | working {ws:g} mm ({'×'.join(map(str, f))} blocks), {cfg.iterations} passes, "
                         f"against the exact geodesic of the working grid | {np.median(err):.4f} | {err.max():.4f} | {dt:.3f} |")
    return lines + [""]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sections", nargs="+", default=["grid", "server", "oracle"],
                    choices=["grid", "passes", "server", "oracle"])
    ap.add_argument("--before", default=None, help="git revision of the server section's baseline column")
    ap.add_argument("--scans", nargs="*", default=None)
    ap.add_argument("--think-s", type=float, default=2.0,
                    help="server: seconds from the viewer opening a study to the first request (the annotator drawing)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks-out")
    args = ap.parse_args(argv)
    if not (DEVSET / "manifest.json").exists():
        subprocess.run([sys.executable, str(REPO / "sample-data" / "build_devset.py")], check=True)
    cfg = app_settings().geos
    text = ["# Interactive GeoS on the development set", "",
            f"`scripts/bench_geos.py --sections {' '.join(args.sections)}`; machine: {machine()}; labels: "
            "TotalSegmentator's (silver standard) and pyradiomics' lesion masks.", ""]
    dump = {}
    if {"grid", "passes", "oracle"} & set(args.sections):
        cases = list(devset_cases(DEVSET, args.scans, skip_large=True))
        if "grid" in args.sections:
            lines, dump["grid"] = grid(cases, cfg)
            text += lines + mr_windows(cases, cfg)
        if "passes" in args.sections:
            lines, dump["passes"] = passes(cases, cfg)
            text += lines
        if "oracle" in args.sections:
            text += oracle(cases, cfg)
    if "server" in args.sections:
        tmp = Path(tempfile.mkdtemp(prefix="bench-geos-"))
        checkouts = {}
        try:
            if args.before:
                wt = tmp / "worktree"
                subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(wt), args.before], check=True)
                checkouts[f"before {args.before[:7]}"] = wt
            head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                  text=True).stdout.strip()
            checkouts[f"this {head}"] = REPO
            lines, dump["server"] = server_runs(list(devset_cases(DEVSET, args.scans)), checkouts, tmp, args.think_s)
            text += lines
        finally:
            if args.before:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tmp / "worktree")], check=False)
            shutil.rmtree(tmp, ignore_errors=True)
    out = "\n".join(text) + "\n"
    print(out)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "geos.md", out)
    (args.out / "geos.json").write_text(json.dumps(dump, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
