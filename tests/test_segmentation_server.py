"""Trainer and infer task `segmentation` through the real server: bad requests answer 4xx at once; every
noise strategy trains (2 iterations) and publishes; PLC persists its corrected labels and resumes."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import numpy as np
import pytest
from conftest import save_nifti
from monailabel.client.client import MONAILabelClientException
from test_prnet_server import SPACING, phantom, wait_for_training

from lib.io import read_volume

pytestmark = pytest.mark.e2e  # starts real servers

TINY = {"segmentation.channels": "[4, 8]", "segmentation.strides": "[2]", "segmentation.num_res_units": "0",
        "segmentation.patch_size": "[16, 16, 16]", "segmentation.batch_size": "2", "segmentation.steps_per_epoch": "2",
        "segmentation.epochs": "1", "segmentation.plc.warmup_epochs": "0"}
NAMES = {"bright": 1, "dark": 2}


def post_train(url: str, model: str, params: dict) -> tuple[int, dict]:
    req = urllib.request.Request(f"{url}/train/{model}", data=json.dumps(params).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_segmentation_trainer_and_infer_through_the_server(tmp_path, server_factory):
    studies = tmp_path / "studies"
    studies.mkdir()
    labels = {}
    for i, shift in enumerate((0, 2, -2)):
        image, labels[i] = phantom(shift, seed=i)
        save_nifti(image, studies / f"case_{i}.nii.gz", spacing=SPACING)
    server = server_factory(studies, conf=TINY)
    client = server.client()
    info = client.info()
    assert "segmentation" in info["trainers"] and "segmentation" in info["models"]

    with pytest.raises(MONAILabelClientException) as e:  # nothing published yet
        client.infer("segmentation", "case_1", {})
    assert "Status: 409" in e.value.msg and "trainer 'segmentation'" in e.value.msg

    code, body = post_train(server.url, "segmentation", {})
    assert code == 400 and "no drafts and no final labels" in body["detail"]

    # drafts as batch pre-labeling writes them: a noisy label (an organ shifted by 2 voxels)
    for i in (1, 2):
        noisy = np.roll(labels[i], 2, axis=0)
        path = save_nifti(noisy, tmp_path / f"draft_{i}.nii.gz", spacing=SPACING)
        client.save_label(f"case_{i}", str(path), tag="original", params={"label_names": NAMES})

    code, body = post_train(server.url, "segmentation", {"noise_strategy": "coteaching"})
    assert code == 400 and all(s in body["detail"] for s in ("none", "plc", "mcpm", "oeem"))
    code, body = post_train(server.url, "segmentation", {"epoch": 2})  # misspelt: not silently trained 20 epochs
    assert code == 400 and "unknown key 'epoch' in the request to trainer 'segmentation'" in body["detail"], body
    assert "epochs" in body["detail"]
    code, body = post_train(server.url, "segmentation", {"noise_strategy": "mcpm"})
    assert code == 400 and "'final' label" in body["detail"]
    code, body = post_train(server.url, "segmentation", {"lr_decay": "cosine"})
    assert code == 400 and "lr_decay" in body["detail"] and "poly" in body["detail"]

    # a clean final label, as Slicer saves it (label_info with idx)
    path = save_nifti(labels[0], tmp_path / "final_0.nii.gz", spacing=SPACING)
    client.save_label("case_0", str(path), tag="final",
                      params={"label_info": [{"name": "bright", "idx": 1}, {"name": "dark", "idx": 2}]})

    for strategy in ("none", "oeem", "mcpm", "plc"):
        code, body = post_train(server.url, "segmentation", {"noise_strategy": strategy, "restart": True})
        assert code == 200, body
        status = wait_for_training(client)
        assert status["status"] == "DONE", (strategy, status, server.log_tail())
        stats = client.info()["train_stats"]["segmentation"]
        assert stats["noise_strategy"] == strategy and stats["epoch"] == 1 and stats["studies"] == 3 and stats["final"] == 1
        assert np.isfinite(stats["loss"]) and stats["label_names"] == NAMES

    # PLC: corrected drafts persisted under their own tag, the final label never
    ds = client.datastore()["objects"]
    assert {"plc"} <= set(ds["case_1"]["labels"]) and {"plc"} <= set(ds["case_2"]["labels"])
    assert "plc" not in ds["case_0"]["labels"]
    assert ds["case_1"]["labels"]["plc"]["info"]["label_names"] == NAMES
    first = client.info()["train_stats"]["segmentation"]["history"][0]
    assert "delta" in first and first["delta"] == pytest.approx(0.95)

    # an interrupted / extended PLC run continues from its checkpoint (epoch 1 → 2), δ decays
    code, _ = post_train(server.url, "segmentation", {"noise_strategy": "plc", "epochs": 2})
    assert code == 200 and wait_for_training(client)["status"] == "DONE"
    history = client.info()["train_stats"]["segmentation"]["history"]
    assert [h["epoch"] for h in history] == [1, 2] and history[1]["delta"] == pytest.approx(0.95 * 0.99)

    # the published model, hot-reloaded by the infer task
    result, body = client.infer("segmentation", "case_2", {})
    assert body["label_names"] == NAMES and body["noise_strategy"] == "plc" and body["epoch"] == 2 and body["cached"] is False
    pred = read_volume(result).array
    assert pred.shape == labels[2].shape and set(np.unique(pred)) <= {0, 1, 2}
    assert client.info()["models"]["segmentation"]["labels"] == NAMES
    assert body["min_component_fraction"] == 0.25  # the app's default post-processing
    again, body = client.infer("segmentation", "case_2", {})  # computed once per study and model version
    assert body["cached"] is True
    np.testing.assert_array_equal(read_volume(again).array, pred)
    _, body = client.infer("segmentation", "case_2", {"min_component_fraction": 0})
    assert body["min_component_fraction"] == 0.0 and body["cached"] is False
    with pytest.raises(MONAILabelClientException) as e:
        client.infer("segmentation", "case_2", {"min_component_fraction": 2})
    assert "Status: 400" in e.value.msg and "min_component_fraction" in e.value.msg

    # the model in the interaction: a correction of case_2's draft uses the published model's posteriors for the
    # classes it knows (by name), unless the request turns them off
    noisy = np.roll(labels[2], 2, axis=0)
    stroke = np.zeros(noisy.shape, np.uint8)
    stroke[(labels[2] == 1) & (noisy != 1)] = 4  # where the draft misses the bright organ
    f = str(save_nifti(stroke, tmp_path / "stroke.nii.gz", spacing=SPACING))
    info = [{"name": "bright", "id": 1}, {"name": "background_scribbles", "id": 3}, {"name": "foreground_scribbles", "id": 4}]
    params = {"label_info": info, "selected_label_name": "bright"}
    path, body = client.infer("scribbles_geos", "case_2", params, label_in=f)
    assert body["correction"]["from"] == "original" and body["correction"]["model_classes"] == ["bright", "dark"]
    assert read_volume(path).array[stroke == 4].all()  # the strokes still decide where they lie
    _, body = client.infer("scribbles_geos", "case_2", {**params, "model_prior": False}, label_in=f)
    assert body["correction"]["model_classes"] == [] and body["correction"]["intensity_model"] == "histograms"
    with pytest.raises(MONAILabelClientException) as e:
        client.infer("scribbles_geos", "case_2", {**params, "model_prior": "maybe"}, label_in=f)
    assert "Status: 400" in e.value.msg and "model_prior" in e.value.msg
    # the model's own prediction as the label to correct, with its posteriors
    _, body = client.infer("scribbles_geos", "case_2", {**params, "correct": "segmentation"}, label_in=f)
    assert body["correction"]["from"] == "segmentation" and body["correction"]["model_classes"] == ["bright", "dark"]
