#!/usr/bin/env python
"""A correction's compute, in process: this checkout's ``lib/correction.py`` against another revision's, on the same strokes.

    .venv/bin/python scripts/bench_correction_compute.py --drafts DIR [--data devset|cohort] [--rounds 10] [--against a4abe96]
    .venv/bin/python scripts/bench_correction_compute.py --data other [--rounds 10] [--against a4abe96]

The robot of ``scripts/bench_correction.py`` works ``--rounds`` rounds on every structure of the drafts it kept (``--keep
DIR``; ``--data other``: its shifted drafts), as ``scripts/robot_inprocess.py`` does. Each round's call of
:func:`lib.correction.correct_label` (the draft, every stroke so far) is made with both implementations, one after the
other, ``--repeats`` times each; the fastest of each is kept (the least disturbed by the machine), and the two results are
compared voxel for voxel. Reported: the median time per round over rounds 1–5 and 6–10 (each round sends every stroke
so far, so the crop grows), the median of the per-round ratios, and how many rounds gave a different result (0 for a
change meant to keep the behaviour). Prints a Markdown table and writes ``<out>/correction_compute.md``.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lib.atomic import atomic_write_text
from lib.correction import correct_label
from lib.data.studyset import StudySet
from lib.evaluation.robot import BACKGROUND, FOREGROUND, axial_axis, run_rounds
from lib.evaluation.tables import machine, md_table
from lib.settings import app_settings
from robot_inprocess import correction_request, drafted_studies, structures

REPO = Path(__file__).resolve().parents[1]


def load_revision(rev: str, folder: Path):
    """``lib/correction.py`` as it is at git revision ``rev``, imported as a module of its own."""
    text = subprocess.run(["git", "-C", str(REPO), "show", f"{rev}:lib/correction.py"], check=True, capture_output=True,
                          text=True).stdout
    path = folder / f"correction_{rev}.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # (its dataclasses look their module up)
    spec.loader.exec_module(module)
    return module


def fastest(fn, repeats: int) -> tuple[float, np.ndarray]:
    """The shortest of ``repeats`` calls of ``fn`` (s) and its result."""
    best, out = np.inf, None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--drafts", type=Path, default=None, help="the drafts bench_correction.py --keep kept")
    ap.add_argument("--data", choices=["devset", "cohort", "other"], default="devset")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--against", default="a4abe96", help="the git revision whose lib/correction.py is the baseline")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks-out")
    args = ap.parse_args(argv)
    if (args.drafts is None) != (args.data == "other"):
        ap.error("give --drafts DIR (the drafts bench_correction.py --keep kept), or --data other without it")
    s = app_settings()
    data = StudySet.open(REPO / "sample-data" / ("devset" if args.data == "other" else args.data))
    with tempfile.TemporaryDirectory() as tmp:
        base = load_revision(args.against, Path(tmp))
        times: dict[str, list[list[float]]] = {"this": [], "base": []}  # per structure, per round
        differ = rounds_run = 0
        for study, image, gt, draft_all, names, mr_range in drafted_studies(args, data, s.geos):
            for organ, truth in structures(data, study, gt, names):
                did = int(names[organ])
                mine: list[float] = []
                theirs: list[float] = []

                def segment(strokes: np.ndarray, clicks) -> np.ndarray:
                    nonlocal differ, rounds_run
                    sets, window = correction_request(strokes, did, image.array, mr_range, s.geos)
                    call = dict(removable=[did], window=window)
                    t_base, out_base = fastest(lambda: base.correct_label(image.array, draft_all, sets, gt.spacing, s.geos,
                                                                          s.correction, **call)[0], args.repeats)
                    t_this, out = fastest(lambda: correct_label(image.array, draft_all, sets, gt.spacing, s.geos,
                                                                s.correction, **call)[0], args.repeats)
                    theirs.append(t_base)
                    mine.append(t_this)
                    differ += int(not np.array_equal(out, out_base))
                    rounds_run += 1
                    return out == did

                run_rounds(truth, draft_all == did, gt.spacing, args.rounds, segment, axial_axis(image.affine))
                times["this"].append(mine)
                times["base"].append(theirs)
                print(f"{study}/{organ}: ms per round this " + " ".join(f"{1000 * t:.0f}" for t in mine)
                      + " | " + args.against + " " + " ".join(f"{1000 * t:.0f}" for t in theirs), flush=True)

    def median_ms(which: str, rounds: slice) -> float:
        return 1000 * float(np.median([t for r in times[which] for t in r[rounds]]))

    ratios = [a / b for mine, theirs in zip(times["this"], times["base"]) for a, b in zip(mine, theirs)]
    early, late = slice(0, 5), slice(5, None)
    rows = [[f"lib/correction.py at {args.against}", median_ms("base", early), median_ms("base", late), "", ""],
            ["this checkout", median_ms("this", early), median_ms("this", late), f"{np.median(ratios):.2f}",
             f"{differ} of {rounds_run}"]]
    text = "\n".join([
        f"# A correction's compute, in process ({args.data}, {len(times['this'])} structures, {args.rounds} rounds)", "",
        f"Machine: {machine()}. The fastest of {args.repeats} calls per round and implementation, one after the other.", "",
        md_table(["lib/correction.py", "median ms per round, rounds 1–5", "rounds 6–10", "median ratio to the baseline",
                  "rounds whose result differs"], rows, digits=1), ""])
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "correction_compute.md", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
