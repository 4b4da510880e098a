"""The app through the real server and MONAI Label's own client (Slicer's wire format)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from conftest import save_nifti
from monailabel.client.client import MONAILabelClientException

pytestmark = pytest.mark.e2e  # starts real servers


def test_info_next_sample_save_and_read_back_label(tiny_studies, server_factory, tmp_path):
    server = server_factory(tiny_studies)
    client = server.client()

    info = client.info()
    assert info["name"].startswith("One-shot scribble segmentation")
    assert {"random", "first"} <= set(info["strategies"])
    assert info["datastore"]["total"] == 3 and info["datastore"]["completed"] == 0

    sample = client.next_sample("first", {})
    assert sample["id"] in {"case_0", "case_1", "case_2"}
    image_id = sample["id"]

    image = nib.load(str(tiny_studies / f"{image_id}.nii.gz"))
    label = np.zeros(image.shape, dtype=np.uint8)
    label[10:20, 12:22, 8:14] = 1
    label[25:30, 5:9, 3:6] = 2
    label_file = save_nifti(label, tmp_path / "label.nii.gz", spacing=image.header.get_zooms())
    names = {"liver": 1, "spleen": 2}
    client.save_label(image_id, str(label_file), tag="final", params={"label_names": names})

    ds = client.datastore()
    entry = ds["objects"][image_id]["labels"]["final"]
    assert entry["info"]["label_names"] == names
    assert client.info()["datastore"]["completed"] == 1

    downloaded = client.download_label(image_id, "final")
    back = np.asarray(nib.load(downloaded).dataobj)
    np.testing.assert_array_equal(back, label)
    # no temporary files left beside the saved label (atomic writes clean up after themselves)
    label_dir = tiny_studies / "labels" / "final"
    assert sorted(p.name for p in label_dir.iterdir()) == [f"{image_id}.nii.gz"]
    json.loads((tiny_studies / "datastore_v2.json").read_text())

    # the labeled study is no longer offered by a strategy that skips labeled ones
    next_ids = {client.next_sample("first", {})["id"] for _ in range(2)}
    assert image_id not in next_ids


def test_unknown_image_label_answers_4xx(tiny_studies, server_factory, tmp_path):
    server = server_factory(tiny_studies)
    client = server.client()
    label_file = save_nifti(np.zeros((4, 4, 4), np.uint8), tmp_path / "l.nii.gz")
    with pytest.raises(MONAILabelClientException) as e:
        client.save_label("no_such_case", str(label_file), tag="final")
    assert "Status: 404" in e.value.msg and "no_such_case" in e.value.msg and "not in the datastore" in e.value.msg
