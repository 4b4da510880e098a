"""The documented sample-data step on the real CT, served by the app (subject A's support scribbles).

Uses ``sample-data/cache`` (downloads the PyPI source archive once, as the README's set-up does).
"""

from __future__ import annotations

import importlib.util
import json
import os

import nibabel as nib
import numpy as np
import pytest
from conftest import REPO_ROOT

pytestmark = pytest.mark.e2e  # starts real servers

_spec = importlib.util.spec_from_file_location("build_cohort", REPO_ROOT / "sample-data" / "build_cohort.py")
build_cohort = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_cohort)


def test_real_cohort_builds_idempotently_and_serves_the_support_scribbles(tmp_path, server_factory, capsys):
    out = tmp_path / "cohort"
    assert build_cohort.main(["--out", str(out), "--n-pseudo", "1"]) == 0
    studies = out / "studies"
    assert sorted(p.name for p in studies.glob("*.nii.gz")) == ["pseudo_01.nii.gz", "subject_a.nii.gz"]
    # ground truth is kept outside the served studies folder
    assert sorted(p.name for p in (out / "ground_truth").glob("*.nii.gz")) == ["pseudo_01.nii.gz", "subject_a.nii.gz"]
    names = json.loads((out / "ground_truth" / "labels.json").read_text())
    assert {"liver", "spleen", "kidney_left", "kidney_right", "aorta", "stomach", "pancreas"} <= set(names)
    assert (out / "LICENSE-TotalSegmentator").exists()

    # a second run with the same settings leaves everything as it is
    stamp = os.stat(studies / "subject_a.nii.gz").st_mtime_ns
    capsys.readouterr()
    assert build_cohort.main(["--out", str(out), "--n-pseudo", "1"]) == 0
    assert "up to date" in capsys.readouterr().out
    assert os.stat(studies / "subject_a.nii.gz").st_mtime_ns == stamp
    # other settings are refused without --force (nothing is lost by accident)
    assert build_cohort.main(["--out", str(out), "--n-pseudo", "2"]) == 2

    server = server_factory(studies)
    client = server.client()
    info = client.info()
    assert info["datastore"]["total"] == 2
    assert info["datastore"]["label_tags"].get("scribbles") == 1
    label_info = client.datastore()["objects"]["subject_a"]["labels"]["scribbles"]["info"]["label_info"]
    ids = {d["name"]: d["id"] for d in label_info}
    assert ids["background"] == len(names) + 1 and all(ids[n] == i for n, i in names.items())

    served = np.asarray(nib.load(client.download_label("subject_a", "scribbles")).dataobj)
    truth = np.asarray(nib.load(str(out / "ground_truth" / "subject_a.nii.gz")).dataobj)
    assert served.shape == truth.shape
    for name, organ_id in names.items():
        assert (served == organ_id).sum() > 0, f"no scribble for {name}"
        assert np.all(truth[served == organ_id] == organ_id), f"a {name} scribble leaves the organ"
    assert np.all(truth[served == ids["background"]] == 0)
