"""The cohort on a cluster: training and pre-labeling under ``torchrun``, on the server's datastore and model folder.

One host, every GPU (or ``N`` CPU processes)::

    python -m torch.distributed.run --standalone --nproc-per-node gpu \\
        -m lib.cluster prelabel --studies /data/studies --model-dir /data/model

Several hosts (the same command on each; Slurm's ``srun`` or a Kubernetes operator starts it)::

    python -m torch.distributed.run --nnodes 4 --nproc-per-node 8 --rdzv-backend c10d \\
        --rdzv-endpoint head-node:29500 --rdzv-id cohort-1 \\
        -m lib.cluster train segmentation --studies https://pacs/dicom-web --model-dir /shared/model

``--studies`` is what the server's ``--studies`` is (a folder or a DICOMweb root), ``--model-dir`` the
server's model folder (``model_dir``; the server hot-reloads what is published there), ``--conf`` the
server's ``--conf`` overrides. Without torchrun it runs as one process.

- ``train prnet|segmentation``: data-parallel training (:mod:`lib.distributed`; ``--param key=value``
  takes the keys of ``POST /train/<model>``); rank 0 writes the checkpoint and publishes the model, and a
  run resumes from the checkpoint whatever the number of processes that wrote it.
- ``prelabel``: rank 0 lists the studies that need a draft (no ``final``, not the support, and no
  ``original`` from this PRNet model version: a re-run after a crash does only what is left), the ranks
  encode the support's points together (each a share, all get them all), each rank drafts its share and saves each draft through the datastore (atomic), going on past a study that fails;
  the failed ones are listed at the end and the exit code is 1 if there are any.

Exit codes: 0 done, 1 some studies failed, 2 a request or setup error (message on stderr).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from typing import Any, Sequence

from monailabel.interfaces.datastore import Datastore

from lib.config import REPO_ROOT, ConfigError
from lib.distributed import Ranks, from_env, leave
from lib.settings import app_settings
from lib.tasks.errors import ClientError
from lib.tasks.infer_prnet import PRNetPrelabel, find_support
from lib.tasks.jobs import JobLock
from lib.tasks.wiring import model_dir, model_files, open_datastore, prelabel_task, trainers

logger = logging.getLogger("lib.cluster")

DRAFT_TAG = "original"


def _pairs(items: Sequence[str], what: str) -> dict[str, Any]:
    """``key=value`` strings → a dict (values read as JSON where they parse, else as strings)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{what} takes key=value, got {item!r}")
        try:
            out[key] = json.loads(value)
        except ValueError:
            out[key] = value
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lib.cluster", description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", required=True, help="the studies folder or DICOMweb root (the server's --studies)")
    parser.add_argument("--model-dir", default="", help="the model folder (the server's model_dir; default: model_dir of "
                                                         "the configuration, else apps/oneshot/model)")
    parser.add_argument("--conf", action="append", default=[], metavar="KEY=VALUE", help="configuration overrides, as the server's --conf")
    parser.add_argument("--cpu", action="store_true", help="compute on the CPU even where CUDA is present (gloo)")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="data-parallel training of one model")
    train.add_argument("model", choices=("prnet", "segmentation"))
    train.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="a key of POST /train/<model>")
    sub.add_parser("prelabel", help="a draft (tag 'original') of every study that needs one")
    return parser.parse_args(argv)


def _open(args: argparse.Namespace, ranks: Ranks) -> tuple[Any, Datastore, dict]:
    """Settings, datastore and model files; rank 0 opens the datastore first (it may write its index)."""
    settings = app_settings(_pairs(args.conf, "--conf"))
    folder = args.model_dir or model_dir(settings, str(REPO_ROOT / "apps" / "oneshot"))
    datastore = None
    if ranks.main:
        datastore = open_datastore(args.studies, settings)
    ranks.barrier()
    if not ranks.main:
        datastore = open_datastore(args.studies, settings)
    return settings, datastore, model_files(os.path.abspath(folder))


def _locked(ranks: Ranks, model_dir: str, kind: str, what: str) -> JobLock | None:
    """Rank 0 holds the model folder's ``kind`` job lock (the server's too: one job at a time); every rank
    raises the same ClientError when another job holds it."""
    lock, error = None, None
    if ranks.main:
        try:
            lock = JobLock(model_dir, kind, what).acquire()
        except ClientError as e:
            error = str(e)
    error = ranks.broadcast(error)
    if error:
        raise ClientError(error, status_code=409)
    return lock


def run_training(args: argparse.Namespace, ranks: Ranks) -> int:
    settings, datastore, models = _open(args, ranks)
    task = trainers(settings, models)[args.model]
    request = _pairs(args.param, "--param")
    os.makedirs(models[args.model].model_dir, exist_ok=True)
    lock = _locked(ranks, models[args.model].model_dir, "train", f"{args.model} (torchrun, {ranks.world_size} processes)")
    try:
        stats = task.train(request, datastore, ranks)
    finally:
        if lock is not None:
            lock.release()
    if ranks.main:
        print(json.dumps({k: v for k, v in stats.items() if k != "history"}, default=str))
    return 0


def drafts_to_make(datastore: Datastore, task: PRNetPrelabel, device: str) -> tuple[list[str], list[str], str]:
    """``(to do, already drafted by this model, model version)``: every study but the support and those with a
    ``final`` label, split by whether its draft came from the published PRNet model of this version."""
    _, version = task.model.get(device)
    digest = task.model.digest(version)
    support = find_support(datastore, task.support_tag)
    todo, done = [], []
    for image_id in sorted(datastore.list_images()):
        if image_id == support.image_id or datastore.get_label_uri(image_id, "final"):
            continue
        info = datastore.get_label_info(image_id, DRAFT_TAG) if datastore.get_label_uri(image_id, DRAFT_TAG) else None
        made_by = ((info or {}).get("params") or {}).get("prnet", {}).get("model_version")
        (done if made_by == digest else todo).append(image_id)
    return todo, done, digest


def draft(datastore: Datastore, task: PRNetPrelabel, image_id: str, device: str) -> dict:
    """The draft of one study, saved under tag ``original`` as the server's batch pre-label saves it."""
    path, body = task({"image": datastore.get_image_uri(image_id), "_image_id": image_id, "device": device})
    try:
        datastore.save_label(image_id, path, DRAFT_TAG, {"model": "prnet_prelabel", "params": body})
    finally:
        if path and os.path.exists(path):
            os.unlink(path)
    return body


def run_prelabel(args: argparse.Namespace, ranks: Ranks) -> int:
    settings, datastore, models = _open(args, ranks)
    task = prelabel_task(settings, datastore, models)
    lock = _locked(ranks, models["prnet"].model_dir, "batch", f"prelabel (torchrun, {ranks.world_size} processes)")
    try:
        plan: Any = None
        if ranks.main:
            try:
                plan = drafts_to_make(datastore, task, ranks.device)
            except ClientError as e:  # no model, no support: every rank stops with the message
                plan = str(e)
        plan = ranks.broadcast(plan)
        if isinstance(plan, str):
            raise ClientError(plan)
        todo, done, digest = plan
        mine = ranks.shard(todo)
        logger.info(f"rank {ranks.rank}: {len(mine)} of {len(todo)} studies to draft ({len(done)} already drafted by "
                    f"model {digest})")
        t0 = time.perf_counter()
        if todo:  # every rank together (a collective): each encodes its share of the support's points
            task.encode_support(ranks.device, ranks)
        start_s = time.perf_counter() - t0
        failed, seconds = {}, []
        for image_id in mine:
            t0 = time.perf_counter()
            try:
                body = draft(datastore, task, image_id, ranks.device)
                seconds.append(time.perf_counter() - t0)
                logger.info(f"rank {ranks.rank}: {image_id} drafted in {seconds[-1]:.1f} s (confidence "
                            f"{body['prnet']['confidence']:.3f})")
            except Exception as e:  # noqa: BLE001 - one study must not stop the cohort
                failed[image_id] = f"{type(e).__name__}: {e}"
                logger.error(f"rank {ranks.rank}: {image_id} failed: {failed[image_id]}")
        reports = ranks.gather({"drafted": len(mine) - len(failed), "failed": failed, "seconds": sum(seconds),
                                "support_s": start_s})
    finally:
        if lock is not None:
            lock.release()
    failures = {k: v for r in reports for k, v in r["failed"].items()}
    if ranks.main:
        print(json.dumps({"model_version": digest, "processes": ranks.world_size, "drafted": sum(r["drafted"] for r in reports),
                          "skipped": len(done), "failed": failures,
                          "seconds_per_study": [round(r["seconds"] / max(1, r["drafted"]), 2) for r in reports],
                          "support_encoding_s": [round(r["support_s"], 2) for r in reports]}))
        for image_id, why in sorted(failures.items()):
            print(f"FAILED {image_id}: {why}", file=sys.stderr)
    return 1 if failures else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=f"[%(asctime)s][rank {os.environ.get('RANK', '0')}][%(levelname)s](%(name)s) %(message)s")
    ranks = from_env(want_cuda=not args.cpu)
    try:
        return run_training(args, ranks) if args.command == "train" else run_prelabel(args, ranks)
    except (ClientError, ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        leave()


if __name__ == "__main__":
    sys.exit(main())
