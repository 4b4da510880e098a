#!/usr/bin/env python
"""The correction robot of ``scripts/bench_correction.py`` in process, on drafts it kept (``--keep DIR``).

    .venv/bin/python scripts/robot_inprocess.py --drafts DIR [--rounds 5] [--model DIR/segmentation.pt] [--set correction.delta=0.3 ...]
    .venv/bin/python scripts/robot_inprocess.py --drafts DIR --ideal 15 30   # the ceiling of a correction that reaches 15, 30 mm
    .venv/bin/python scripts/robot_inprocess.py --data other [--ideal 15 30]   # bench_correction.py --data other's shifted drafts

The same rounds as through the server (each round: the draft ``original`` corrected by every stroke so far,
one structure at a time, background strokes removing only that structure) without the server, so that a
correction rule can be compared on the same drafts in seconds. Prints per structure the Dice after each
round and the largest Dice drop outside 30 mm of the strokes; a summary line with the median Dice per round.
``--model``: the corrections use that UNet's posteriors (``correction.model_prior``), as the server's mode ``model``.
``--ideal MM ...``: instead of the correction rule, an ideal one that reaches MM: each round's stroke fixes every voxel of
the error region it lies in (its connected false negative or false positive, as the ground truth says) within MM of the
stroke (connected within the box of the stroke ± MM), and nothing else: the most a correction that changes only its
neighbourhood can do.
``--data other``: the studies and shifted drafts of ``bench_correction.py --data other`` (no ``--drafts``; an MR
study's window as the server computes it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from lib.correction import correct_label, window_strokes
from lib.data.studyset import StudySet
from lib.evaluation.robot import BACKGROUND, FOREGROUND, axial_axis, run_rounds, shifted_draft
from lib.intensity import modality_of, seed_window, study_window
from lib.io import read_volume
from lib.segmentation.checkpoint import load_unet
from lib.segmentation.predict import study_probabilities
from lib.settings import app_settings
from lib.tasks.start_label import model_prior

REPO = Path(__file__).resolve().parents[1]
NEAR_MM = 30.0


def run(image, draft_all, did, truth, spacing, rounds, geos, corr, axis=None, prior=None, mr_range=None) -> dict:
    """The robot's rounds on structure ``did`` of the draft, each correcting the draft with every stroke so far.
    ``mr_range``: an MR study's robust intensity range (its window then centres on the strokes, as the server's)."""

    def segment(strokes: np.ndarray, clicks) -> np.ndarray:
        sets, window = correction_request(strokes, did, image, mr_range, geos)
        out, _ = correct_label(image, draft_all, sets, spacing, geos, corr, removable=[did], prior=prior, window=window)
        return out == did

    return run_rounds(truth, draft_all == did, spacing, rounds, segment, axis, NEAR_MM)


def correction_request(strokes: np.ndarray, did: int, image: np.ndarray, mr_range, geos) -> tuple[dict, tuple | None]:
    """The correction sets of the robot's ``strokes`` (``(I, J, K)`` uint8) on structure ``did`` (foreground: ``did``,
    background: 0) and the study's window: an MR study's (``mr_range``) centred on the strokes, as the server's; None for CT."""
    sets = {c: strokes == v for c, v in ((did, FOREGROUND), (0, BACKGROUND)) if (strokes == v).any()}
    window = None if mr_range is None else seed_window(
        mr_range, image[np.logical_or.reduce(window_strokes(sets))], geos.mr_window_half_width)
    return sets, window


def run_ideal(draft: np.ndarray, truth: np.ndarray, spacing, rounds: int, reach_mm: float, axis: int | None) -> dict:
    """The robot's rounds with an ideal correction of reach ``reach_mm`` (see ``--ideal``); ``draft``, ``truth``: bool."""
    state = {"result": draft.copy(), "strokes": np.zeros(truth.shape, bool)}

    def segment(strokes: np.ndarray, clicks) -> np.ndarray:
        new = (strokes > 0) & ~state["strokes"]  # this round's stroke
        state["strokes"] = strokes > 0
        result = state["result"].copy()
        if new.any():
            idx = np.argwhere(new)
            r = np.ceil(reach_mm / np.asarray(spacing, float)).astype(int)
            box = tuple(slice(max(0, lo - e), hi + e + 1) for lo, hi, e in zip(idx.min(0), idx.max(0), r))
            # the stroke's own kind of error: missed voxels under a foreground stroke, extra ones under a background one
            error = truth[box] & ~result[box] if clicks[-1].foreground else result[box] & ~truth[box]
            regions, _ = ndi.label(error, np.ones((3, 3, 3), bool))
            hit = np.unique(regions[new[box]])
            fix = np.isin(regions, hit[hit > 0]) & (ndi.distance_transform_edt(~new[box], sampling=spacing) <= reach_mm)
            result[box][fix] = truth[box][fix]
        state["result"] = result
        return result

    return run_rounds(truth, draft, spacing, rounds, segment, axis, NEAR_MM)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--drafts", type=Path, default=None, help="the drafts bench_correction.py --keep kept")
    ap.add_argument("--data", choices=["devset", "cohort", "other"], default="devset",
                    help="where the drafted studies come from (other: bench_correction.py --data other's)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--ball", action="store_true", help="each correction a 3 mm ball (a click), not a scribble")
    ap.add_argument("--set", nargs="*", default=[], help="configuration overrides key=value")
    ap.add_argument("--model", type=Path, default=None, help="a published segmentation UNet (segmentation.pt)")
    ap.add_argument("--ideal", type=float, nargs="*", default=None, metavar="MM",
                    help="an ideal correction of each reach (mm) instead of the rule: the ceiling of a local correction")
    args = ap.parse_args(argv)
    unet = load_unet(str(args.model)) if args.model else None
    s = app_settings(dict(kv.split("=", 1) for kv in args.set))
    if (args.drafts is None) != (args.data == "other"):
        ap.error("give --drafts DIR (the drafts bench_correction.py --keep kept), or --data other without it (it makes its own drafts)")
    data = StudySet.open(REPO / "sample-data" / ("devset" if args.data == "other" else args.data))
    per_round: dict = {}
    drops: dict = {}
    for study, image, gt, draft_all, names, mr_range in drafted_studies(args, data, s.geos):
        prior = None
        if unet is not None and s.correction.model_prior:
            prior = model_prior(study_probabilities(unet, image), names)[0]
        for organ, truth in structures(data, study, gt, names):
            axis = None if args.ball else axial_axis(image.affine)
            for variant in args.ideal or [None]:
                if variant is None:
                    r = run(image.array, draft_all, int(names[organ]), truth, gt.spacing, args.rounds, s.geos, s.correction,
                            axis, prior, mr_range)
                else:
                    r = run_ideal(draft_all == int(names[organ]), truth, gt.spacing, args.rounds, variant, axis)
                scores, drop = r["dice"], r["max_far_drop"]
                per_round.setdefault(variant, []).append(scores)
                drops.setdefault(variant, []).append(drop)
                tag = "" if variant is None else f" (ideal, {variant:g} mm)"
                print(f"{study}/{organ}{tag}: " + " ".join(f"{d:.3f}" for d in scores) + f"  far drop {drop:.3f}", flush=True)
    for variant in per_round:
        summary(per_round[variant], drops[variant], args.rounds, "" if variant is None else f"ideal, reach {variant:g} mm: ")
    return 0


def drafted_studies(args, data: StudySet, geos):
    """``(study, image, label map, draft (I, J, K), {name: id}, MR range or None)`` of each drafted study (:func:`drafts`);
    an MR study's robust intensity range (its window then centres on the strokes, as the server's)."""
    for study, draft_all, names in drafts(args, data):
        image = read_volume(str(data.image(study)))
        gt = read_volume(str(data.truth(study)))
        mr_range = None
        if modality_of(image.array) == "MR":
            knots = study_window(image.array, geos.window_hu, geos.window_out, "MR")[0]
            mr_range = (knots[0], knots[-1])
        yield study, image, gt, draft_all, names, mr_range


def structures(data: StudySet, study: str, gt, names):
    """``(organ, truth (I, J, K) bool)`` of each structure of ``study`` the draft names (at least 20 voxels)."""
    for organ, gid in data.labels(study).items():
        truth = gt.array == gid
        if truth.sum() >= 20 and organ in names:
            yield organ, truth


def drafts(args, data: StudySet):
    """``(study, draft (I, J, K), {name: id})`` of each drafted study: the kept drafts of ``--drafts``, or for ``--data
    other`` the shifted drafts of ``bench_correction.py``'s studies."""
    if args.drafts is None:
        from bench_correction import OTHER_STUDIES, SHIFT_MM

        for study in OTHER_STUDIES:
            gt = read_volume(str(data.truth(study)))
            yield study, shifted_draft(np.rint(gt.array).astype(np.uint8), gt.affine, SHIFT_MM), data.labels(study)
        return
    for path in sorted(args.drafts.glob("*_original.nii.gz")):
        study = path.name[: -len("_original.nii.gz")]
        yield study, read_volume(str(path)).array, json.loads((args.drafts / f"{study}_original.json").read_text())


def summary(per_round: list[list[float]], drops: list[float], rounds: int, prefix: str = "") -> None:
    """The summary line: median Dice per round, losing rounds, far drops, rounds to 0.90."""
    med = np.median(np.array(per_round), axis=0)
    lost = sum(1 for r in per_round if min(np.diff(r)) < -0.01)
    need = [next((i for i, d in enumerate(r) if d >= 0.90), rounds + 1) for r in per_round]
    med_need = float(np.median(need))
    print(f"{prefix}median per round: {' '.join(f'{d:.3f}' for d in med)}; mean last {np.mean([r[-1] for r in per_round]):.3f}; "
          f"structures with a round losing > 0.01: {lost}/{len(per_round)}; largest far drop {max(drops):.3f}; "
          f"reached 0.90: {sum(n <= rounds for n in need)}/{len(need)}, rounds to 0.90 (median): "
          + (f"{med_need:.0f}" if med_need <= rounds else f"> {rounds}"))


if __name__ == "__main__":
    sys.exit(main())
