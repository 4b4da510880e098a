#!/usr/bin/env python
"""PRNet drafts on the development set through the REST protocol, this checkout against another.

    .venv/bin/python scripts/bench_devset.py [--steps 500] [--before <git rev>] [--runs ct mr] [--taus 0.5 -1] [--out benchmarks-out]

As the workflow does it, on a real server per run: the support scribbles are saved (tag ``scribbles``),
``POST /train/prnet`` trains on every study of the datastore, then ``/infer/prnet_prelabel`` drafts each
study; the draft (on the study's own grid) is scored against the study's label map, per organ present in
its field of view. Runs:

- ``ct``: support subject A (CT); the studies are its re-acquired copies (orientation, spacing, slabs,
  noise, an oblique grid, portal-venous contrast; the 0.7 mm copy with ``--large``), two copies with
  deliberately broken geometry (``broken_mirror``: the array flipped left-right under an unchanged header;
  ``broken_swap``: two axes swapped under an unchanged header), the chest CT ``lung1`` (no abdominal organ in
  view) and the MR ``mr_b`` (another modality);
- ``mr``: support the MR ``mr_b``; its copies, and subject A's CT copy (another modality);
- ``ct3``: the 3 mm studies of ``ct`` (a ``--before`` checkout that trains at each study's own grid takes
  an hour on a CPU with the others).

``--before REV``: the same runs, in the same invocation, on a ``git worktree`` of REV (the baseline
column). ``--taus``: every study drafted at each DFD threshold (request key ``tau``; ``-1`` keeps every point
inside the study) by the same trained PRNet, a column each. Writes ``<out>/devset.md``; the confidence column
is the study's ``prnet.confidence``, and the rank correlation (Spearman) between it and the draft's mean Dice
is reported per run.
Labels: TotalSegmentator's model output (a silver standard), not expert contours.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import SimpleITK as sitk
from scipy.stats import spearmanr

from lib.atomic import atomic_write_text
from lib.evaluation.metrics import dice_per_organ
from lib.io import read_volume
from lib.workflow.rest import train
from lib.workflow.server import start_server, stop_server

REPO = Path(__file__).resolve().parents[1]

DEVSET = REPO / "sample-data" / "devset"
RUNS = {
    "ct": ("subject_a", ["subject_a", "a_copy", "a_lps", "a_las", "a_ail", "a_08x08x5", "a_slab20",
                         "a_slab40", "a_noise", "a_clinical", "a_oblique", "a_contrast", "a_contrast_slab", "broken_mirror",
                         "broken_swap", "lung1", "mr_b"]),
    "mr": ("mr_b", ["mr_b", "mr_b_las", "mr_b_noise", "mr_b_15x15x3", "a_copy"]),
    # the 3 mm studies of `ct` only: the code before the canonical frame trains on every study at its own grid,
    # an hour on a CPU with the 0.6-0.8 mm ones; this is the run to compare checkouts on
    "ct3": ("subject_a", ["subject_a", "a_copy", "a_lps", "a_las", "a_ail", "a_slab20", "a_slab40", "a_noise",
                          "broken_mirror", "broken_swap", "mr_b"]),
}
CONF = {"server.infer_timeout_s": "3600", "server.infer_workers": "1"}


def broken_copies(studies: Path, truth: Path) -> None:
    """``broken_mirror`` / ``broken_swap`` of subject A: the voxels moved under the header of the original."""
    img = sitk.ReadImage(str(DEVSET / "studies" / "subject_a.nii.gz"))
    lab = sitk.ReadImage(str(DEVSET / "ground_truth" / "subject_a.nii.gz"))
    for name, op in (("broken_mirror", lambda a: a[:, :, ::-1]), ("broken_swap", lambda a: a.transpose(0, 2, 1)[:, :, ::-1])):
        for src, out in ((img, studies), (lab, truth)):
            a = op(sitk.GetArrayFromImage(src))  # (K, J, I)
            b = sitk.GetImageFromArray(np.ascontiguousarray(a))
            b.SetSpacing(src.GetSpacing())
            b.SetOrigin(src.GetOrigin())
            b.SetDirection(src.GetDirection())
            sitk.WriteImage(b, str(out / f"{name}.nii.gz"), True)


def run(repo: Path, run_name: str, steps: int, work: Path, taus: Sequence[float | None] = (None,)) -> dict[float | None, dict]:
    """One server: the support saved, PRNet trained, every study drafted at each DFD threshold of ``taus`` (None:
    the configured one) by the same model; ``{tau: {rows, train_s, support}}``."""
    support, ids = RUNS[run_name]
    manifest = json.loads((DEVSET / "manifest.json").read_text())["studies"]
    studies, truth = work / "studies", work / "truth"
    studies.mkdir(parents=True)
    truth.mkdir()
    if "broken_mirror" in ids:
        broken_copies(studies, truth)
    for i in ids:
        if i in manifest:
            shutil.copy(DEVSET / "studies" / manifest[i]["image"], studies / manifest[i]["image"])
            shutil.copy(DEVSET / "ground_truth" / f"{i}.nii.gz", truth / f"{i}.nii.gz")
    info = json.loads((DEVSET / "scribbles" / "label_info.json").read_text())[support]
    names = {d["name"]: d["id"] for d in info if d["name"] != "background"}
    server = start_server(studies, work / "server", conf={**CONF, "model_dir": str(work / "model")}, repo=repo)
    rows = {}
    try:
        client = server.client()
        client.save_label(support, str(DEVSET / "scribbles" / f"{support}.nii.gz"), tag="scribbles", params={"label_info": info})
        t0 = time.perf_counter()
        train(server.url, "prnet", {"max_steps": steps, "checkpoint_every": max(1, steps // 5)}, ("step", "max_steps"))
        train_s = time.perf_counter() - t0
        for tau in taus:
            rows[tau] = {}
            for i in ids:
                rows[tau][i] = draft_row(client, i, truth, names, {} if tau is None else {"tau": tau})
                print(f"{run_name} {repo.name} tau {tau}: {i}: mean {rows[tau][i]['mean']} confidence {rows[tau][i]['confidence']} "
                      f"({rows[tau][i]['seconds']:.1f} s) {rows[tau][i].get('error', '')}", flush=True)
    finally:
        stop_server(server)
    return {tau: {"rows": r, "train_s": train_s, "support": support} for tau, r in rows.items()}


def draft_row(client, study: str, truth: Path, names: dict, params: dict) -> dict:
    """``study``'s draft through ``/infer/prnet_prelabel`` scored against its label map (a refused study: the error)."""
    t1 = time.perf_counter()
    gt = read_volume(str(truth / f"{study}.nii.gz")).array
    try:
        path, body = client.infer("prnet_prelabel", study, params)
        draft = read_volume(path).array
        dice = dice_per_organ(draft, gt, names, body.get("label_names") or names, present_only=True)
        row = {"dice": dice, "mean": float(np.mean(list(dice.values()))) if dice else None,
               "confidence": body["prnet"]["confidence"], "warnings": body.get("warnings", []),
               "classes": body["prnet"]["classes"], "frame": body["prnet"].get("frame"),
               "ncc": body["prnet"].get("registration_ncc")}
    except Exception as e:  # a refused study (4xx) is a result too: the app said why
        row = {"dice": {}, "mean": None, "confidence": None, "error": str(getattr(e, "msg", e))[-300:]}
    row["seconds"] = time.perf_counter() - t1
    return row


def fmt(x, nd=3) -> str:
    return "—" if x is None else f"{x:.{nd}f}"


def table(results: dict[str, dict], run_name: str) -> str:
    cols = list(results)
    after = results[cols[-1]]
    organs = sorted({o for r in after["rows"].values() for o in r["dice"]})
    lines = [f"### Run `{run_name}`: support `{after['support']}`", "",
             "| study | " + " | ".join(f"mean Dice ({c})" for c in cols) + " | " + " | ".join(f"confidence ({c})" for c in cols)
             + " | " + " | ".join(organs) + " | note |",
             "|---" * (1 + 2 * len(cols) + len(organs) + 1) + "|"]
    for study, r in after["rows"].items():
        means = [fmt(results[c]["rows"][study]["mean"]) for c in cols]
        confs = [fmt(results[c]["rows"][study]["confidence"]) for c in cols]
        note = r.get("error", "") or "; ".join(w for w in r.get("warnings", []) if "field of view" in w)
        lines.append(f"| {study} | " + " | ".join(means) + " | " + " | ".join(confs) + " | "
                     + " | ".join(fmt(r["dice"].get(o), 2) for o in organs) + f" | {note[:160]} |")
    lines.append("")
    for c in cols:
        pairs = [(r["confidence"], r["mean"]) for s, r in results[c]["rows"].items()
                 if r["mean"] is not None and s != results[c]["support"]]
        rho = spearmanr(*zip(*pairs)).statistic if len(pairs) > 2 else float("nan")
        copies = {s: r["mean"] for s, r in results[c]["rows"].items() if s.startswith(("a_", "mr_b_")) and r["mean"] is not None}
        ref = results[c]["rows"].get("mr_b_las" if run_name == "mr" else "a_copy", {}).get("mean")
        deltas = {s: v - ref for s, v in copies.items() if ref is not None and not s.startswith("a_copy")}
        drop, gain = (min(deltas, key=deltas.get), max(deltas, key=deltas.get)) if deltas else (None, None)
        # the "within 0.02" is about drafts worse than the reference's; a contrast copy may draft better
        said = (f"largest drop below the reference copy = {fmt(max(0.0, -deltas[drop]))} ({drop}), largest gain "
                f"{fmt(max(0.0, deltas[gain]))} ({gain})") if deltas else "no re-acquired copy drafted"
        lines.append(f"- `{c}`: Spearman ρ(confidence, mean Dice) over the drafted studies = {rho:.2f}; {said}; "
                     f"PRNet training {results[c]['train_s']:.0f} s")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--before", default=None, help="git revision of the baseline column")
    ap.add_argument("--runs", nargs="+", default=["ct", "mr"], choices=list(RUNS))
    ap.add_argument("--taus", nargs="+", type=float, default=None,
                    help="draft every study at each of these DFD thresholds with the same PRNet (default: the configured one)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks-out")
    ap.add_argument("--large", action="store_true", help="add the 0.7 x 0.7 x 1.5 mm copy of subject A (50 M voxels) to "
                    "the ct run; the code before the canonical frame trains on it at its own grid, tens of minutes on a CPU")
    args = ap.parse_args(argv)
    if args.large:
        RUNS["ct"][1].insert(6, "a_07x07x15")
    if not (DEVSET / "manifest.json").exists():
        subprocess.run([sys.executable, str(REPO / "sample-data" / "build_devset.py")], check=True)
    checkouts = {}
    tmp = Path(tempfile.mkdtemp(prefix="bench-devset-"))
    try:
        if args.before:
            wt = tmp / "before"
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(wt), args.before], check=True)
            checkouts[f"before {args.before[:7]}"] = wt
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
        checkouts[f"this {head}"] = REPO
        text = [f"PRNet {args.steps} steps per run, on this machine; drafts scored on each study's own grid.\n"]
        for run_name in args.runs:
            taus = args.taus or [None]
            results = {}
            for i, (c, repo) in enumerate(checkouts.items()):
                for tau, res in run(repo, run_name, args.steps, tmp / f"{run_name}-{i}", taus).items():
                    results[c if tau is None else f"{c}, τ {tau:g}"] = res
            text.append(table(results, run_name))
            (args.out).mkdir(parents=True, exist_ok=True)
            (args.out / f"devset-{run_name}.json").write_text(json.dumps(results, indent=1))
        out = "\n".join(text)
        print(out)
        atomic_write_text(args.out / "devset.md", out)
    finally:
        if args.before:
            subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(tmp / "before")], check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
