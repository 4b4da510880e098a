#!/usr/bin/env python
"""Kill the server while it works: ``kill -9`` / SIGTERM during label saves, training and batch pre-labeling.

    .venv/bin/python scripts/bench_kill.py [--rounds 10]

On a copy of the sample cohort (built if missing). Each round starts a server, puts it to work, kills it
at a random moment (0.5-4 s in; SIGKILL for saves, alternately SIGKILL / SIGTERM for training and batch
pre-labeling) and checks: ``datastore_v2.json`` parses and every label it lists loads; no job process
outlives the server (10 s); a restarted server removes the temporaries the kill left and accepts a new
training (no second job, no 409 from a stale lock); SIGTERM ends the server within 10 s. Writes
``benchmarks-out/kill.md``.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import psutil
import requests

from lib.atomic import atomic_write_text
from lib.tasks.jobs import running_job
from lib.workflow.server import start_server, stop_server

REPO = Path(__file__).resolve().parents[1]

COHORT = REPO / "sample-data" / "cohort"
TINY = {"prnet.train.base_channels": "4", "prnet.train.fc_hidden": "16", "prnet.train.batch_pairs": "2", "prnet.propagation.n_starts": "2"}


def consistent(studies: Path) -> tuple[bool, str]:
    """The datastore index parses and every label it lists loads."""
    try:
        index = json.loads((studies / "datastore_v2.json").read_text())
    except (OSError, ValueError) as e:
        return False, f"datastore_v2.json: {e}"
    for image_id, obj in index.get("objects", {}).items():
        for tag, label in obj.get("labels", {}).items():
            path = studies / "labels" / tag / f"{image_id}{label['ext']}"
            try:
                np.asarray(nib.load(str(path)).dataobj)
            except Exception as e:  # noqa: BLE001
                return False, f"{path.name} ({tag}): {e}"
    return True, ""


def job_children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def gone(procs: list[psutil.Process], timeout: float) -> bool:
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    return not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]


def kill(server, sig: int) -> float:
    """Send ``sig`` to the server process alone; seconds until it exited (inf after 30 s)."""
    t0 = time.perf_counter()
    server.proc.send_signal(sig)
    try:
        server.proc.wait(timeout=30)
    except Exception:  # noqa: BLE001
        return float("inf")
    return time.perf_counter() - t0


def round_saves(studies: Path, work: Path, rng: random.Random) -> dict:
    server = start_server(studies, work, {"model_dir": str(work / "model")})
    label = nib.load(str(COHORT / "ground_truth" / "subject_a.nii.gz"))
    data = (work / "label.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(label.dataobj).astype(np.uint8), label.affine), str(data))
    ids = [p.name.removesuffix(".nii.gz") for p in studies.glob("*.nii.gz")]
    stop = threading.Event()
    saved = [0]

    def saver() -> None:
        s = requests.Session()
        while not stop.is_set():
            try:
                r = s.put(f"{server.url}/datastore/label", params={"image": "subject_a" if rng.random() < 0.5 else rng.choice(ids),
                                                                   "tag": "soak"},
                          files={"label": ("l.nii.gz", data.read_bytes())}, timeout=30)
                saved[0] += r.status_code == 200
            except requests.RequestException:
                return

    threads = [threading.Thread(target=saver) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(rng.uniform(0.5, 4.0))
    kill(server, signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join()
    ok, why = consistent(studies)
    return {"ok": ok, "detail": why or f"{saved[0]} saves before the kill"}


def round_job(studies: Path, work: Path, rng: random.Random, sig: int, kind: str) -> dict:
    model_dir = REPO / "benchmarks-out" / "kill-model"
    server = start_server(studies, work, {"model_dir": str(model_dir), **TINY})
    result: dict = {}
    try:
        if kind == "train":
            r = requests.post(f"{server.url}/train/prnet", json={"max_steps": 1_000_000, "checkpoint_every": 2})
            if r.status_code != 200:
                return {"ok": False, "detail": f"start: {r.status_code} {r.text[:100]}"}
        else:  # synchronous: the request itself waits for the whole batch (the case that ignored SIGTERM)
            threading.Thread(target=lambda: requests.post(
                f"{server.url}/batch/infer/prnet_prelabel", params={"images": "all", "run_sync": "true"}, json={},
                timeout=600), daemon=True).start()
        lock_kind = "train" if kind == "train" else "batch"
        deadline = time.time() + 120
        while running_job(str(model_dir), lock_kind) is None and time.time() < deadline:
            time.sleep(0.2)
        time.sleep(rng.uniform(0.5, 4.0))
        children = job_children(server.proc.pid)
        exit_s = kill(server, sig)
        no_orphan = gone(children, 10)
        ok, why = consistent(studies)
        result = {"ok": ok and no_orphan and (sig == signal.SIGKILL or exit_s < 10), "exit_s": exit_s,
                  "detail": why or ("" if no_orphan else f"orphans: {[p.pid for p in children]}")}
    finally:
        stop_server(server)
    # a restarted server: temporaries gone, no stale lock, a new training accepted (then stopped)
    server = start_server(studies, work / "restart", {"model_dir": str(model_dir), **TINY})
    try:
        temps = [p.name for p in studies.rglob(".*") if p.name != ".lock" and time.time() - p.stat().st_mtime > 60]
        r = requests.post(f"{server.url}/train/prnet", json={"max_steps": 1, "checkpoint_every": 1})
        accepted = r.status_code == 200
        requests.delete(f"{server.url}/train/")
        result["ok"] = result["ok"] and accepted and not temps
        if not accepted or temps:
            result["detail"] += f" restart: train {r.status_code} {r.text[:80]}; temporaries {temps}"
    finally:
        stop_server(server)
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks-out")
    args = ap.parse_args(argv)
    if not (COHORT / "studies" / "subject_a.nii.gz").exists():
        import subprocess

        subprocess.run([sys.executable, str(REPO / "sample-data" / "build_cohort.py")], check=True)
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="bench-kill-"))
    studies = tmp / "studies"
    shutil.copytree(COHORT / "studies", studies)
    model_dir = REPO / "benchmarks-out" / "kill-model"
    shutil.rmtree(model_dir, ignore_errors=True)
    # a PRNet to pre-label with (4 steps: the batch job must only run, not be good)
    server = start_server(studies, tmp / "setup", {"model_dir": str(model_dir), **TINY})
    try:
        requests.post(f"{server.url}/train/prnet", params={"run_sync": "true"}, json={"max_steps": 4, "checkpoint_every": 2},
                      timeout=600)
    finally:
        stop_server(server)
    rows = []
    for scenario in ("saves", "training", "batch pre-labeling"):
        for i in range(args.rounds):
            work = tmp / f"{scenario.replace(' ', '_')}-{i}"
            sig = signal.SIGKILL if scenario == "saves" or i % 2 == 0 else signal.SIGTERM
            if scenario == "saves":
                r = round_saves(studies, work, rng)
            else:
                r = round_job(studies, work, rng, sig, "train" if scenario == "training" else "batch")
            r.update(scenario=scenario, round=i + 1, signal=signal.Signals(sig).name)
            rows.append(r)
            exit_s = f"  exit {r['exit_s']:.2f} s" if "exit_s" in r else ""
            print(f"{scenario:20s} round {i + 1:2d} {r['signal']:7s} {'ok' if r['ok'] else 'FAILED'}{exit_s}  {r.get('detail', '')}",
                  flush=True)
    lines = [f"Kill the server while it works, {args.rounds} rounds each (`python scripts/bench_kill.py --rounds {args.rounds}`):", "",
             "| scenario | signal | rounds | consistent, no orphan, restart clean | server exit after SIGTERM (median / max s) |",
             "|---|---|---|---|---|"]
    for scenario in ("saves", "training", "batch pre-labeling"):
        for sig in ("SIGKILL", "SIGTERM"):
            sel = [r for r in rows if r["scenario"] == scenario and r["signal"] == sig]
            if not sel:
                continue
            exits = [r["exit_s"] for r in sel if "exit_s" in r]
            timing = f"{np.median(exits):.2f} / {max(exits):.2f}" if sig == "SIGTERM" and exits else "—"
            lines.append(f"| {scenario} | {sig} | {len(sel)} | {sum(r['ok'] for r in sel)} / {len(sel)} | {timing} |")
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(str(args.out / "kill.md"), "\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
