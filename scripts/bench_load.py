#!/usr/bin/env python
"""Load on the interactive tasks: 1 / 4 / 16 concurrent clients, with ``/info`` probed alongside.

    .venv/bin/python scripts/bench_load.py [--seconds 60] [--clients 1 4 16] [--tasks points_geos scribbles_geos]
                                           [--no-baseline]

Each client sends the same request over and over for ``--seconds`` (a new one as soon as the last is
answered), the way the viewers send them: ``points_geos`` one OHIF click at the liver's deepest voxel of
subject A; ``scribbles_geos`` Slicer's request with subject A's support strokes of the liver as foreground,
its background strokes as background and a ROI = the liver's box + 8 voxels. A prober calls ``GET /info``
every 0.2 s meanwhile. Both run against this app's entry point (``lib.api.app:app``: inference in a worker
pool off the event loop) and, as the baseline, MONAI Label's own (``monailabel.app:app``: inference on the
event loop), one server at a time on the sample cohort. Writes ``benchmarks-out/load.md``.

    .venv/bin/python scripts/bench_load.py --while-training [--job-threads 0 auto] [--think 0 2] [--seconds 30] [--repeats 3]

Interactive requests while a job trains: per ``job_threads`` setting (``0``: torch's default, every core;
``auto``: the cores − 1; lib/threads.py) one server, on which PRNet trains (``POST /train/prnet``) while one
client sends ``--tasks`` requests, back to back or pausing ``--think`` seconds after each answer; windows of
``--seconds`` alternate "training alone" and "training + the client", ``--repeats`` times. The client alone
("no job") runs one window before the training starts and one after it stops. Reports medians over the
windows: the request's latency without and with the training, and the training's steps per second alone and
with the client (from the trainer's stats, written every 5 steps). Writes ``benchmarks-out/load_training.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import psutil
import requests
from scipy import ndimage

from lib.atomic import atomic_write_text
from lib.evaluation.tables import machine
from lib.workflow.server import start_server, stop_server

REPO = Path(__file__).resolve().parents[1]

COHORT = REPO / "sample-data" / "cohort"
ENTRY_POINTS = {"ours": "lib.api.app:app", "MONAI Label": "monailabel.app:app"}


def ensure_cohort() -> None:
    if not (COHORT / "studies" / "subject_a.nii.gz").exists():
        import importlib.util

        spec = importlib.util.spec_from_file_location("build_cohort", REPO / "sample-data" / "build_cohort.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert module.main([]) == 0


def requests_for(tmp: Path) -> dict[str, dict]:
    """``{task: {"params": ..., "label": path or None}}`` on subject A (see the module's docstring)."""
    names = json.loads((COHORT / "ground_truth" / "labels.json").read_text())
    truth = np.asarray(nib.load(str(COHORT / "ground_truth" / "subject_a.nii.gz")).dataobj)
    liver = truth == names["liver"]
    spacing = nib.load(str(COHORT / "studies" / "subject_a.nii.gz")).header.get_zooms()[:3]
    click = np.unravel_index(np.argmax(ndimage.distance_transform_edt(liver, sampling=spacing)), liver.shape)
    support = nib.load(str(COHORT / "studies" / "labels" / "scribbles" / "subject_a.nii.gz"))
    strokes = np.asarray(support.dataobj).astype(np.int64)
    info = {d["name"]: int(d["id"]) for d in json.loads((COHORT / "scribbles" / "label_info.json").read_text())}
    scribbles = np.zeros(strokes.shape, np.uint8)
    scribbles[strokes == info["background"]] = 2
    scribbles[strokes == info["liver"]] = 3
    label = tmp / "scribbles.nii.gz"
    nib.save(nib.Nifti1Image(scribbles, support.affine), str(label))
    idx = np.argwhere(liver)
    lo, hi = np.maximum(idx.min(0) - 8, 0), np.minimum(idx.max(0) + 9, liver.shape)
    roi = [int(v) for pair in zip(lo, hi) for v in pair]
    return {
        "points_geos": {"params": {"foreground": [[int(c) for c in click]], "background": []}, "label": None},
        "scribbles_geos": {"params": {"label_info": [{"name": "liver", "id": 1}, {"name": "background_scribbles", "id": 2},
                                                     {"name": "foreground_scribbles", "id": 3}],
                                      "roi": roi, "selected_label_name": "liver"}, "label": label},
    }


def load(url: str, task: str, spec: dict, clients: int, seconds: float, think: float = 0.0) -> dict:
    """Run ``clients`` client threads and the /info prober for ``seconds``; latencies in s and error count.
    ``think``: each client waits this long (s) after an answer before its next request (0: back to back)."""
    stop = time.perf_counter() + seconds
    lat: list[float] = []
    errors: list[str] = []
    info_lat: list[float] = []
    lock = threading.Lock()

    def client() -> None:
        s = requests.Session()
        while time.perf_counter() < stop:
            files = {"label": ("scribbles.nii.gz", spec["label"].read_bytes())} if spec["label"] else None
            t0 = time.perf_counter()
            try:
                r = s.post(f"{url}/infer/{task}", params={"image": "subject_a", "output": "image"},
                           data={"params": json.dumps(spec["params"])}, files=files, timeout=300)
                ok, why = r.status_code == 200, f"{r.status_code} {r.text[:80]}"
            except requests.RequestException as e:
                ok, why = False, type(e).__name__
            dt = time.perf_counter() - t0
            with lock:
                (lat.append(dt) if ok else errors.append(why))
            if think:
                time.sleep(max(0.0, min(think, stop - time.perf_counter())))

    def prober() -> None:
        s = requests.Session()
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            s.get(f"{url}/info/", timeout=300)
            info_lat.append(time.perf_counter() - t0)
            time.sleep(0.2)

    threads = [threading.Thread(target=client) for _ in range(clients)] + [threading.Thread(target=prober)]
    t_start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t_start
    return {"requests": len(lat), "throughput": len(lat) / wall, "p50": percentile(lat, 50), "p95": percentile(lat, 95),
            "errors": len(errors), "error_examples": sorted(set(errors))[:3], "info_p95": percentile(info_lat, 95),
            "info_max": max(info_lat) if info_lat else float("nan")}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def rss_mb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 2**20


def training_progress(url: str) -> tuple[int, float]:
    """PRNet's ``(step, elapsed s)`` as its trainer last wrote them (``/info``'s train stats); (0, 0) before."""
    stats = requests.get(f"{url}/info/", timeout=60).json().get("train_stats", {}).get("prnet", {}) or {}
    return int(stats.get("step", 0)), float(stats.get("elapsed_s", 0.0))


def steps_per_s(url: str, seconds: float, during=None) -> float:
    """PRNet's training steps per second over a window of ``seconds`` (running ``during()`` meanwhile, if given),
    from the first and last stats the trainer wrote in it."""
    s0, t0 = training_progress(url)
    if during is None:
        time.sleep(seconds)
    else:
        during()
    s1, t1 = training_progress(url)
    return (s1 - s0) / (t1 - t0) if t1 > t0 else float("nan")


def while_training(args, specs: dict, tmp: Path) -> list[str]:
    """The ``--while-training`` table's lines (see the module's docstring)."""
    kinds = [(task, think) for task in args.tasks for think in args.think]
    rows = []
    for setting in args.job_threads:
        server = start_server(COHORT / "studies", tmp / f"training_{setting}",
                              {"model_dir": str(tmp / f"model_{setting}"), "job_threads": setting})
        try:
            for task in args.tasks:  # warm the caches; a broken request must not be measured
                files = {"label": ("s.nii.gz", specs[task]["label"].read_bytes())} if specs[task]["label"] else None
                r = requests.post(f"{server.url}/infer/{task}", params={"image": "subject_a"}, files=files,
                                  data={"params": json.dumps(specs[task]["params"])}, timeout=300)
                assert r.status_code == 200, f"{task}: {r.status_code} {r.text[:300]}"
            quiet = {k: [load(server.url, k[0], specs[k[0]], 1, args.seconds, k[1])["p50"]] for k in kinds}
            r = requests.post(f"{server.url}/train/prnet", json={"max_steps": 1_000_000, "checkpoint_every": 5,
                                                                  "restart": True}, timeout=60)
            assert r.status_code == 200, f"train: {r.status_code} {r.text[:300]}"
            deadline = time.time() + 600
            while training_progress(server.url)[0] < 10:  # past loading the studies and the first steps
                assert time.time() < deadline, "PRNet training did not start within 10 min"
                time.sleep(2)
            alone, busy, lat = [], {k: [] for k in kinds}, {k: [] for k in kinds}
            for _ in range(args.repeats):
                alone.append(steps_per_s(server.url, args.seconds))
                for k in kinds:
                    got = {}
                    busy[k].append(steps_per_s(server.url, args.seconds,
                                               lambda: got.update(load(server.url, k[0], specs[k[0]], 1, args.seconds, k[1]))))
                    lat[k].append(got["p50"])
                    print(f"job_threads {setting}: {k[0]} think {k[1]:g} s: p50 {got['p50']:.3f} s (no job {quiet[k][0]:.3f}), "
                          f"PRNet {alone[-1]:.2f} steps/s alone, {busy[k][-1]:.2f} with the client", flush=True)
            requests.delete(f"{server.url}/train/", timeout=60)
            deadline = time.time() + 120
            while requests.get(f"{server.url}/train/", params={"check_if_running": True}, timeout=60).status_code == 200:
                assert time.time() < deadline, "the training job did not stop within 2 min"
                time.sleep(1)  # the job is gone: the no-job windows again, after it
            for k in kinds:
                quiet[k].append(load(server.url, k[0], specs[k[0]], 1, args.seconds, k[1])["p50"])
            threads = {0: "every core", "auto": "cores − 1"}.get(setting, str(setting))
            for k in kinds:
                q, b = np.median(quiet[k]), np.median(lat[k])
                rows.append(f"| `{setting}` ({threads}) | `{k[0]}` | {k[1]:g} | {q:.3f} | {b:.3f} | {b / q:.2f} | "
                            f"{np.median(alone):.2f} | {np.median(busy[k]):.2f} | {np.median(busy[k]) / np.median(alone):.2f} |")
        finally:
            stop_server(server)
    return ["| `job_threads` (PRNet's torch threads) | request | pause between requests (s) | request p50, no job (s) | "
            "request p50, PRNet training (s) | ratio | PRNet steps/s alone | PRNet steps/s with the client | ratio |",
            "|---|---|---|---|---|---|---|---|---|", *rows]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--clients", nargs="+", type=int, default=[1, 4, 16])
    ap.add_argument("--tasks", nargs="+", default=["points_geos", "scribbles_geos"])
    ap.add_argument("--no-baseline", action="store_true", help="only this app's entry point")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks-out")
    ap.add_argument("--while-training", action="store_true", help="requests while PRNet trains, per --job-threads")
    ap.add_argument("--job-threads", nargs="+", default=["0", "auto"], help="job_threads settings to compare")
    ap.add_argument("--repeats", type=int, default=3, help="--while-training: windows of each kind")
    ap.add_argument("--think", nargs="+", type=float, default=[0.0, 2.0],
                    help="--while-training: the client's pauses between requests (s) to compare")
    args = ap.parse_args(argv)
    ensure_cohort()
    tmp = Path(tempfile.mkdtemp(prefix="bench-load-"))
    specs = requests_for(tmp)
    if args.while_training:
        args.job_threads = [int(t) if t.isdigit() else t for t in args.job_threads]
        lines = [f"Interactive requests while PRNet trains, on one server per `job_threads` setting, subject A of the sample "
                 f"cohort, one client (back to back, or pausing between requests as an annotator does), medians of {args.repeats} "
                 f"windows of {args.seconds:g} s (no job: one window before the training and one after) "
                 f"(`python scripts/bench_load.py --while-training --seconds {args.seconds:g} --repeats {args.repeats}`); "
                 f"{machine()}.", "", *while_training(args, specs, tmp)]
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(str(args.out / "load_training.md"), "\n".join(lines) + "\n")
        print("\n".join(lines))
        return 0
    rows = []
    kinds = ["ours"] + ([] if args.no_baseline else ["MONAI Label"])
    for kind in kinds:
        server = start_server(COHORT / "studies", tmp / kind.replace(" ", "_"), {"model_dir": str(tmp / "model")},
                              asgi_app=ENTRY_POINTS[kind])
        try:
            requests.post(f"{server.url}/infer/points_geos", params={"image": "subject_a"},
                          data={"params": json.dumps(specs["points_geos"]["params"])}, timeout=300)  # warm the cache
            for task in args.tasks:  # one request first: a broken request must not be measured as load
                files = {"label": ("s.nii.gz", specs[task]["label"].read_bytes())} if specs[task]["label"] else None
                r = requests.post(f"{server.url}/infer/{task}", params={"image": "subject_a"}, files=files,
                                  data={"params": json.dumps(specs[task]["params"])}, timeout=300)
                assert r.status_code == 200, f"{kind} {task}: {r.status_code} {r.text[:300]}"
            for task in args.tasks:
                for n in args.clients:
                    before = rss_mb(server.proc.pid)
                    r = load(server.url, task, specs[task], n, args.seconds)
                    r.update(server=kind, task=task, clients=n, rss_before=before, rss_after=rss_mb(server.proc.pid))
                    rows.append(r)
                    print(f"{kind:12s} {task:15s} {n:3d} clients: {r['throughput']:.2f} req/s, p50 {r['p50']:.3f} s, "
                          f"p95 {r['p95']:.3f} s, errors {r['errors']}, /info p95 {r['info_p95']:.3f} s "
                          f"(max {r['info_max']:.3f}), RSS {before:.0f} -> {r['rss_after']:.0f} MB {r['error_examples']}", flush=True)
        finally:
            stop_server(server)
    lines = [f"Load on the interactive tasks, {args.seconds:g} s per row, subject A of the sample cohort "
             f"(`python scripts/bench_load.py --seconds {args.seconds:g}`); latencies end to end in seconds.", "",
             "| server | task | clients | requests | req/s | p50 | p95 | errors | `/info` p95 | `/info` max | RSS before → after (MB) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['server']} | `{r['task']}` | {r['clients']} | {r['requests']} | {r['throughput']:.2f} | {r['p50']:.3f} | "
                     f"{r['p95']:.3f} | {r['errors']} | {r['info_p95']:.3f} | {r['info_max']:.3f} | "
                     f"{r['rss_before']:.0f} → {r['rss_after']:.0f} |")
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(str(args.out / "load.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"written to {args.out / 'load.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
