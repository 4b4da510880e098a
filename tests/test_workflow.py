"""The one-shot workflow end to end on a tiny synthetic cohort, through real servers; every table filled."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import save_nifti
from conftest import two_organ_phantom as phantom

from lib.data.scribbles import simulate_scribbles
from lib.workflow.report import write_report
from lib.workflow.runner import Budget, Split, Workflow

SPACING = (3.0, 3.0, 3.0)
NAMES = {"bright": 1, "dark": 2}
TINY = {"prnet.train.base_channels": "4", "prnet.train.fc_hidden": "16", "prnet.train.batch_pairs": "2", "prnet.propagation.n_starts": "2",
        "prnet.propagation.refine_steps": "1", "prnet.prelabel.stride": "3", "prnet.propagation.batch_size": "16",
        "segmentation.channels": "[4, 8]", "segmentation.strides": "[2]", "segmentation.num_res_units": "0",
        "segmentation.patch_size": "[16, 16, 16]", "segmentation.batch_size": "2", "segmentation.plc.warmup_epochs": "0",
        "segmentation.mcpm.meta_batch": "1"}


def tiny_cohort(root):
    for d in ("studies", "ground_truth", "scribbles"):
        (root / d).mkdir(parents=True)
    for i, shift in enumerate((0, 2, -2, 1, -1, 3)):
        name = "subject" if i == 0 else f"case_{i}"
        image, label = phantom(shift, seed=i)
        save_nifti(image, root / "studies" / f"{name}.nii.gz", spacing=SPACING)
        save_nifti(label, root / "ground_truth" / f"{name}.nii.gz", spacing=SPACING)
        if i == 0:
            s = simulate_scribbles(label, image, NAMES, background_id=3)
            save_nifti(s.astype(np.uint8), root / "scribbles" / "subject.nii.gz", spacing=SPACING)
    (root / "ground_truth" / "labels.json").write_text(json.dumps(NAMES))
    info = [{"name": n, "id": i} for n, i in NAMES.items()] + [{"name": "background", "id": 3}]
    (root / "scribbles" / "label_info.json").write_text(json.dumps(info))
    return root


@pytest.mark.e2e
def test_workflow_runs_resumes_and_fills_every_table(tmp_path):
    cohort = tiny_cohort(tmp_path / "cohort")
    split = Split.from_cohort(cohort, n_val=1, n_test=2)
    assert split.support == "subject" and split.train == ["case_1", "case_2"] and split.val == ["case_3"]
    assert split.test == ["case_4", "case_5"]

    out = tmp_path / "out"
    budget = Budget(prnet_steps=4, seg_epochs=1, seg_steps=2)
    state = Workflow(cohort, out, budget, conf=TINY, split=split).run()
    stages = state["stages"]
    assert all(stages[s]["done"] for s in ("support", "prnet", "tau", "prelabel", "test_upload", "geos_only",
                                            "seg_none", "seg_plc", "seg_oeem", "seg_mcpm", "supervised"))
    # the test studies were never trained on: drafts only on support + train, MCPM's meta set is validation
    assert stages["prelabel"]["result"]["drafts"] == 3
    for s in ("seg_none", "seg_plc", "seg_oeem"):
        assert stages[s]["result"]["train"] | {"elapsed_s": 0, "loss": 0} == {
            "epoch": 1, "studies": 3, "final": 0, "elapsed_s": 0, "loss": 0, "device": "cpu"}, s
    assert stages["seg_mcpm"]["result"]["train"]["studies"] == 4 and stages["seg_mcpm"]["result"]["train"]["final"] == 1
    assert stages["supervised"]["result"]["train"]["final"] == 3
    for s in ("geos_only", "seg_none", "supervised"):
        assert set(stages[s]["result"]["per_study"]) == {"case_4", "case_5"}
        assert 0.0 <= stages[s]["result"]["mean"]["mean"] <= 1.0

    # the report states the budget the run was made with; a resume with another budget is refused
    report = write_report(Workflow(cohort, out, None, conf=TINY))
    assert "Budget: PRNet 4 steps; each UNet 1 epochs × 2 steps." in report.read_text()
    with pytest.raises(ValueError, match="Resume with the same flags"):
        Workflow(cohort, out, Budget(prnet_steps=2000), conf=TINY)
    text = report.read_text()
    for heading in ("Table 1", "Table 2", "Table 3", "Wall time", "Caveats"):
        assert heading in text
    assert "(not run yet)" not in text and "figures failed" not in text
    assert "of the upper bound" in text and "ours (PRNet drafts + UNet, none)" in text and text.count("| τ = ") == 3 and "+ UNet + MCPM" in text
    assert (out / "figures" / "overlays.png").stat().st_size > 10_000
    # the DFD panel's data: the propagated points of the first train study at the default tau, kept and rejected
    if "error" not in stages["tau"]["result"]["0.5"]["info"]["case_1"]:
        points = json.loads((out / "pred" / "pseudo" / "case_1.points.json").read_text())
        assert set(points) == {"bright", "dark", "background"} and all({"kept", "rejected"} == set(v) for v in points.values())
        assert "propagated points" in text

    # resumable: a second run redoes nothing
    t = {k: v["seconds"] for k, v in stages.items()}
    again = Workflow(cohort, out, budget, conf=TINY).run()["stages"]
    assert {k: v["seconds"] for k, v in again.items()} == t
    # a `notes` list in state.json (stages carried over by a re-run) is printed under the header
    st = json.loads((out / "state.json").read_text())
    (out / "state.json").write_text(json.dumps({**st, "notes": ["prnet carried over from run 1"]}))
    assert "Note: prnet carried over from run 1" in write_report(Workflow(cohort, out, None, conf=TINY)).read_text()


def test_report_compares_on_the_papers_organs_only_when_the_cohort_has_them():
    from lib.workflow.report import paper_organs_line

    organs = ["liver", "spleen", "kidney_left", "pancreas"]
    ours = {"liver": 0.9, "spleen": 0.8, "kidney_left": 0.7, "pancreas": 0.1, "mean": 0.625}
    sup = {"liver": 1.0, "spleen": 1.0, "kidney_left": 1.0, "pancreas": 1.0, "mean": 1.0}
    line = paper_organs_line(ours, sup, organs)
    assert "ours 0.800 vs 1.000, **80.0 %**" in line and "all 4 organs" in line  # pancreas left out
    assert paper_organs_line(ours, sup, ["liver", "pancreas"]) == ""
