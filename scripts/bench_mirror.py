#!/usr/bin/env python
"""The left-right check of PRNet pre-labeling (:func:`lib.prnet.propagate.mirror_check`) on the development set and
the sample cohort: how well each study aligns with the support as stored and mirrored, and whether it is reported.

    .venv/bin/python scripts/bench_mirror.py [--out benchmarks-out]

Supports: subject A (CT) for its re-acquired copies, the two copies with broken geometry of ``bench_devset.py``
(``broken_mirror``: the voxels flipped left-right under the original header), the chest CTs and the sample
cohort's pseudo-studies; ``mr_b`` (MR) for its copies. The app's configuration (``prnet.propagation``), one CPU
thread. Prints a markdown table and writes it to ``<out>/bench_mirror.md``.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "scripts"))

from bench_devset import DEVSET, broken_copies  # noqa: E402

from lib.intensity import normalize_intensity, study_window  # noqa: E402
from lib.io import read_volume  # noqa: E402
from lib.prnet.propagate import mirror_check  # noqa: E402
from lib.settings import app_settings  # noqa: E402

COHORT = REPO / "sample-data" / "cohort" / "studies"


def canonical(path: Path, settings) -> tuple[np.ndarray, tuple[float, ...]]:
    """The study in PRNet's canonical frame, normalised as propagation sees it: ``(volume in [0, 1], spacing)``."""
    vol = read_volume(str(path))
    view = vol.view(settings.prnet.spacing_mm)
    hu = view.image(vol.array)
    window = study_window(hu, settings.geos.window_hu, settings.geos.window_out, None)
    return normalize_intensity(hu, *window[:2]).astype(np.float32), view.spacing


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks-out")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if not (DEVSET / "manifest.json").exists():
        subprocess.run([sys.executable, str(REPO / "sample-data" / "build_devset.py")], check=True)
    if not COHORT.exists():
        subprocess.run([sys.executable, str(REPO / "sample-data" / "build_cohort.py")], check=True)
    settings = app_settings()
    cfg = settings.propagation
    studies = DEVSET / "studies"
    with tempfile.TemporaryDirectory() as tmp:
        broken, truth = Path(tmp) / "studies", Path(tmp) / "truth"
        broken.mkdir()
        truth.mkdir()
        broken_copies(broken, truth)
        runs = [
            (studies / "subject_a.nii.gz",
             [studies / f"{n}.nii.gz" for n in ("a_copy", "a_lps", "a_las", "a_ail", "a_08x08x5", "a_slab20", "a_slab40",
                                                "a_noise", "a_clinical")]
             + [broken / "broken_mirror.nii.gz", broken / "broken_swap.nii.gz", studies / "lung1.nrrd", studies / "lung2.nrrd"]
             + sorted(COHORT.glob("pseudo_*.nii.gz"))),
            (studies / "mr_b.nii.gz", [studies / f"{n}.nii.gz" for n in ("mr_b_las", "mr_b_noise", "mr_b_15x15x3")]),
        ]
        rows = ["| support | study | NCC as stored | NCC mirrored | difference | reported mirrored | s |",
                "|---|---|---|---|---|---|---|"]
        for support_path, queries in runs:
            support, s_spacing = canonical(support_path, settings)
            for q in queries:
                query, q_spacing = canonical(q, settings)
                t0 = time.perf_counter()
                as_stored, flipped = mirror_check(support, query, s_spacing, q_spacing, cfg)
                seconds = time.perf_counter() - t0
                rows.append(f"| {support_path.name.split('.')[0]} | {q.name.split('.')[0]} | {as_stored:.3f} | {flipped:.3f} | "
                            f"{as_stored - flipped:+.3f} | {'**yes**' if flipped > as_stored + cfg.mirror_margin else 'no'} | "
                            f"{seconds:.1f} |")
                print(rows[-1], flush=True)
    table = "\n".join(rows)
    head = (f"mirror_check_steps {cfg.mirror_check_steps}, mirror_margin {cfg.mirror_margin}, coarsest level "
            f"{max(cfg.register_levels_mm)} mm; one CPU thread; s: both orientations.")
    print("\n" + head + "\n\n" + table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_mirror.md").write_text(head + "\n\n" + table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
