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


def load(url: str, task: str, spec: dict, clients: int, seconds: float) -> dict:
    """Run ``clients`` client threads and the /info prober for ``seconds``; latencies in s and error count."""
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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--clients", nargs="+", type=int, default=[1, 4, 16])
    ap.add_argument("--tasks", nargs="+", default=["points_geos", "scribbles_geos"])
    ap.add_argument("--no-baseline", action="store_true", help="only this app's entry point")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks-out")
    args = ap.parse_args(argv)
    ensure_cohort()
    tmp = Path(tempfile.mkdtemp(prefix="bench-load-"))
    specs = requests_for(tmp)
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
