#!/usr/bin/env python
"""Benchmark: scribbles_geos vs MONAI Label's bundled HistogramBasedGraphCut, through the real server.

    .venv/bin/python scripts/bench_scribbles.py [--cohort sample-data/cohort] [--studies N] [--out benchmarks-out]

Starts the app on the sample cohort with both tasks (``--conf scribbles_baseline true``), simulates
per-organ scribbles on each study (foreground strokes on 3 axial slices, background rings around the organ on those slices; see
``lib/data/scribbles.py``), sends the SAME scribbles to both exactly as 3D Slicer does
(``MONAILabelClient.infer`` with the volume in field ``label`` and ``label_info``), with and without a
ROI box (the organ's bounding box + 2 voxels), and reports per-organ Dice against the held ground
truth, end-to-end latency (median / p95) and the first request's latency after start.
Prints the tables and writes them to ``<out>/scribbles.md``.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from lib.data.scribbles import ScribbleConfig, simulate_scribbles
from lib.evaluation.metrics import dice
from lib.geos import GeoSConfig, geos_segment
from lib.io import read_volume, write_like
from lib.settings import app_settings
from lib.workflow.server import start_server, stop_server

REPO = Path(__file__).resolve().parents[1]

METHODS = {"ours (scribbles_geos)": "scribbles_geos", "bundled (HistogramBasedGraphCut)": "scribbles_histogram_graphcut"}
BG, FG = 2, 3


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cohort", type=Path, default=REPO / "sample-data" / "cohort")
    p.add_argument("--studies", type=int, default=0, help="use only the first N studies (0 = all)")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks-out")
    p.add_argument("--roi-margin", type=int, default=2, help="ROI = organ bounding box + this many voxels")
    args = p.parse_args()

    studies_dir, truth_dir = args.cohort / "studies", args.cohort / "ground_truth"
    if not studies_dir.exists():
        sys.exit(f"no cohort at {args.cohort}: run  .venv/bin/python sample-data/build_cohort.py")
    names = json.loads((truth_dir / "labels.json").read_text())
    ids = sorted(p.name[: -len(".nii.gz")] for p in studies_dir.glob("*.nii.gz"))
    ids = ids[: args.studies] if args.studies else ids
    work = args.out / "bench_scribbles_work"
    work.mkdir(parents=True, exist_ok=True)

    server = start_server(studies_dir, work, conf={"scribbles_baseline": "true"})
    print(f"server up in {server.started_s:.1f} s at {server.url}", flush=True)
    client = server.client()
    rows = []  # (study, organ, roi?, method, dice, seconds)
    ours_cfg = app_settings().geos
    ablation = {  # in-process, same scribbles and ROI: what each addition to plain GeoS buys
        "plain GeoS (nearest seed, 2 passes)": GeoSConfig(iterations=2, intensity_weight=0.0, largest_component=False,
                                                          fill_holes=False, working_spacing_mm=0.0),
        "+ components / holes, working 2 mm (ours)": ours_cfg,
        "+ intensity model β 1.5": replace(ours_cfg, intensity_weight=1.5),
        "+ median filter 9 mm": replace(ours_cfg, median_filter_mm=9.0),
        "+ opening 3 mm": replace(ours_cfg, opening_mm=3.0),
        "+ β 1.5, median 9 mm, opening 3 mm (PRNet's pseudo masks)": replace(ours_cfg, intensity_weight=1.5,
                                                                              median_filter_mm=9.0, opening_mm=3.0),
    }
    ablation_rows = []  # (organ, variant, dice)
    first = {}  # method -> (first request after start, median of 5 repeats of the same request)
    try:
        for sid in ids:
            image = read_volume(str(studies_dir / f"{sid}.nii.gz"))
            gt = read_volume(str(truth_dir / f"{sid}.nii.gz")).array
            for organ, oid in names.items():
                s = simulate_scribbles(gt, image.array.astype(np.float32), {organ: oid}, 250, ScribbleConfig())
                slicer = np.where(s == oid, FG, np.where(s == 250, BG, 0)).astype(np.uint8)
                f = write_like(slicer, str(studies_dir / f"{sid}.nii.gz"), str(work / f"{sid}_{organ}.nii.gz"))
                idx = np.argwhere(gt == oid)
                lo = np.maximum(idx.min(0) - args.roi_margin, 0)
                hi = np.minimum(idx.max(0) + 1 + args.roi_margin, gt.shape)
                roi = [int(v) for pair in zip(lo, hi) for v in pair]
                for variant, vcfg in ablation.items():
                    pred, _ = geos_segment(image.array.astype(np.float32), {1: s == oid}, s == 250, image.spacing, vcfg, roi)
                    ablation_rows.append((organ, variant, dice(pred == 1, gt == oid)))
                info = [{"name": organ, "id": 1}, {"name": "background_scribbles", "id": BG},
                        {"name": "foreground_scribbles", "id": FG}]
                for use_roi in (True, False):
                    for method, model in METHODS.items():
                        params = {"label_info": info, "selected_label_name": organ, "roi": roi if use_roi else []}
                        if method not in first:  # the very first request after start, then the same again
                            times = []
                            for _ in range(6):
                                t = time.perf_counter()
                                Path(client.infer(model, sid, params, label_in=f)[0]).unlink(missing_ok=True)
                                times.append(time.perf_counter() - t)
                            first[method] = (times[0], float(np.median(times[1:])))
                        t = time.perf_counter()
                        result, _ = client.infer(model, sid, params, label_in=f)
                        dt = time.perf_counter() - t
                        pred = read_volume(result).array > 0
                        Path(result).unlink(missing_ok=True)
                        rows.append((sid, organ, use_roi, method, dice(pred, gt == oid), dt))
                print(f"{sid} {organ}: " + ", ".join(f"{r[3].split()[0]}{'+roi' if r[2] else ''} {r[4]:.3f}/{r[5]:.2f}s" for r in rows[-4:]), flush=True)
    finally:
        stop_server(server)

    lines = ["# Interactive scribbles: GeoS vs MONAI Label's HistogramBasedGraphCut", "",
             f"Machine: {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores, CPU only; "
             f"studies: {len(ids)} of the sample cohort (subject A + deformed copies, 122×101×112 at 3 mm); "
             "ground truth: TotalSegmentator output (silver standard); deformed copies of one subject overestimate accuracy.",
             "Scribbles: per organ, medial-axis strokes on 3 axial slices + background rings around the organ on each (identical for both methods); "
             f"ROI = organ bounding box + {args.roi_margin} voxels.", ""]
    for use_roi in (True, False):
        lines += [f"## Dice per organ, {'with' if use_roi else 'without'} ROI", "",
                  "| organ | " + " | ".join(METHODS) + " | difference |", "|---|---|---|---|"]
        means = {m: [] for m in METHODS}
        for organ in names:
            vals = {m: float(np.mean([r[4] for r in rows if r[1] == organ and r[2] == use_roi and r[3] == m])) for m in METHODS}
            for m in METHODS:
                means[m].append(vals[m])
            a, b = vals.values()
            lines.append(f"| {organ} | {a:.3f} | {b:.3f} | {a - b:+.3f} |")
        a, b = (float(np.mean(v)) for v in means.values())
        lines += [f"| **mean** | **{a:.3f}** | **{b:.3f}** | {a - b:+.3f} |", ""]
    lines += ["## GeoS ablation (in-process, same scribbles, with ROI)", "", "| organ | " + " | ".join(ablation) + " |",
              "|---|" + "---|" * len(ablation)]
    for organ in list(names) + ["**mean**"]:
        vals = [np.mean([r[2] for r in ablation_rows if r[1] == v and (r[0] == organ or organ == "**mean**")]) for v in ablation]
        lines.append(f"| {organ} | " + " | ".join(f"{x:.3f}" for x in vals) + " |")
    lines += [""]
    lines += ["## End-to-end latency (s, MONAILabelClient.infer: upload, compute, download)", "",
              "| method | ROI | median | p95 | n |", "|---|---|---|---|---|"]
    med = {}
    for m in METHODS:
        for use_roi in (True, False):
            ts = np.array([r[5] for r in rows if r[3] == m and r[2] == use_roi])
            med[(m, use_roi)] = float(np.median(ts))
            lines.append(f"| {m} | {'yes' if use_roi else 'no'} | {np.median(ts):.3f} | {np.percentile(ts, 95):.3f} | {len(ts)} |")
    ours, base = METHODS
    lines += ["", f"Latency ratio bundled / ours: {med[(base, True)] / med[(ours, True)]:.1f}× with ROI, "
              f"{med[(base, False)] / med[(ours, False)]:.1f}× without.", "",
              "## First request after start (s)", "",
              f"The first request of each task after the server started ({ids[0]}, {next(iter(names))}, with ROI), "
              "against the median of 5 repeats of the same request.", "",
              "| method | first request | median of repeats | first / median |", "|---|---|---|---|"]
    for m in METHODS:
        f0, fm = first[m]
        lines.append(f"| {m} | {f0:.3f} | {fm:.3f} | {f0 / fm:.2f} |")
    lines += ["", f"Server start-up (process start to first /info answer): {server.started_s:.1f} s."]
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "scribbles.md").write_text(text)
    print(f"written to {args.out / 'scribbles.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
