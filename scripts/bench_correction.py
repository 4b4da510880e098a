#!/usr/bin/env python
"""A robot annotator corrects PRNet's drafts through the real server (issue: "correct, don't redraw").

    .venv/bin/python scripts/bench_correction.py [--steps 200] [--rounds 10] [--data devset|cohort|other] [--studies a_lps ...]

On a real server over the development set's CT studies (``--data cohort``: the sample cohort's pseudo-studies;
support subject A): the support scribbles are saved, ``POST /train/prnet``, and every other study's draft is saved as ``original`` (``/infer/prnet_prelabel``
with ``save_label``). ``--data other``: the development set's studies that are not subject A (the MR subject, the
chest CTs' lung lesions, the brain MRs' tumours), which PRNet cannot draft from subject A's scribbles: each gets
the draft of a slightly misplaced propagation instead (:func:`lib.evaluation.robot.shifted_draft`, 3 mm), saved as
``original`` as PRNet's would be. Then, per study and structure present in it, a simulated annotator
(:mod:`lib.evaluation.robot`) works ``--rounds`` rounds: each round one scribble through the most interior voxel of
the largest error region (false negative: foreground, false positive: background), drawn on the axial slice along
the error's medial axis there as DeepIGeoS simulates scribbles (``--ball``: a 3 mm ball instead, a click), and the
whole scribbles volume so far sent to ``scribbles_geos`` as Slicer sends it (``label_info``, ``selected_label_name``),
in the modes of ``--modes``:

- ``draft``: correction mode (the server finds the draft ``original`` by the image id);
- ``scratch``: ``correct: false``, today's behaviour before correction mode (GeoS from the strokes alone);
- ``clicks``: one click per round at the same voxel instead of a scribble, every click so far sent to
  ``points_geos`` as OHIF sends them (``foreground`` / ``background`` voxel points), correcting the draft;
- ``model``: as ``draft``, with the segmentation UNet's posteriors in the correction (``model_prior``): the UNet is
  trained first (``POST /train/segmentation``, ``--seg-epochs`` × 50 steps) on PRNet drafts, as the product's loop
  trains it on a cohort's drafts: of the sample cohort's 8 pseudo-studies (``--model-studies cohort``, studies other
  than the corrected ones; they join the datastore, so PRNet trains on them too) or of the corrected studies
  themselves (``same``: the UNet learns the very drafts it then helps to correct); ``--model-labels truth``: the
  cohort studies' ground truth instead, saved as their ``final`` (studies an annotator has finished: the loop
  later on, when the UNet learns finals rather than drafts). The other modes send ``model_prior: false``.

Reported per mode: Dice after 0, 1, 2, 3, 5, 10 rounds (median over structures), the rounds to reach Dice 0.90
(median; "> R" when not reached), the largest Dice drop of one round outside a 30 mm neighbourhood of its strokes,
and the end-to-end latency of a round (MONAILabelClient.infer: upload, compute, download). Writes
``<out>/correction.md`` and ``correction.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lib.atomic import atomic_write_text
from lib.data.studyset import StudySet
from lib.evaluation.robot import axial_axis, run_rounds, shifted_draft
from lib.evaluation.tables import machine, md_table
from lib.io import read_volume, write_like
from lib.workflow.rest import train
from lib.workflow.server import start_server, stop_server

REPO = Path(__file__).resolve().parents[1]
DEVSET = REPO / "sample-data" / "devset"
COHORT = REPO / "sample-data" / "cohort"
SUPPORT = "subject_a"
STUDIES = ["a_lps", "a_08x08x5", "a_slab40", "a_noise", "a_clinical"]
COHORT_STUDIES = ["pseudo_06", "pseudo_07", "pseudo_08"]
OTHER_STUDIES = ["mr_b", "mr_b_15x15x3", "lung1", "lung2", "brain1", "brain2"]
SHIFT_MM = 3.0  # --data other: the drafts' boundary error
BG, FG = 254, 255  # scribble ids (Slicer's label_info names them)
REPORT = (0, 1, 2, 3, 5, 10)
NEAR_MM = 30.0


def robot(client, study: str, organ: str, truth: np.ndarray, reference: str, spacing, rounds: int, mode: str,
          draft: np.ndarray | None, work: Path, axis: int | None) -> dict:
    """``rounds`` rounds of the robot on one structure through the server (:func:`lib.evaluation.robot.run_rounds`):
    scribbles to ``scribbles_geos`` (modes ``draft``, ``scratch``) or clicks to ``points_geos`` (``clicks``)."""
    info = [{"name": organ, "id": 1}, {"name": "background_scribbles", "id": BG}, {"name": "foreground_scribbles", "id": FG}]
    params = {"label_info": info, "selected_label_name": organ, "model_prior": mode == "model",
              **({"correct": False} if mode == "scratch" else {})}

    seconds = []  # each round's MONAILabelClient.infer: upload, compute, download (not the robot's own work)
    lut = np.array([0, FG, BG], np.uint8)  # the robot's stroke codes -> Slicer's scribble ids

    def segment(strokes: np.ndarray, clicks) -> np.ndarray:
        t0 = time.perf_counter()
        if mode == "clicks":  # as OHIF sends them: voxel points, the structure by name
            out, _ = client.infer("points_geos", study, {
                "selected_label_name": organ, "model_prior": False, "foreground": [list(c.point) for c in clicks if c.foreground],
                "background": [list(c.point) for c in clicks if not c.foreground]})
        else:
            scribbles = write_like(lut[strokes], reference, str(work / "scribbles.nii.gz"))  # as Slicer sends them
            t0 = time.perf_counter()
            out, _ = client.infer("scribbles_geos", study, params, label_in=scribbles)
        seconds.append(time.perf_counter() - t0)
        new = read_volume(out).array > 0
        Path(out).unlink(missing_ok=True)
        return new

    r = run_rounds(truth, draft, spacing, rounds, segment, None if mode == "clicks" else axis, NEAR_MM)
    r["seconds"] = seconds
    return r


def rounds_to(scores: list[float], target: float = 0.90) -> int | None:
    return next((i for i, d in enumerate(scores) if d >= target), None)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--data", choices=["devset", "cohort", "other"], default="devset",
                    help="the corrected studies' data: the development set or the sample cohort, with PRNet drafts; "
                    f"other: the development set's other subjects, with {SHIFT_MM:g} mm shifted drafts")
    ap.add_argument("--studies", nargs="+", default=None,
                    help=f"the corrected studies (default {' '.join(STUDIES)}; with --data cohort {' '.join(COHORT_STUDIES)}; "
                    f"with --data other {' '.join(OTHER_STUDIES)})")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks-out")
    ap.add_argument("--modes", nargs="+", default=None,
                    choices=["draft", "model", "scratch", "clicks"], help="draft: scribbles correct the draft; model: "
                    "with the UNet's posteriors; scratch: scribbles with correct: false; clicks: points_geos clicks "
                    "correct the draft (OHIF); default all (with --data other all but model)")
    ap.add_argument("--seg-epochs", type=int, default=20, help="mode model: the UNet's epochs (50 steps each)")
    ap.add_argument("--model-studies", choices=["cohort", "same"], default="cohort",
                    help="mode model: the UNet learns from the drafts of the sample cohort's pseudo-studies or of the "
                    "corrected studies themselves")
    ap.add_argument("--model-labels", choices=["drafts", "truth"], default="drafts",
                    help="mode model with --model-studies cohort: the UNet learns the cohort studies' PRNet drafts, or "
                    "their ground truth saved as 'final' (an annotator's finished studies: the product's loop later on)")
    ap.add_argument("--ball", action="store_true", help="each correction a 3 mm ball (a click), not a scribble")
    ap.add_argument("--keep", type=Path, default=None, help="keep each study's PRNet draft (and with mode model the "
                    "UNet, segmentation.pt) in this folder")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                    help="the server's configuration overrides, e.g. correction.iterations=1")
    args = ap.parse_args(argv)
    shifted = args.data == "other"  # no PRNet: shifted drafts of the truth
    args.modes = args.modes or ["draft", *([] if shifted else ["model"]), "scratch", "clicks"]
    if shifted and "model" in args.modes:
        ap.error("--data other has no mode model (its studies are not the cohort's anatomy the UNet learns)")
    if args.model_labels == "truth" and args.model_studies != "cohort":
        ap.error("--model-labels truth needs --model-studies cohort (the corrected studies' own truth is what the robot "
                 "scores against)")
    data = StudySet.open(COHORT if args.data == "cohort" else DEVSET)
    corrected = args.studies or {"cohort": COHORT_STUDIES, "other": OTHER_STUDIES}.get(args.data, STUDIES)
    tmp = Path(tempfile.mkdtemp(prefix="bench-correction-"))
    studies = tmp / "studies"
    studies.mkdir()
    for s in ([] if shifted else [SUPPORT]) + corrected:
        shutil.copy(data.image(s), studies / data.image(s).name)
    cohort = []  # the UNet's training studies (mode model): the sample cohort's pseudo-studies not corrected here
    if "model" in args.modes and args.model_studies == "cohort":
        pool = StudySet.open(COHORT)
        cohort = [c for c in pool.studies() if c.startswith("pseudo_") and c not in corrected]
        for c in cohort:
            shutil.copy(pool.image(c), studies / pool.image(c).name)
    scribbles, info = data.scribbles(SUPPORT)
    overrides = dict(kv.split("=", 1) for kv in args.set)
    server = start_server(studies, tmp / "server", conf={"server.infer_timeout_s": "3600", "server.infer_workers": "1",
                                                         "model_dir": str(tmp / "model"), **overrides})  # PRNet trained afresh
    runs: dict = {}
    try:
        client = server.client()
        if not shifted:
            client.save_label(SUPPORT, str(scribbles), tag="scribbles", params={"label_info": info})
            train(server.url, "prnet", {"max_steps": args.steps, "checkpoint_every": max(1, args.steps // 5)},
                  ("step", "max_steps"))
        for c in cohort:  # the UNet's training studies: labelled first, so it never sees the corrected studies' drafts
            if args.model_labels == "truth":  # finished by an annotator: their finals
                client.save_label(c, str(pool.truth(c)), tag="final", params={"label_names": pool.labels(c)})
            else:
                client.infer("prnet_prelabel", c, {"save_label": True, "label_tag": "original"})
        if cohort:
            seg = train(server.url, "segmentation", {"epochs": args.seg_epochs}, ("epoch", "epochs"))
            print(f"segmentation UNet on {len(cohort)} cohort {args.model_labels}: loss {seg.get('loss')}", flush=True)
        drafts = {}
        for study in corrected:
            if shifted:  # saved as PRNet's draft is, names and all
                gt = read_volume(str(data.truth(study)))
                draft = shifted_draft(np.rint(gt.array).astype(np.uint8), gt.affine, SHIFT_MM)
                path = write_like(draft, str(studies / data.image(study).name), str(tmp / f"{study}_original.nii.gz"))
                client.save_label(study, path, tag="original", params={"label_names": data.labels(study)})
                body = {"label_names": data.labels(study)}
            else:
                path, body = client.infer("prnet_prelabel", study, {"save_label": True, "label_tag": "original"})
            drafts[study] = (read_volume(path).array, body["label_names"])
            if args.keep:  # the drafts, to look at a round again in process
                args.keep.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, args.keep / f"{study}_original.nii.gz")
                (args.keep / f"{study}_original.json").write_text(json.dumps(body["label_names"]))
        if "model" in args.modes and not cohort:  # the UNet learns from the drafts it will help to correct
            seg = train(server.url, "segmentation", {"epochs": args.seg_epochs}, ("epoch", "epochs"))
            print(f"segmentation UNet on the corrected studies' drafts: loss {seg.get('loss')}", flush=True)
        for study in corrected:
            reference = str(studies / data.image(study).name)
            draft_all, draft_names = drafts[study]
            gt = read_volume(str(data.truth(study)))
            for organ, gid in data.labels(study).items():
                truth = gt.array == gid
                if truth.sum() < 20 or organ not in draft_names:
                    continue
                draft = draft_all == draft_names[organ]
                for mode in args.modes:
                    r = robot(client, study, organ, truth, reference, gt.spacing, args.rounds, mode,
                              None if mode == "scratch" else draft, tmp, None if args.ball else axial_axis(gt.affine))
                    runs[f"{study}/{organ}/{mode}"] = r
                    print(f"{study} {organ} {mode}: " + " ".join(f"{d:.3f}" for d in r["dice"])
                          + f"  median round {np.median(r['seconds']) if r['seconds'] else 0:.2f} s", flush=True)
        if args.keep and "model" in args.modes:  # the UNet, for scripts/robot_inprocess.py --model
            shutil.copy(tmp / "model" / "segmentation.pt", args.keep / "segmentation.pt")
    finally:
        stop_server(server)
        shutil.rmtree(tmp, ignore_errors=True)

    rows = []
    for mode in args.modes:
        rs = [r for k, r in runs.items() if k.endswith("/" + mode)]
        at = [float(np.median([r["dice"][min(i, len(r["dice"]) - 1)] for r in rs])) for i in REPORT if i <= args.rounds]
        need = [rounds_to(r["dice"]) for r in rs]
        reached = [n for n in need if n is not None]
        med = np.median([n if n is not None else args.rounds + 1 for n in need])
        secs = [s for r in rs for s in r["seconds"]]
        rows.append([mode, *at, f"{med:.0f}" if med <= args.rounds else f"> {args.rounds}",
                     f"{len(reached)}/{len(rs)}", max(r["max_far_drop"] for r in rs),
                     float(np.median(secs)), float(np.percentile(secs, 95))])
    header = ["mode", *[f"Dice after {i}" for i in REPORT if i <= args.rounds], "rounds to 0.90 (median)",
              "reached 0.90", "largest drop outside 30 mm", "round median (s)", "round p95 (s)"]
    per, r3 = [], min(3, args.rounds)
    for key in sorted({k.rsplit("/", 1)[0] for k in runs}):
        row = [key, runs[f"{key}/{args.modes[0]}"]["dice"][0] if "draft" in args.modes else ""]
        for mode in args.modes:
            d = runs[f"{key}/{mode}"]["dice"]
            n = rounds_to(d)
            row += [d[min(r3, len(d) - 1)], d[-1], "—" if n is None else n]
        per.append(row)
    columns = ["study/structure", "draft"] + [c for m in args.modes
                                              for c in (f"{m} +{r3}", f"{m} +{args.rounds}", f"{m}: rounds to 0.90")]
    taught = "ground truth (as finals)" if cohort and args.model_labels == "truth" else "drafts"
    unet = (f"; mode model: UNet {args.seg_epochs} epochs on the {taught} of "
            + (f"{len(cohort)} sample-cohort studies" if cohort else "the corrected studies")) if "model" in args.modes else ""
    drafted = f"drafts: the truth shifted {SHIFT_MM:g} mm" if shifted else f"PRNet {args.steps} steps"
    settings = f"; settings {' '.join(args.set)}" if args.set else ""
    text = (f"Robot annotator through the server, {drafted}, {len(per)} structures of {len(corrected)} "
            f"{'sample-cohort' if args.data == 'cohort' else 'development-set'} studies{unet}{settings}; {machine()}\n\n" + md_table(header, rows) + "\n\n" + md_table(columns, per) + "\n")
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "correction.md", text)
    atomic_write_text(args.out / "correction.json", json.dumps(runs, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
