"""torch.distributed on CPU (gloo, 2 processes): data-parallel training with a global batch equals one process
and with per-process batches trains on twice the pairs a step, sharded pre-labeling equals the single-process run, a killed rank's re-run does only what is left, and the server spawns the
processes of a train request.

Every run goes through ``python -m torch.distributed.run … -m lib.cluster`` (or the real server), on tiny
phantom studies, one CPU thread per process (so that one and two processes compute alike).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
from conftest import REPO_ROOT, save_nifti
from conftest import two_organ_phantom as phantom

from lib.io import read_volume
from lib.tasks.datastore import AtomicLocalDatastore
from lib.workflow.server import free_port

pytestmark = pytest.mark.e2e  # starts process groups and servers

SPACING = (3.0, 3.0, 3.0)
TINY = {"prnet.train.base_channels": "4", "prnet.train.fc_hidden": "16", "prnet.train.batch_pairs": "2",
        "prnet.propagation.n_starts": "2", "prnet.propagation.refine_steps": "1", "prnet.prelabel.stride": "3",
        "prnet.propagation.batch_size": "16",
        "segmentation.channels": "[4, 8]", "segmentation.strides": "[2]", "segmentation.num_res_units": "0",
        "segmentation.patch_size": "[16, 16, 16]", "segmentation.batch_size": "2", "segmentation.plc.warmup_epochs": "0"}
#: one process vs two: the same steps up to the order of float sums, which Adam's first steps amplify
#: (g / sqrt(v) of a gradient near zero); measured here ≤ 1.3 % on the fine PRNet after 6 steps, 1e-7 elsewhere
LOSS_RTOL = 0.05
#: per-process batches: other pairs each step (twice as many), so only the curve's shape agrees: each 3-step mean
#: within this factor of the one-process run's (measured here: 0.70 and 1.18 of it; the losses themselves fall ~3x)
PER_PROCESS_FACTOR = 2.0
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo", "PYTHONPATH": str(REPO_ROOT)}


def make_studies(folder: Path, shifts=(0, 2, -2, 1), bad: bool = False) -> Path:
    """Phantom studies ``case_<i>`` and the support's scribbles on ``case_0``; ``bad``: one unreadable study."""
    folder.mkdir(parents=True)
    for i, shift in enumerate(shifts):
        image, _ = phantom(shift, seed=i)
        save_nifti(image, folder / f"case_{i}.nii.gz", spacing=SPACING)
    _, label0 = phantom(0, seed=0)
    s = np.zeros(label0.shape, np.uint8)
    s[11:18, 20, 18], s[28:33, 20, 18] = 1, 2
    s[2:42, 4, 18] = s[2:42, 35, 18] = 3
    path = save_nifti(s, folder.parent / f"{folder.name}_scribbles.nii.gz", spacing=SPACING)
    ds = AtomicLocalDatastore(str(folder))
    ds.save_label("case_0", str(path), "scribbles", {"label_info": [{"name": "bright", "id": 1}, {"name": "dark", "id": 2},
                                                                    {"name": "background", "id": 3}]})
    ds.close()
    if bad:
        (folder / "case_bad.nii.gz").write_bytes(b"not a NIfTI file")
    return folder


def cluster(nprocs: int, studies: Path, model_dir: Path, *args: str, wait: bool = True, train_batch: str = "global"):
    """``lib.cluster`` under torchrun (``nprocs`` processes, a rendezvous on loopback); ``train_batch`` global by
    default, so that one and two processes take the same steps."""
    conf = [x for k, v in {**TINY, "train_batch": train_batch}.items() for x in ("--conf", f"{k}={v}")]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", str(nprocs),
           "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{free_port()}", "-m", "lib.cluster",
           "--studies", str(studies), "--model-dir", str(model_dir), *conf, *args]
    if not wait:
        return subprocess.Popen(cmd, env=ENV, cwd=str(REPO_ROOT), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, env=ENV, cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=600)


def summary(run: subprocess.CompletedProcess) -> dict:
    """The JSON line rank 0 prints last."""
    lines = [line for line in run.stdout.splitlines() if line.startswith("{")]
    assert lines, run.stdout[-3000:] + run.stderr[-3000:]
    return json.loads(lines[-1])


def history(model_dir: Path, model: str) -> list[dict]:
    return json.loads((model_dir / f"train_stats_{model}.json").read_text())["history"]


def assert_same_curve(one: list[dict], two: list[dict], keys: list[str]) -> None:
    assert len(one) == len(two)
    for a, b in zip(one, two):
        for k in keys:
            assert b[k] == pytest.approx(a[k], rel=LOSS_RTOL), (k, one, two)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """PRNet and the UNet trained by 1 and by 2 processes on the same studies (the UNet on the 1-process drafts)."""
    root = tmp_path_factory.mktemp("ddp")
    studies = make_studies(root / "studies")
    out = {"root": root, "studies": studies}
    for n in (1, 2):
        run = cluster(n, studies, root / f"model{n}", "train", "prnet", "--param", "max_steps=6", "--param", "checkpoint_every=3")
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        out[f"prnet{n}"] = summary(run)
    run = cluster(2, studies, root / "model2p", "train", "prnet", "--param", "max_steps=6", "--param", "checkpoint_every=3",
                  train_batch="per_process")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    out["prnet2p"] = summary(run)
    return out


def test_batch_split_per_process_and_global():
    from lib.distributed import Ranks

    one = Ranks().split_batch(4, "per_process")
    assert (one.part, one.per_step, one.seed(7)) == (slice(None), 4, 7)  # one process: the whole batch, the seed as it is
    per = [Ranks(r, 2).split_batch(4, "per_process") for r in (0, 1)]
    assert [p.part for p in per] == [slice(None)] * 2 and per[0].per_step == 8
    assert per[0].seed(7) != per[1].seed(7) and per[0].seed(7) != per[0].seed(8)  # a stream of its own per rank
    assert per[0].seed(7) == Ranks(0, 2).split_batch(4, "per_process").seed(7)  # reproducible
    glob = [Ranks(r, 2).split_batch(4, "global") for r in (0, 1)]
    assert [g.part for g in glob] == [slice(0, None, 2), slice(1, None, 2)] and glob[0].per_step == 4
    assert glob[0].seed(7) == glob[1].seed(7) == 7  # the same batch, split
    with pytest.raises(ValueError, match="at least 3"):
        Ranks(0, 3).split_batch(2, "global")
    with pytest.raises(ValueError, match="per_process"):
        Ranks(0, 2).split_batch(2, "local")


def test_ddp_prnet_takes_the_steps_of_one_process(trained):
    root = trained["root"]
    assert trained["prnet1"]["processes"] == 1 and trained["prnet2"]["processes"] == 2
    assert trained["prnet2"]["step"] == 6
    one, two = history(root / "model1", "prnet"), history(root / "model2", "prnet")
    assert [h["step"] for h in two] == [3, 6]
    assert_same_curve(one, two, ["loss", "err_mm", "fine_loss", "fine_err_mm"])
    assert two[-1]["loss"] < two[0]["loss"]  # it learns
    # one published model (rank 0 alone writes), loadable, the same weights up to float noise
    assert sorted(p.name for p in (root / "model2").iterdir() if p.is_file()) == [
        "prnet.pt", "prnet_checkpoint.pt", "train_stats_prnet.json"]
    w1 = torch.load(root / "model1" / "prnet.pt", weights_only=False)
    w2 = torch.load(root / "model2" / "prnet.pt", weights_only=False)
    coarse1, coarse2 = w1["state_dict"], w2["state_dict"]
    assert coarse1.keys() == coarse2.keys()
    assert max(float((coarse1[k].float() - coarse2[k].float()).abs().max()) for k in coarse1) < 1e-2

    # resume with another world size: the 2-process checkpoint goes on in 1 process
    run = cluster(1, trained["studies"], root / "model2", "train", "prnet", "--param", "max_steps=8", "--param", "checkpoint_every=3")
    assert run.returncode == 0, run.stderr[-3000:]
    assert "resuming at step 6" in run.stdout + run.stderr
    assert [h["step"] for h in history(root / "model2", "prnet")] == [3, 6, 8] and summary(run)["processes"] == 1


def test_ddp_prnet_per_process_batches(trained):
    """train_batch per_process (the default): each of the 2 processes trains on its own batch of batch_pairs (2),
    so a step sees 4 pairs; the loss curve keeps the one-process shape (PER_PROCESS_FACTOR) and it learns."""
    root = trained["root"]
    s = trained["prnet2p"]
    assert (s["processes"], s["train_batch"], s["pairs_per_step"]) == (2, "per_process", 4)
    assert trained["prnet2"]["pairs_per_step"] == 2  # global: the same 2 pairs, split
    one, two = history(root / "model1", "prnet"), history(root / "model2p", "prnet")
    assert [h["step"] for h in two] == [3, 6]
    for a, b in zip(one, two):
        for k in ("loss", "fine_loss"):
            assert 1 / PER_PROCESS_FACTOR < b[k] / a[k] < PER_PROCESS_FACTOR, (k, one, two)
    assert two[-1]["loss"] < two[0]["loss"]
    # not the global run's steps: the ranks drew other pairs than one process would
    w2 = torch.load(root / "model2" / "prnet.pt", weights_only=False)["state_dict"]
    w2p = torch.load(root / "model2p" / "prnet.pt", weights_only=False)["state_dict"]
    assert max(float((w2[k].float() - w2p[k].float()).abs().max()) for k in w2) > 1e-3


def test_sharded_prelabel_equals_one_process_and_resumes(trained):
    root = trained["root"]
    drafts = {}
    for n in (1, 2):
        studies = make_studies(root / f"pre{n}", shifts=(0, 2, -2, 1, 3), bad=True)
        run = cluster(n, studies, root / "model1", "prelabel")
        # a study that fails is named and the others go on; the exit code says that one failed
        assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
        s = summary(run)
        assert s["processes"] == n and s["drafted"] == 4 and list(s["failed"]) == ["case_bad"] and s["skipped"] == 0
        assert len(s["support_encoding_s"]) == n  # the ranks encoded the support together, before the studies
        assert "FAILED case_bad" in run.stdout + run.stderr
        drafts[n] = {f"case_{i}": read_volume(str(studies / "labels" / "original" / f"case_{i}.nii.gz")).array for i in range(1, 5)}
        assert not (studies / "labels" / "original" / "case_0.nii.gz").exists()  # the support has its scribbles
    for k in drafts[1]:
        assert set(np.unique(drafts[1][k])) == {0, 1, 2}
        np.testing.assert_array_equal(drafts[1][k], drafts[2][k], err_msg=k)

    # the same model again: nothing to redo; the draft records the model that made it
    (root / "pre2" / "case_bad.nii.gz").unlink()
    run = cluster(2, root / "pre2", root / "model1", "prelabel")
    assert run.returncode == 0 and summary(run)["drafted"] == 0 and summary(run)["skipped"] == 4
    info = json.loads((root / "pre2" / "datastore_v2.json").read_text())["objects"]["case_1"]["labels"]["original"]["info"]
    assert info["params"]["prnet"]["model_version"] == summary(run)["model_version"]


def listed_drafts(studies: Path) -> list[str]:
    """The draft files (``original``) the datastore's index lists (the index is replaced atomically)."""
    index = studies / "datastore_v2.json"
    objects = json.loads(index.read_text())["objects"] if index.exists() else {}
    return [f"{image_id}.nii.gz" for image_id, obj in objects.items() if "original" in obj["labels"]]


def test_killed_rank_then_rerun_does_only_what_is_left(trained):
    root = trained["root"]
    studies = make_studies(root / "kill", shifts=(0, 2, -2, 1, 3, -1, 2, 0, 1))
    drafts = studies / "labels" / "original"
    proc = cluster(2, studies, root / "model1", "prelabel", wait=False)
    deadline = time.time() + 300
    while time.time() < deadline and not listed_drafts(studies):  # at least one draft in the datastore
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(0.1)
    workers = [p for p in psutil.Process(proc.pid).children(recursive=True) if "lib.cluster" in " ".join(p.cmdline())]
    assert len(workers) == 2
    workers[-1].kill()  # SIGKILL one rank mid-cohort: torchrun stops the other
    assert proc.wait(timeout=120) != 0
    # the datastore stays consistent: every draft it lists is a whole, readable file (a rank killed between
    # placing a draft's file and listing it leaves that file unlisted: not a draft yet, redone by the re-run)
    done = listed_drafts(studies)
    for name in done:
        assert read_volume(str(drafts / name)).array.shape == (44, 40, 36)
    before = {name: (drafts / name).stat().st_mtime_ns for name in done}
    assert 1 <= len(before) < 8

    run = cluster(2, studies, root / "model1", "prelabel")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    s = summary(run)
    assert s["skipped"] == len(before) and s["drafted"] == 8 - len(before)
    assert sorted(p.name for p in drafts.glob("case_*.nii.gz")) == [f"case_{i}.nii.gz" for i in range(1, 9)]
    assert {n: (drafts / n).stat().st_mtime_ns for n in before} == before  # finished studies not redone


def test_segmentation_ddp_and_the_server_spawns_processes(trained, tmp_path, server_factory):
    root = trained["root"]
    studies = make_studies(tmp_path / "drafted")  # three drafts of the 1-process PRNet + the support
    assert cluster(1, studies, root / "model1", "prelabel").returncode == 0
    curves = {}
    for n in (1, 2):
        run = cluster(n, studies, root / f"seg{n}", "train", "segmentation", "--param", "epochs=3",
                      "--param", "steps_per_epoch=3", "--param", "noise_strategy=plc")
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
        assert summary(run)["processes"] == n
        curves[n] = history(root / f"seg{n}", "segmentation")
    assert_same_curve(curves[1], curves[2], ["loss"])

    # through MONAI Label: POST /train/segmentation with processes 2 (a CPU host; one per GPU on a GPU host)
    served = tmp_path / "served"
    shutil.copytree(studies, served)
    server = server_factory(served, conf={**TINY, "segmentation.epochs": "2", "segmentation.steps_per_epoch": "2"})
    client = server.client()
    from test_segmentation_server import post_train, wait_for_training

    code, body = post_train(server.url, "segmentation", {"processes": 0})
    assert code == 400 and "processes" in body["detail"]
    code, body = post_train(server.url, "segmentation", {"processes": 2, "noise_strategy": "mcpm"})
    assert code == 400 and "one process" in body["detail"]
    code, body = post_train(server.url, "segmentation", {"processes": 2})
    assert code == 200, body
    assert wait_for_training(client)["status"] == "DONE", server.log_tail()
    stats = client.info()["train_stats"]["segmentation"]
    assert stats["processes"] == 2 and stats["epoch"] == 2 and np.isfinite(stats["loss"])
    assert (stats["train_batch"], stats["patches_per_step"]) == ("per_process", 4)  # the server's default: 2 each
    result, body = client.infer("segmentation", "case_2", {})  # the published model serves
    assert body["epoch"] == 2 and read_volume(result).array.shape == (44, 40, 36)
