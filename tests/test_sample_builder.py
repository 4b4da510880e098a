"""Unit tests of the sample-cohort builder (lib.data): warp alignment and scribble placement."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from lib.data.deform import DeformConfig, deform_pair, locate_in_pseudo, source_coordinates
from lib.data.labels import label_info, names_from_info, reduce_labels
from lib.data.scribbles import ScribbleConfig, organ_slices, simulate_scribbles, stroke_in_slice
from lib.evaluation.metrics import dice


def phantom(shape=(48, 44, 36)):
    """Body (0 HU) in air (-1000) with three ellipsoid 'organs' of distinct HU; ``(image, label)``."""
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1).astype(float)
    body = (((grid - [24, 22, 18]) / [22, 20, 40]) ** 2).sum(-1) <= 1
    label = np.zeros(shape, np.uint8)
    for organ_id, (c, r) in enumerate([((15, 22, 18), (7, 9, 10)), ((33, 16, 16), (5, 5, 8)), ((32, 30, 20), (4, 6, 6))], 1):
        label[(((grid - c) / r) ** 2).sum(-1) <= 1] = organ_id
    image = np.where(body, 0.0, -1000.0)
    image[label > 0] = 400.0 * label[label > 0]
    return image.astype(np.float32), label


def test_image_and_labels_warped_by_the_same_field_stay_aligned():
    _, label = phantom()
    cfg = DeformConfig(noise_sd_hu=0.0, intensity_shift_hu=0.0, intensity_scale=0.0)
    for organ_id in (1, 2, 3):
        # an image that is bright exactly on this organ: read back by thresholding, it must match the
        # (nearest-neighbour) warped label when both went through the same field
        image = np.where(label == organ_id, 1000.0, 0.0).astype(np.float32)
        w_image, w_label = deform_pair(image, label, cfg, seed=7)
        assert w_image.shape == image.shape and w_label.dtype == np.uint8
        moved = dice(w_label == organ_id, label == organ_id)
        assert moved < 0.9, f"the warp must move organ {organ_id} for this test to mean anything ({moved:.2f})"
        assert dice(w_image > 500, w_label == organ_id) > 0.95


def test_true_correspondence_maps_organ_points_into_the_warped_organ():
    image, label = phantom()
    cfg = DeformConfig()
    _, w_label = deform_pair(image, label, cfg, seed=7)
    src = source_coordinates(label.shape, cfg, seed=7)
    assert src.shape == (3, *label.shape)
    for organ_id in (1, 2, 3):
        core = ndi.binary_erosion(label == organ_id, iterations=2)  # nearest-neighbour label edges aside
        pts = np.argwhere(core)
        located = locate_in_pseudo(pts, src)
        assert np.mean(w_label[tuple(located.T)] == organ_id) > 0.97
        assert np.mean(w_label[tuple(pts.T)] == organ_id) < 0.9  # the same index is not enough: the warp moved it


def test_deformation_is_seeded_and_reproducible():
    image, label = phantom()
    a = deform_pair(image, label, DeformConfig(), seed=3)
    b = deform_pair(image, label, DeformConfig(), seed=3)
    c = deform_pair(image, label, DeformConfig(), seed=4)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_every_scribble_voxel_lies_inside_its_organ_and_background_outside_all():
    image, label = phantom()
    names = {"a": 1, "b": 2, "c": 3}
    cfg = ScribbleConfig(slices_per_organ=3, erosion_vox=2, background_margin_vox=3, background_ring_vox=4)
    s = simulate_scribbles(label, image, names, background_id=4, cfg=cfg)
    for organ_id in names.values():
        assert (s == organ_id).sum() > 0
        assert np.all(label[s == organ_id] == organ_id)
        # strokes sit on the requested number of axial slices of the organ
        assert len(np.unique(np.nonzero(s == organ_id)[2])) == 3
    bg = s == 4
    assert bg.sum() > 0
    assert np.all(label[bg] == 0)
    dist_to_organ = ndi.distance_transform_edt(label == 0)
    assert dist_to_organ[bg].min() > cfg.background_margin_vox
    assert np.all(image[bg] > cfg.body_threshold_hu), "background strokes stay inside the body"


def test_stroke_keeps_to_the_eroded_region_and_thin_regions_still_get_one():
    region = np.zeros((30, 30), bool)
    region[5:25, 12:18] = True
    stroke = stroke_in_slice(region, erosion_vox=2, width_vox=1)
    assert stroke.sum() >= 10 and np.all(region[stroke])
    assert np.all(ndi.binary_erosion(region, iterations=1)[stroke])
    thin = np.zeros((30, 30), bool)
    thin[10, 5:20] = True  # one voxel thick: erosion would empty it
    assert stroke_in_slice(thin, erosion_vox=2, width_vox=1).sum() > 0


def test_stroke_follows_a_curved_organ_along_its_middle():
    # a thick arc (like a pancreas on an axial slice): a straight stroke would cover a short chord only
    ii, jj = np.mgrid[0:60, 0:60]
    r = np.hypot(ii - 30, jj - 5)
    region = (r > 18) & (r < 26) & (ii > 5)
    stroke = stroke_in_slice(region, erosion_vox=2, width_vox=0)
    assert np.all(region[stroke])
    assert np.all(ndi.distance_transform_edt(region)[stroke] >= 3), "the stroke keeps 2 voxels inside"
    # it runs along the arc: its ends are far apart along the arc, at the arc's middle radius
    assert stroke.sum() >= 35
    assert np.abs(r[stroke] - 22).max() <= 2.5


def test_background_strokes_on_every_scribbled_slice():
    image, label = phantom()
    s = simulate_scribbles(label, image, {"a": 1}, background_id=4,
                           cfg=ScribbleConfig(slices_per_organ=3, background_margin_vox=2, background_ring_vox=3))
    organ_slices_ = set(np.nonzero(s == 1)[2])
    assert organ_slices_ == set(np.nonzero(s == 4)[2])


def test_organ_slices_spread_over_the_extent():
    m = np.zeros((4, 4, 40), bool)
    m[:, :, 10:31] = True
    assert organ_slices(m, 3) == [15, 20, 25]


def test_reduce_labels_renumbers_in_order_and_refuses_absent_organs():
    seg = np.array([[[5, 1, 52, 0, 9]]])
    out, names = reduce_labels(seg, {"liver": 5, "spleen": 1, "aorta": 52})
    assert names == {"liver": 1, "spleen": 2, "aorta": 3}
    np.testing.assert_array_equal(out, [[[1, 2, 3, 0, 0]]])
    with pytest.raises(ValueError, match="pancreas"):
        reduce_labels(seg, {"pancreas": 7})
    assert names_from_info(label_info(names)) == names
