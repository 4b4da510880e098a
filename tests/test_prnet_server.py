"""PRNet through the real server: train `prnet` (tiny budget), batch pre-label the cohort, strategy."""

from __future__ import annotations

import json
import time
import urllib.request

import numpy as np
import pytest
from conftest import save_nifti
from conftest import two_organ_phantom as phantom
from monailabel.client.client import MONAILabelClientException

from lib.io import read_volume
from lib.threads import usable_cpus

pytestmark = pytest.mark.e2e  # starts real servers

SPACING = (3.0, 3.0, 3.0)
TINY = {"prnet.train.base_channels": "4", "prnet.train.fc_hidden": "16", "prnet.train.batch_pairs": "2", "prnet.propagation.n_starts": "2",
        "prnet.propagation.refine_steps": "1", "prnet.prelabel.stride": "3", "prnet.propagation.batch_size": "16"}


def post_json(url: str, body: dict, timeout: float = 300) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def wait_for_training(client, timeout: float = 300) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = client.train_status()
        if status.get("status") not in ("SUBMITTED", "RUNNING"):
            return status
        time.sleep(1)
    raise AssertionError(f"training did not finish in {timeout} s: {status}")


def test_train_prelabel_and_strategy_through_the_server(tmp_path, server_factory):
    studies = tmp_path / "studies"
    studies.mkdir()
    for i, shift in enumerate((0, 2, -2)):
        image, _ = phantom(shift, seed=i)
        save_nifti(image, studies / f"case_{i}.nii.gz", spacing=SPACING)
    server = server_factory(studies, conf=TINY)
    client = server.client()
    info = client.info()
    assert "prnet" in info["trainers"] and "prnet_prelabel" in info["models"] and "prnet_confidence" in info["strategies"]

    # not trained yet → a clear error naming the trainer
    with pytest.raises(MONAILabelClientException) as e:
        client.infer("prnet_prelabel", "case_1", {})
    assert "Status: 409" in e.value.msg and "trainer 'prnet'" in e.value.msg

    client.train_start("prnet", {"max_steps": 4, "checkpoint_every": 2})
    status = wait_for_training(client)
    assert status["status"] == "DONE", status
    stats = client.info()["train_stats"]["prnet"]
    assert stats["step"] == 4 and len(stats["history"]) == 2 and np.isfinite(stats["loss"])
    assert stats["threads"] == max(1, usable_cpus() - 1)  # job_threads auto: one core stays with the server

    # trained, but no support annotation yet → says what to annotate
    with pytest.raises(MONAILabelClientException) as e:
        client.infer("prnet_prelabel", "case_1", {})
    assert "no support annotation" in e.value.msg and "scribbles" in e.value.msg

    # the support: scribbles on case_0 (organ strokes + background strokes), plus a class with no voxels
    _, label0 = phantom(0, seed=0)
    s = np.zeros(label0.shape, np.uint8)
    s[11:18, 20, 18] = 1
    s[28:33, 20, 18] = 2
    s[2:42, 4, 18] = 4
    s[2:42, 35, 18] = 4
    support = save_nifti(s, tmp_path / "support.nii.gz", spacing=SPACING)
    label_info = [{"name": "bright", "id": 1}, {"name": "dark", "id": 2}, {"name": "ghost", "id": 3}, {"name": "background", "id": 4}]
    client.save_label("case_0", str(support), tag="scribbles", params={"label_info": label_info})

    result, body = client.infer("prnet_prelabel", "case_1", {"tau": -1.0, "points": True})
    assert any("ghost" in w for w in body["warnings"])
    # the propagated points, for a viewer: tau -1 keeps them all, each inside the volume
    assert set(body["points"]) == {"bright", "dark", "background"}
    assert len(body["points"]["bright"]["kept"]) == body["prnet"]["classes"]["bright"]["kept"] > 0
    assert body["points"]["bright"]["rejected"] == []
    located = np.array([p for c in body["points"].values() for p in c["kept"]])
    assert (located >= 0).all() and (located < np.array(label0.shape)).all()
    assert body["label_names"] == {"bright": 1, "dark": 2, "ghost": 3}
    assert read_volume(result).array.shape == label0.shape

    # cohort pre-labeling as a data team would run it, with the endpoint's usual parameters
    out = post_json(f"{server.url}/batch/infer/prnet_prelabel?images=unlabeled&run_sync=true", {"tau": -1.0})
    assert out is not None
    ds = client.datastore()["objects"]
    for case in ("case_0", "case_1", "case_2"):
        original = ds[case]["labels"].get("original")
        assert original, f"no draft for {case}: {ds[case]}"
        assert original["info"]["params"]["label_names"] == {"bright": 1, "dark": 2, "ghost": 3}
    assert "confidence" in ds["case_2"]["image"]["info"]["prnet"]
    draft = read_volume(client.download_label("case_0", "original")).array
    assert set(np.unique(draft)) <= {0, 1, 2} and (draft == 1).any()

    sample = client.next_sample("prnet_confidence", {})
    assert sample["id"] in {"case_1", "case_2", "case_0"}
