"""Cost model of the cohort jobs: seconds per study (pre-labeling) and per training step (PRNet, UNet) for one
and for several processes, each under ``torchrun`` with ``lib.cluster`` on the sample cohort (real CT).

Configurations (``--configs``, ``processes x threads[:train_batch]``): ``1x<cpus>`` is a single process with every
core, ``1x1`` and ``Nx1`` give the scaling efficiency per process; training runs with ``train_batch`` ``per_process``
(the default: each process its own batch) unless the configuration says ``:global`` (the batch split over the
processes). Efficiency of N processes: ``throughput(N x 1) / (N · throughput(1 x 1))``, throughput in studies per
second (pre-labeling: per process once the support is encoded, and over the whole run of ``--studies`` studies
with the support's encoding, which the ranks share) and in training pairs / patches per second (each step trains
on ``pairs_per_step`` / ``patches_per_step`` of them). Medians of ``--runs`` runs; table printed and written to ``--out``.

    .venv/bin/python scripts/bench_distributed.py --runs 2 --studies 4 --out docs/bench_distributed.md
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lib.workflow.server import free_port  # noqa: E402


def cluster(procs: int, threads: int, studies: Path, model_dir: Path, *args: str) -> tuple[dict, float]:
    """``lib.cluster`` under torchrun; ``(rank 0's summary, wall seconds)``."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "GLOO_SOCKET_IFNAME": "lo", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(procs),
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "-m", "lib.cluster",
           "--studies", str(studies), "--model-dir", str(model_dir), *args]
    t0 = time.perf_counter()
    run = subprocess.run(cmd, env=env, cwd=str(ROOT), capture_output=True, text=True)
    wall = time.perf_counter() - t0
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    if run.returncode != 0 or not lines:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{run.stdout[-2000:]}\n{run.stderr[-4000:]}")
    return json.loads(lines[-1]), wall


def cohort_copy(src: Path, dest: Path, n: int) -> Path:
    """The support study and the first ``n`` other studies of ``src`` (a fresh datastore, no drafts)."""
    dest.mkdir(parents=True)
    index = json.loads((src / "datastore_v2.json").read_text())["objects"]
    support = next(k for k, v in index.items() if "scribbles" in v["labels"])
    others = sorted(k for k in index if k != support)[:n]
    for image_id in [support, *others]:
        shutil.copy(src / index[image_id]["image"]["info"]["name"], dest)
    (dest / "labels" / "scribbles").mkdir(parents=True)
    name = index[support]["labels"]["scribbles"]["info"]["name"]
    shutil.copy(src / "labels" / "scribbles" / name, dest / "labels" / "scribbles" / name)
    keep = {k: v for k, v in index.items() if k in [support, *others]}
    for v in keep.values():
        v["labels"] = {t: l for t, l in v["labels"].items() if t == "scribbles"}
    (dest / "datastore_v2.json").write_text(json.dumps({**json.loads((src / "datastore_v2.json").read_text()), "objects": keep}))
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cohort", default=str(ROOT / "sample-data" / "cohort" / "studies"))
    ap.add_argument("--studies", type=int, default=4, help="studies to pre-label (besides the support)")
    ap.add_argument("--configs", nargs="+", default=[f"1x{os.cpu_count() or 1}", "1x1", f"{os.cpu_count() or 1}x1",
                                                     f"{os.cpu_count() or 1}x1:global"])
    ap.add_argument("--prnet-steps", type=int, default=30)
    ap.add_argument("--seg-steps", type=int, default=10)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    configs = [(*(int(x) for x in c.partition(":")[0].split("x")), c.partition(":")[2] or "per_process") for c in args.configs]
    work = Path(tempfile.mkdtemp(prefix="bench_distributed_"))
    results: dict[tuple, dict[str, list[float]]] = {c: {} for c in configs}
    try:
        for run in range(args.runs):
            for procs, threads, batch in configs:
                r = results[(procs, threads, batch)]
                base = work / f"r{run}_{procs}x{threads}_{batch}"
                studies = cohort_copy(Path(args.cohort), base / "studies", args.studies)
                model = base / "model"
                conf = ("--conf", f"train_batch={batch}")
                s, _ = cluster(procs, threads, studies, model, *conf, "train", "prnet", "--param",
                               f"max_steps={args.prnet_steps}", "--param", f"checkpoint_every={args.prnet_steps}")
                r.setdefault("prnet_s_per_step", []).append(s["elapsed_s"] / args.prnet_steps)
                r.setdefault("prnet_pairs_per_s", []).append(s["pairs_per_step"] * args.prnet_steps / s["elapsed_s"])
                s, wall = cluster(procs, threads, studies, model, "prelabel")
                assert s["drafted"] == args.studies and not s["failed"], s
                # per process: seconds a study once the support is encoded (the median rank); the run: the support's
                # encoding plus the slowest rank's share (ceil(n / procs) studies), over the n studies
                support = max(s["support_encoding_s"])
                r.setdefault("support_s", []).append(support)
                r.setdefault("prelabel_s_per_study", []).append(statistics.median(s["seconds_per_study"]))
                slowest = max(s["seconds_per_study"]) * math.ceil(args.studies / procs)
                r.setdefault("prelabel_run_s_per_study", []).append((support + slowest) / args.studies)
                r.setdefault("prelabel_wall_s", []).append(wall)
                s, _ = cluster(procs, threads, studies, model, *conf, "train", "segmentation", "--param", "epochs=1",
                               "--param", f"steps_per_epoch={args.seg_steps}")
                r.setdefault("seg_s_per_step", []).append(s["seconds"] / args.seg_steps)
                r.setdefault("seg_patches_per_s", []).append(s["patches_per_step"] * args.seg_steps / s["seconds"])
                print(f"run {run + 1}/{args.runs} {procs}x{threads} {batch}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in r.items()), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    med = {c: {k: statistics.median(v) for k, v in r.items()} for c, r in results.items()}
    one = next((m for (p, t, _), m in med.items() if (p, t) == (1, 1)), None)
    rows = ["| processes × threads | train_batch | support encoding (s) | pre-label s / study / process | pre-label s / study, "
            "the run | pre-label wall (s) | PRNet s / step | PRNet pairs / s | UNet s / step | UNet patches / s | "
            "efficiency: pre-label | pre-label, the run | PRNet | UNet |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for (procs, threads, batch), m in med.items():
        eff = ["", "", "", ""]
        if one and procs > 1:
            eff = [f"{one['prelabel_s_per_study'] / m['prelabel_s_per_study']:.2f}",
                   f"{one['prelabel_run_s_per_study'] / (procs * m['prelabel_run_s_per_study']):.2f}"]
            eff += [f"{m[k] / (procs * one[k]):.2f}" for k in ("prnet_pairs_per_s", "seg_patches_per_s")]
        rows.append(f"| {procs} × {threads} | {batch if procs > 1 else ''} | {m['support_s']:.1f} | {m['prelabel_s_per_study']:.1f} | "
                    f"{m['prelabel_run_s_per_study']:.1f} | {m['prelabel_wall_s']:.1f} | {m['prnet_s_per_step']:.3f} | "
                    f"{m['prnet_pairs_per_s']:.1f} | {m['seg_s_per_step']:.3f} | {m['seg_patches_per_s']:.1f} | {' | '.join(eff)} |")
    table = "\n".join(rows)
    head = (f"Sample cohort (real CT, 3 mm), {args.studies} studies pre-labeled, PRNet {args.prnet_steps} steps, UNet "
            f"{args.seg_steps} steps, default configuration; medians of {args.runs} runs; {os.cpu_count()} CPUs.\n"
            "Support encoding: the seconds before the first study (the ranks share it); pre-label s / study / process: "
            "a study's seconds once the support is encoded (median rank); the run: the encoding plus the slowest rank's "
            "studies, over the studies; wall: the whole torchrun command, start-up included.")
    print(head + "\n\n" + table)
    if args.out:
        Path(args.out).write_text(head + "\n\n" + table + "\n\n```json\n" + json.dumps(
            {f"{p}x{t}:{b}": r for (p, t, b), r in results.items()}, indent=1) + "\n```\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
