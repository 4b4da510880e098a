"""One physical frame: canonical views, world coordinates, re-acquired copies, per-study intensities."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from lib.data.reacquire import add_noise, reorient, resample, slab
from lib.frame import View, axcodes, world_affine
from lib.intensity import modality_of, normalise_study, study_window
from lib.io import read_volume


def ct_like(shape=(30, 26, 20), seed=0) -> sitk.Image:
    """A small CT-like study (air, body, a bright off-centre blob, so every axis flip shows), RAS-stored at 2×2×3 mm."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    a = np.full(shape, -1000.0)
    a[4:-4, 3:-3, :] = 40.0
    a[np.linalg.norm(grid - [20, 9, 7], axis=-1) < 4] = 300.0
    a += rng.normal(0, 5, shape)
    img = sitk.GetImageFromArray(a.astype(np.int16).transpose(2, 1, 0))
    img.SetSpacing((2.0, 2.0, 3.0))
    img.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))  # ITK's LPS direction of a RAS-stored array
    img.SetOrigin((30.0, -12.0, 5.0))
    return img


def volume(img: sitk.Image, tmp_path, name: str):
    path = tmp_path / f"{name}.nii.gz"
    sitk.WriteImage(img, str(path))
    return read_volume(str(path))


@pytest.mark.parametrize("orientation", ["LPS", "LAS", "AIL", "SRA"])
def test_any_stored_orientation_gives_the_same_canonical_study(tmp_path, orientation):
    ref = volume(ct_like(), tmp_path, "ref")
    copy = volume(reorient(ct_like(), orientation), tmp_path, orientation)
    assert axcodes(copy.affine) == orientation and axcodes(ref.affine) == "RAS"
    a, b = ref.view(), copy.view()
    np.testing.assert_allclose(a.affine, b.affine, atol=1e-4)
    np.testing.assert_array_equal(a.image(ref.array), b.image(copy.array))
    # a label made on the canonical grid goes back onto each study's own grid, where it covers the same voxels
    blob = (a.image(ref.array) > 200).astype(np.uint8)
    assert blob.sum() > 50
    np.testing.assert_array_equal(a.to_native(blob), (ref.array > 200).astype(np.uint8))
    np.testing.assert_array_equal(b.to_native(blob), (copy.array > 200).astype(np.uint8))
    # per-class maps (leading axes) and a box of the stored grid: the same voxels as the whole label, cropped
    maps = np.stack([blob, 1 - blob]).astype(np.float32)
    box = (slice(3, 17), slice(2, 9), slice(1, 12))
    np.testing.assert_array_equal(b.to_native(maps, box)[0], b.to_native(blob)[box])
    np.testing.assert_array_equal(b.to_native(maps)[1], 1 - b.to_native(blob))
    # a voxel index travels between the two through world millimetres
    p = np.array([[20, 9, 7]])
    q = np.rint(b.world_to_native(a.native_to_world(p))).astype(int)[0]
    assert copy.array[tuple(q)] == ref.array[20, 9, 7]


def test_resampling_keeps_the_field_of_view_and_the_world_position(tmp_path):
    ref = volume(ct_like(), tmp_path, "ref")
    fine = volume(resample(ct_like(), (1.0, 1.0, 1.5)), tmp_path, "fine")
    assert fine.array.shape == (60, 52, 40)
    v = fine.view((2.0, 2.0, 3.0))  # back to the reference's voxel: the reference's grid exactly
    assert v.shape == ref.array.shape
    np.testing.assert_allclose(v.affine, ref.view().affine, atol=1e-6)
    blob_ref = ref.array > 200
    blob = v.image(fine.array) > 150
    assert 2 * (blob & blob_ref).sum() / (blob.sum() + blob_ref.sum()) > 0.9
    # nearest-neighbour labels both ways
    lab = (fine.array > 200).astype(np.uint8)
    back = v.to_native(v.labels(lab))
    assert back.shape == lab.shape and 2 * (back & lab).sum() / (back.sum() + lab.sum()) > 0.85


def test_a_slab_sits_where_it_was_cut_and_points_outside_it_are_outside(tmp_path):
    ref = volume(ct_like(), tmp_path, "ref")
    cut = volume(slab(ct_like(), 2, 5, 6), tmp_path, "slab")
    v = cut.view()
    np.testing.assert_array_equal(v.image(cut.array), ref.view().image(ref.array)[:, :, 5:11])
    world = ref.view().native_to_world(np.array([[10, 10, 7], [10, 10, 2], [10, 10, 15]]))
    np.testing.assert_array_equal(v.inside(v.from_world(world)), [True, False, False])


def test_world_affine_matches_nibabel(tmp_path):
    img = reorient(ct_like(), "LPS")
    path = tmp_path / "x.nii.gz"
    sitk.WriteImage(img, str(path))
    import nibabel as nib

    np.testing.assert_allclose(world_affine(img.GetOrigin(), img.GetSpacing(), img.GetDirection()), nib.load(str(path)).affine, atol=1e-4)


def test_noise_keeps_geometry_and_type():
    img = ct_like()
    noisy = add_noise(img, 30.0, seed=1)
    assert noisy.GetOrigin() == img.GetOrigin() and noisy.GetPixelID() == img.GetPixelID()
    diff = sitk.GetArrayFromImage(noisy).astype(float) - sitk.GetArrayFromImage(img)
    assert 25 < diff.std() < 35


def test_ct_and_mr_are_told_apart_and_mr_is_normalised_from_its_own_range():
    ct = sitk.GetArrayFromImage(ct_like()).astype(np.float32)
    rng = np.random.default_rng(0)
    mr = np.where(ct > -500, 400.0 + ct, 10.0) + rng.normal(0, 5, ct.shape)  # magnitude image, no negative air
    assert modality_of(ct) == "CT" and modality_of(mr) == "MR"
    window = ([-500, -100, 200, 1500], [0.0, 0.2, 0.8, 1.0])
    assert study_window(ct, *window)[:2] == (tuple(map(float, window[0])), tuple(window[1]))
    mr01, modality = normalise_study(mr, *window)
    assert modality == "MR" and mr01.min() >= 0 and mr01.max() <= 1
    blob, body = ct > 200, (ct > -500) & (ct <= 200)
    # tissue contrast spans the range from the air up, where the fixed HU window squeezes it into 0.84..0.88;
    # the air is 0 and the body's darkest tissue is above it (never clipped with the air)
    assert mr01[blob].mean() - mr01[body].mean() > 0.3
    assert mr01[ct <= -500].mean() < 0.05 and np.percentile(mr01[body], 1) > 0.3
    hu01 = np.interp(mr, *window)
    assert hu01[blob].mean() - hu01[body].mean() < 0.1
    # the same MR at another scale (another scanner) normalises to the same values
    np.testing.assert_allclose(normalise_study(mr * 3.0 + 50.0, *window)[0], mr01, atol=1e-4)
    with pytest.raises(ValueError, match="modality"):
        study_window(ct, *window, modality="PET")


def test_view_rejects_a_zero_voxel_size():
    with pytest.raises(ValueError, match="> 0 mm"):
        View.of((4, 4, 4), np.eye(4), (1.0, 0.0, 1.0))


def test_a_support_and_a_study_of_different_modalities_get_no_draft(tmp_path):
    """PRNet's features do not carry across modalities: the draft is refused with what to scribble instead."""
    from lib.geos import GeoSConfig
    from lib.prnet.prelabel import prelabel

    ct = volume(ct_like(), tmp_path, "ct")
    mr_array = np.where(ct.array > -500, 400.0 + ct.array, 10.0).astype(np.int16)
    img = sitk.GetImageFromArray(mr_array.transpose(2, 1, 0))
    img.CopyInformation(ct_like())
    mr = volume(img, tmp_path, "mr")
    scribbles = np.zeros(ct.array.shape, np.int64)
    scribbles[18:22, 9, 7], scribbles[5:25, 2, 7] = 1, 2
    with pytest.raises(ValueError, match="support study is CT and this study MR"):
        prelabel(None, ct, scribbles, {"blob": 1, "background": 2}, mr, 2, GeoSConfig())
