"""Correction mode: scribbles and clicks fix a label instead of segmenting again (lib/correction.py), in
process and through the real server with MONAI Label's client (the label looked up in the datastore)."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import save_nifti

from lib.correction import CorrectionConfig, correct_label
from lib.evaluation.metrics import dice
from lib.evaluation.robot import next_correction, stroke
from lib.geos import GeoSConfig
from lib.io import read_volume

SPACING = (1.5, 1.5, 2.0)
NAMES = {"liver": 1, "spleen": 2}


def phantom(seed: int = 0):
    """A 'liver' (1, 60 HU) and a 'spleen' (2, 120 HU) in fat (-100 HU), noise 10 HU; ``(image, truth)``."""
    rng = np.random.default_rng(seed)
    shape = (60, 50, 30)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1) * np.asarray(SPACING)
    truth = np.zeros(shape, np.uint8)
    truth[np.linalg.norm((grid - [30, 37, 30]) / [1.0, 0.8, 1.0], axis=-1) < 18] = 1
    truth[np.linalg.norm(grid - [70, 37, 30], axis=-1) < 10] = 2
    image = np.choose(truth, [-100.0, 60.0, 120.0]) + rng.normal(0, 10, shape)
    return image.astype(np.int16), truth


def draft_of(truth: np.ndarray) -> np.ndarray:
    """The truth with the liver's lower part missing (i ≥ 20) and a leak of the liver into fat (a slab above it)."""
    draft = truth.copy()
    draft[20:, :, :][draft[20:, :, :] == 1] = 0
    draft[8:14, 8:12, 10:20] = 1  # fat labelled liver, touching nothing: a false positive region
    return draft


def test_a_foreground_stroke_adds_what_is_missing_and_nothing_far_changes():
    image, truth = phantom()
    draft = draft_of(truth)
    c = next_correction(draft == 1, truth == 1, SPACING)
    assert c is not None and c.foreground  # the missing part is the largest error
    out, stats = correct_label(image, draft, {1: stroke(image.shape, c, SPACING)}, SPACING)
    assert dice(out == 1, truth == 1) > dice(draft == 1, truth == 1) + 0.1
    missing = (truth == 1) & (draft != 1)
    assert (out[missing] == 1).mean() > 0.9  # the missing part, back
    assert (out[truth == 0] == 1).sum() <= (draft[truth == 0] == 1).sum() + 0.02 * (truth == 1).sum()  # no leak into fat
    assert np.array_equal(out == 2, draft == 2)  # the spleen (another class, another intensity) as it was
    far = np.ones(image.shape, bool)
    far[tuple(slice(a, b) for a, b in stats["crop"])] = False
    assert np.array_equal(out[far], draft[far])  # nothing outside the stroke's reach changed
    assert stats["changed_voxels"][1] > 0.9 * missing.sum()


def test_a_background_stroke_removes_a_false_positive_and_only_its_class():
    image, truth = phantom()
    draft = truth.copy()
    draft[8:14, 8:12, 10:20] = 1  # a false-positive island of liver in fat
    draft[33:35, 20:26, 14:16] = 2  # and a spleen patch in the fat beside the liver (kept: the stroke removes liver only)
    c = next_correction(draft == 1, truth == 1, SPACING)
    assert c is not None and not c.foreground
    out, _ = correct_label(image, draft, {0: stroke(image.shape, c, SPACING)}, SPACING, removable=[1])
    assert not out[8:14, 8:12, 10:20].any()  # the island is gone
    assert np.array_equal(out == 2, draft == 2)
    assert np.array_equal(out[truth == 1], draft[truth == 1])  # the true liver, untouched


def test_a_working_grid_coarser_than_the_stored_one_and_a_crop_of_odd_size():
    """0.75 mm voxels: the geodesics run on 2-voxel blocks; a crop whose size is no multiple of the block."""
    image, truth = phantom()
    fine_image = np.repeat(np.repeat(image, 2, axis=0), 2, axis=1)[:-1, :-1]
    fine_truth = np.repeat(np.repeat(truth, 2, axis=0), 2, axis=1)[:-1, :-1]
    spacing = (0.75, 0.75, 2.0)
    draft = fine_truth.copy()
    draft[40:][draft[40:] == 1] = 0
    c = next_correction(draft == 1, fine_truth == 1, spacing)
    out, stats = correct_label(fine_image, draft, {1: stroke(fine_image.shape, c, spacing)}, spacing)
    assert stats["working_spacing_mm"][0] == 1.5
    assert dice(out == 1, fine_truth == 1) > dice(draft == 1, fine_truth == 1) + 0.1


def test_strokes_outside_the_image_or_none_are_refused():
    image, truth = phantom()
    with pytest.raises(ValueError, match="no correction stroke"):
        correct_label(image, truth, {1: np.zeros(image.shape, bool)}, SPACING)
    with pytest.raises(ValueError, match="shape"):
        correct_label(image, truth[:-1], {1: np.ones(image.shape, bool)}, SPACING)


def test_three_robot_rounds_reach_090_from_the_draft():
    image, truth = phantom(seed=3)
    label = draft_of(truth)
    scores = [dice(label == 1, truth == 1)]
    for _ in range(3):
        c = next_correction(label == 1, truth == 1, SPACING)
        if c is None:
            break
        label, _ = correct_label(image, label, {1 if c.foreground else 0: stroke(image.shape, c, SPACING)}, SPACING,
                                 GeoSConfig(), CorrectionConfig(), removable=[1])
        scores.append(dice(label == 1, truth == 1))
    assert scores[0] < 0.8 and scores[-1] >= 0.9, scores
    assert all(b >= a - 0.01 for a, b in zip(scores, scores[1:])), scores


# -- through the server ---------------------------------------------------------------------------------

BG, FG = 3, 4
SLICER_INFO = [{"name": "liver", "id": 1}, {"name": "spleen", "id": 2},
               {"name": "background_scribbles", "id": BG}, {"name": "foreground_scribbles", "id": FG}]


@pytest.mark.e2e
def test_scribbles_and_clicks_correct_the_studys_draft_through_the_server(tmp_path, server_factory):
    image, truth = phantom()
    studies = tmp_path / "studies"
    studies.mkdir()
    save_nifti(image, studies / "case.nii.gz", spacing=SPACING)
    draft = draft_of(truth)
    server = server_factory(studies)
    client = server.client()
    client.save_label("case", str(save_nifti(draft, tmp_path / "draft.nii.gz", spacing=SPACING)), tag="original",
                      params={"label_names": NAMES})
    c = next_correction(draft == 1, truth == 1, SPACING)
    scribbles = np.where(stroke(image.shape, c, SPACING), FG, 0).astype(np.uint8)
    f = str(save_nifti(scribbles, tmp_path / "scribbles.nii.gz", spacing=SPACING))
    params = {"label_info": SLICER_INFO, "selected_label_name": "liver"}

    # Slicer: the draft `original` is found by the image id and corrected; the answer is the liver's 0/1 mask
    path, body = client.infer("scribbles_geos", "case", params, label_in=f)
    out = read_volume(path).array
    assert body["correction"]["from"] == "original" and body["label_names"] == {"liver": 1}
    assert dice(out == 1, truth == 1) > dice(draft == 1, truth == 1) + 0.1
    assert out[8:14, 8:12, 10:20].all()  # the draft's other error is still there: nobody argued about it
    # a background stroke alone (no foreground) removes the false-positive island
    both = scribbles.copy()
    both[10:12, 9:11, 14:16] = BG
    path, body = client.infer("scribbles_geos", "case", params,
                              label_in=str(save_nifti(both, tmp_path / "both.nii.gz", spacing=SPACING)))
    out = read_volume(path).array
    assert not out[8:14, 8:12, 10:20].any() and dice(out == 1, truth == 1) > 0.95
    only_bg = np.where(both == BG, BG, 0).astype(np.uint8)
    path, body = client.infer("scribbles_geos", "case", params,
                              label_in=str(save_nifti(only_bg, tmp_path / "bg.nii.gz", spacing=SPACING)))
    assert not read_volume(path).array[8:14, 8:12, 10:20].any() and body["correction"]["from"] == "original"

    # a saved final takes precedence over the draft
    final = truth.copy()
    final[final == 1] = 0
    client.save_label("case", str(save_nifti(final, tmp_path / "final.nii.gz", spacing=SPACING)), tag="final",
                      params={"label_names": NAMES})
    _, body = client.infer("scribbles_geos", "case", params, label_in=f)
    assert body["correction"]["from"] == "final"

    # the request turns it off: from scratch, one stroke and no background -> the old behaviour
    _, body = client.infer("scribbles_geos", "case", {**params, "correct": False}, label_in=f)
    assert body["correction"]["from"] is None and "geos" in body
    # or names the source
    _, body = client.infer("scribbles_geos", "case", {**params, "correct": "original"}, label_in=f)
    assert body["correction"]["from"] == "original"
    with pytest.raises(Exception, match="Status: 400.*correct.* must be true, false or one of"):
        client.infer("scribbles_geos", "case", {**params, "correct": "elsewhere"}, label_in=f)
    # a structure the label does not hold: from scratch, and the answer says why
    _, body = client.infer("scribbles_geos", "case", {**params, "selected_label_name": "lesion",
                                                      "label_info": SLICER_INFO + [{"name": "lesion", "id": 5}]}, label_in=f)
    assert body["correction"]["from"] is None and "lesion" in body["correction"]["why"]

    # OHIF: one click in the missing part corrects the draft (the final is removed: the draft again)
    client.save_label("case", str(save_nifti(draft, tmp_path / "final2.nii.gz", spacing=SPACING)), tag="final",
                      params={"label_names": NAMES})
    path, body = client.infer("points_geos", "case", {"foreground": [list(c.point)], "selected_label_name": "liver"})
    out = read_volume(path).array
    assert body["correction"]["from"] == "final"
    assert dice(out == 1, truth == 1) > dice(draft == 1, truth == 1) + 0.1


def test_a_background_stroke_on_half_of_a_split_organ_does_not_remove_that_half():
    """A class split into two regions of about the same size is the organ, not an island (robot run on a PRNet
    draft: a pancreas in two halves, one background stroke on a leak of the smaller half removed all of it)."""
    from scipy import ndimage as ndi

    image, truth = phantom()
    draft = truth.copy()
    draft[20:22][draft[20:22] == 1] = 0  # the liver (centre i = 20) cut in two halves of about the same size
    halves, n = ndi.label(draft == 1)
    sizes = np.bincount(halves.ravel())[1:]
    assert n == 2 and sizes.min() > 0.5 * sizes.max()
    small = int(np.argmin(sizes)) + 1
    leak = np.zeros(image.shape, bool)  # a leak of the smaller half into the fat, a background stroke on it
    i, j, k = np.argwhere(halves == small).mean(0).round().astype(int)
    top = np.flatnonzero((halves == small)[i, :, k]).max()
    draft[i - 2:i + 3, top + 1:top + 5, k - 2:k + 3] = 1
    s = np.zeros(image.shape, bool)
    s[i - 1:i + 2, top + 3:top + 5, k - 1:k + 2] = True
    out, _ = correct_label(image, draft, {0: s}, SPACING, removable=[1])
    kept = (halves == small) & (truth == 1)
    assert (out[kept] == 1).mean() > 0.9  # the half stays
    assert not out[s].any()
