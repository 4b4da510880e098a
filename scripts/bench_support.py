#!/usr/bin/env python
"""How good can the drafts get? GeoS pseudo masks from support scribbles of growing density (issue 6).

    .venv/bin/python scripts/bench_support.py [--unet] [--run <a one-shot run's folder>] [--out benchmarks-out]

For each variant of the simulated support annotation of subject A (``lib.data.scribbles``: the cohort's
``scribbles`` settings with some keys changed, ``--variants``), every support point is put at its *true*
location in the validation study pseudo_05 and the train studies pseudo_01..04 (the cohort's own warp
field: an oracle propagation, PRNet's errors removed) and expanded with the pseudo masks' GeoS
(``prnet.prelabel.geos``). The mean Dice of those drafts is the most the GeoS stage can hand the UNet from that
annotation. With ``--unet`` the one-shot UNet (strategy `none`, the app's budget and schedule, seed 0)
also trains on each variant's drafts of the support and the train studies (the support's draft: GeoS
from its own scribbles, as the pre-labeling writes it), scored on pseudo_05 and the test studies
pseudo_06..08 after the app's fragment removal: the one-shot UNet's ceiling when PRNet makes no error.
With ``--run`` (a folder of ``scripts/run_oneshot.py``) the table also gives that run's supervised UNet,
95 % of it (issue 6's target for the one-shot UNet) and its one-shot UNet, and a second table gives the
volume of each organ relative to the truth in the run's drafts, GeoS-only masks and UNet predictions:
whether the one-shot UNet inherits the drafts' systematic over- and under-segmentation.

Ground truth: TotalSegmentator's output (a silver standard); the cohort is deformed from one subject, so
a draft's errors are nearly the same in every study. Prints the table and writes ``<out>/support.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from lib.atomic import atomic_write_text
from lib.config import from_section, load_yaml
from lib.data.labels import BACKGROUND
from lib.data.scribbles import ScribbleConfig, simulate_scribbles
from lib.evaluation.metrics import dice
from lib.evaluation.oracle import oracle_drafts, read_cohort
from lib.evaluation.split import Split, sample_split
from lib.evaluation.tables import machine, md_table
from lib.evaluation.unet import train_and_score
from lib.io import read_volume
from lib.segmentation.data import Study
from lib.settings import app_settings

REPO = Path(__file__).resolve().parents[1]

VARIANTS = [
    {},
    {"slices_per_organ": 5},
    {"slices_per_organ": 7},
    {"slices_per_organ": 1000},  # every axial slice of every organ
    {"background_ring_vox": 3},
    {"background_ring_vox": 4},
]


def report_rows(run: Path, organs: list[str]) -> list[list]:
    """Rows of the run's supervised UNet, 95 % of it and its one-shot UNet (test studies, mean per organ)."""
    stages = json.loads((run / "report.json").read_text())["stages"]

    def per_organ(stage: str) -> list[float]:
        per_study = stages[stage]["result"]["per_study"]
        return [float(np.mean([d[n] for d in per_study.values()])) for n in organs]

    sup, ours = per_organ("supervised"), per_organ("seg_none")
    blank = ["", "", "", ""]  # slices, voxels, voxels, drafts' validation
    return [["run: supervised UNet", *blank, "", "", float(np.mean(sup)), *sup],
            ["run: 95 % of it (the target)", *blank, "", "", 0.95 * float(np.mean(sup))] + [""] * len(organs),
            ["run: one-shot UNet `none`", *blank, "", "", float(np.mean(ours)), *ours]]


def volume_rows(run: Path, cohort: Path, organs: dict[str, int], split: Split) -> list[list]:
    """Per organ, predicted volume / true volume (mean over studies) of the run's drafts and predictions."""
    sources = [("drafts (train studies)", run / "datastore_oneshot" / "labels" / "original", split.train),
               ("GeoS pseudo masks only", run / "pred" / "geos_only", split.test),
               ("one-shot UNet `none`", run / "pred" / "oneshot_none", split.test),
               ("supervised UNet", run / "pred" / "supervised_none", split.test)]
    rows = []
    for name, folder, studies in sources:
        ratios = {n: [] for n in organs}
        for s in studies:
            pred = np.rint(read_volume(str(folder / f"{s}.nii.gz")).array).astype(np.int64)
            truth = np.rint(read_volume(str(cohort / "ground_truth" / f"{s}.nii.gz")).array).astype(np.int64)
            for n, c in organs.items():  # the app writes the cohort's label ids (configs/app.yaml `labels`)
                ratios[n].append(float((pred == c).sum() / max(int((truth == c).sum()), 1)))
        rows.append([name, ", ".join(studies)] + [float(np.mean(v)) for v in ratios.values()])
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cohort", type=Path, default=REPO / "sample-data" / "cohort")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks-out")
    p.add_argument("--run", type=Path, help="a one-shot run's folder (scripts/run_oneshot.py --out), for its UNets")
    p.add_argument("--unet", action="store_true", help="also train the one-shot UNet on each variant's drafts")
    p.add_argument("--variants", type=json.loads, default=VARIANTS,
                   help='JSON list of ScribbleConfig overrides, e.g. \'[{}, {"slices_per_organ": 5}]\'')
    args = p.parse_args()
    if not (args.cohort / "ground_truth").exists():
        print(f"no cohort at {args.cohort}: run  .venv/bin/python sample-data/build_cohort.py  first", file=sys.stderr)
        return 2
    conf, cohort_cfg = app_settings(), load_yaml("sample_cohort.yaml")
    split = sample_split(args.cohort)
    support, VAL, TRAIN, TEST = split.support, split.val, split.train, split.test
    info = json.loads((args.cohort / "scribbles" / "label_info.json").read_text())
    ids = {d["name"]: d["id"] for d in info}
    organs = {n: i for n, i in ids.items() if n != BACKGROUND}
    gt = {s: np.rint(read_volume(str(args.cohort / "ground_truth" / f"{s}.nii.gz")).array).astype(np.int64)
          for s in split.studies}
    image_a = read_volume(str(args.cohort / "studies" / f"{support}.nii.gz")).array.astype(np.float32)
    seg = replace(conf.segmentation, noise_strategy="none")
    if args.unet:
        images, _, _ = read_cohort(args.cohort, split.studies, conf.window)

    rows = []
    for overrides in args.variants:
        cfg = from_section(ScribbleConfig, {**cohort_cfg["scribbles"], **overrides}, "scribbles")
        scribbles = simulate_scribbles(gt[support], image_a, organs, ids[BACKGROUND], cfg).astype(np.int64)
        t0 = time.perf_counter()
        drafts = oracle_drafts(args.cohort, conf.prelabel, conf.pseudo_mask_geos, [support, *VAL, *TRAIN], scribbles)
        score = {s: {n: dice(drafts[s] == c, gt[s] == c) for n, c in organs.items()} for s in [*VAL, *TRAIN]}
        unet = ["", ""]
        if args.unet:
            studies = [Study(s, images[s], drafts[s].copy()) for s in sorted([support, *TRAIN])]
            fit = train_and_score(seg, studies, images, gt, organs, 0, {"val": VAL, "test": TEST},
                                  float(conf.segmentation.min_component_fraction))
            unet = [float(np.mean(list(fit[k].values()))) for k in ("val", "test")]
        val = float(np.mean(list(score[VAL[0]].values())))
        train = {n: float(np.mean([score[s][n] for s in TRAIN])) for n in organs}
        slices = int(np.isin(scribbles, list(organs.values())).any(axis=(0, 1)).sum())
        fg = int(np.isin(scribbles, list(organs.values())).sum())
        name = ", ".join(f"{k} {v}" for k, v in overrides.items()) or "the cohort's support (default)"
        rows.append([name, slices, fg, int((scribbles == ids[BACKGROUND]).sum()), val,
                     float(np.mean(list(train.values()))), *unet, *train.values()])
        fitted = f"; UNet validation {unet[0]:.3f}, test {unet[1]:.3f}" if args.unet else ""
        print(f"  {name}: drafts validation {val:.3f}, train {rows[-1][5]:.3f}{fitted} ({time.perf_counter() - t0:.0f} s)",
              flush=True)

    header = ["support scribbles", "axial slices stroked", "foreground voxels", "background voxels",
              "drafts, validation", "drafts, train", "UNet on them, validation", "UNet on them, test"] + list(organs)
    tables = [md_table(header, rows) + "\n"]
    if args.run:
        tables[0] = md_table(header, rows + report_rows(args.run, list(organs))) + "\n"
        tables += ["### Volume / true volume per organ, mean over studies (1 = the right size)\n",
                   md_table(["labels", "studies"] + list(organs), volume_rows(args.run, args.cohort, organs, split)) + "\n"]
    text = "\n".join([
        "## The drafts' ceiling: oracle GeoS drafts vs the support's density\n",
        f"Every support point at its true location (no PRNet error), GeoS `prnet.prelabel.geos`; validation {VAL[0]}, "
        f"train {', '.join(TRAIN)}; per organ: the drafts of the train studies (the run's UNets: the test "
        f"studies {', '.join(TEST)}); {machine()}.\n",
        *tables])
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(str(args.out / "support.md"), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
