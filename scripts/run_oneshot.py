#!/usr/bin/env python
"""The one-shot workflow end to end through the MONAI Label REST protocol, and its report.

    .venv/bin/python scripts/run_oneshot.py [--out benchmarks-out/oneshot] [--server http://127.0.0.1:8000]
        [--prnet-steps 2000] [--seg-epochs 20] [--seg-steps 50] [--report-only]

Support scribbles → train `prnet` → pseudo masks per τ → batch pre-label (`original`) → test studies
uploaded → GeoS pseudo masks of the test studies → train `segmentation` with each noise strategy and
infer the test studies → the fully supervised upper bound (a second server, ground truth as `final`,
same budget) → `<out>/report.md` with Tables 1–3, wall times and overlays (`<out>/figures/`).

Starts the app itself (on loopback) unless ``--server`` is given; a given server must serve a datastore
holding exactly the support and train studies. Interrupted, it resumes: a finished stage is not redone
(state in ``<out>/state.json``). The split is in ``lib/workflow/runner.py``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lib.workflow.report import write_report
from lib.workflow.runner import STRATEGIES, Budget, Workflow

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cohort", type=Path, default=REPO / "sample-data" / "cohort")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks-out" / "oneshot")
    ap.add_argument("--server", default="", help="a running app (default: start one)")
    ap.add_argument("--prnet-steps", type=int, default=2000)
    ap.add_argument("--seg-epochs", type=int, default=20)
    ap.add_argument("--seg-steps", type=int, default=50)
    ap.add_argument("--strategies", nargs="+", default=list(STRATEGIES), choices=STRATEGIES)
    ap.add_argument("--conf", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                    help="--conf of the servers this script starts (repeatable)")
    ap.add_argument("--report-only", action="store_true", help="rewrite the report from the saved state")
    args = ap.parse_args(argv)
    budget = Budget(prnet_steps=args.prnet_steps, seg_epochs=args.seg_epochs, seg_steps=args.seg_steps,
                    strategies=tuple(args.strategies))
    # --report-only reports the budget the run was made with (recorded in its state), not this command's flags
    wf = Workflow(args.cohort, args.out, None if args.report_only else budget, server_url=args.server, conf=dict(args.conf))
    if not args.report_only:
        wf.run()
    print(f"report: {write_report(wf)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
