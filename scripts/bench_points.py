#!/usr/bin/env python
"""One OHIF click per organ: ``points_geos``'s GeoS with the whole crop shell as background vs a shell
that spares voxels looking like the clicked structure (``points.border_similarity_sd``).

    .venv/bin/python scripts/bench_points.py [--studies subject_a pseudo_02 pseudo_05] [--sd 0 1 1.5 2]

The click is the organ's deepest voxel (largest distance to its boundary), seeded as a 4 mm ball,
no background click, the app's GeoS defaults with the 40 mm margin of ``points``. Dice against the
whole organ, and against the part of the organ within 40 mm of the click (what one click can reach).
Writes ``benchmarks-out/points.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from lib.atomic import atomic_write_text
from lib.evaluation.metrics import dice
from lib.geos import geos_segment, seeds_from_points
from lib.settings import app_settings

REPO = Path(__file__).resolve().parents[1]

COHORT = REPO / "sample-data" / "cohort"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--studies", nargs="+", default=["subject_a", "pseudo_02", "pseudo_05"])
    ap.add_argument("--sd", nargs="+", type=float, default=[0.0, 1.0, 1.5, 2.0])
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks-out")
    args = ap.parse_args(argv)
    conf = app_settings()
    base = replace(conf.geos, margin_mm=float(conf.points.margin_mm))
    radius = float(conf.points.radius_mm)
    names = json.loads((COHORT / "ground_truth" / "labels.json").read_text())
    scores: dict[float, dict[str, list[tuple[float, float]]]] = {sd: {n: [] for n in names} for sd in args.sd}
    for study in args.studies:
        img = nib.load(str(COHORT / "studies" / f"{study}.nii.gz"))
        vol, spacing = np.asarray(img.dataobj).astype(np.float32), tuple(float(z) for z in img.header.get_zooms()[:3])
        truth = np.asarray(nib.load(str(COHORT / "ground_truth" / f"{study}.nii.gz")).dataobj).astype(np.int64)
        grid = np.stack(np.meshgrid(*[np.arange(s) for s in vol.shape], indexing="ij"), -1)
        for organ, oid in names.items():
            mask = truth == oid
            click = np.unravel_index(np.argmax(ndimage.distance_transform_edt(mask, sampling=spacing)), mask.shape)
            reach = mask & (np.linalg.norm((grid - np.array(click)) * np.array(spacing), axis=-1) <= base.margin_mm)
            fg = seeds_from_points(vol.shape, [list(click)], spacing, radius)
            for sd in args.sd:
                seg = geos_segment(vol, {1: fg}, np.zeros_like(fg), spacing, replace(base, border_similarity_sd=sd))[0] > 0
                scores[sd][organ].append((dice(seg, mask), dice(seg, reach)))
    head = "| border_similarity_sd | " + " | ".join(names) + " | mean | mean within reach |"
    rows = [head, "|" + "---|" * (len(names) + 3)]
    for sd in args.sd:
        per = {n: np.mean([d for d, _ in v]) for n, v in scores[sd].items()}
        reach_mean = np.mean([r for v in scores[sd].values() for _, r in v])
        label = f"{sd:g}" + (" (whole shell)" if sd == 0 else "") + (" ← default" if sd == conf.points.border_similarity_sd else "")
        rows.append(f"| {label} | " + " | ".join(f"{per[n]:.2f}" for n in names) + f" | {np.mean(list(per.values())):.3f} | {reach_mean:.3f} |")
    text = (f"# points_geos: one click per organ, no background click ({', '.join(args.studies)})\n\n"
            "Dice against the whole organ, mean over the studies; last column: against the organ within the "
            f"{base.margin_mm:g} mm one click can reach.\n\n" + "\n".join(rows) + "\n")
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "points.md", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
