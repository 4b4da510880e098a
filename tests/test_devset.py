"""The development set builder (small version): real scans, and copies that keep their world geometry."""

from __future__ import annotations

import importlib.util
import json

import numpy as np
import pytest
from conftest import REPO_ROOT

from lib.io import read_volume


def builder():
    """``sample-data/build_devset.py`` as a module (the folder is not a package)."""
    spec = importlib.util.spec_from_file_location("build_devset", REPO_ROOT / "sample-data" / "build_devset.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def devset(tmp_path_factory):
    module = builder()
    out = tmp_path_factory.mktemp("devset") / "devset"
    cache = REPO_ROOT / "sample-data" / "cache"
    assert module.main(["--out", str(out), "--small", "--cache", str(cache)]) == 0
    assert module.main(["--out", str(out), "--small", "--cache", str(cache)]) == 0  # up to date: kept as it is
    return out


def test_the_set_holds_real_variety_with_provenance(devset):
    studies = json.loads((devset / "manifest.json").read_text())["studies"]
    assert {"subject_a", "mr_b", "lung1", "lung2", "brain1", "brain2", "a_lps", "a_slab20", "a_08x08x5"} <= set(studies)
    assert "a_07x07x15" not in studies  # --small
    assert {s["modality"] for s in studies.values()} == {"CT", "MR"}
    assert {s["orientation"] for s in studies.values()} >= {"RAS", "LPS", "LAS", "AIL"}
    assert studies["lung1"]["spacing_mm"][2] == 5.0 and studies["lung1"]["shape"][:2] == [512, 512]
    for s in studies.values():
        assert s["license"] and s["source"] and (devset / "studies" / s["image"]).exists()
    assert (devset / "LICENSE-TotalSegmentator").exists() and (devset / "LICENSE-pyradiomics").exists()
    info = json.loads((devset / "scribbles" / "label_info.json").read_text())
    assert {d["name"] for d in info["mr_b"]} >= {"liver", "spleen", "background"}


@pytest.mark.parametrize("copy", ["a_lps", "a_ail", "a_08x08x5", "a_slab40", "a_oblique"])
def test_a_reacquired_copy_keeps_the_anatomy_where_it_was_in_world_space(devset, copy):
    ref = read_volume(str(devset / "ground_truth" / "subject_a.nii.gz"))
    other = read_volume(str(devset / "ground_truth" / f"{copy}.nii.gz"))
    assert other.array.shape == read_volume(str(next((devset / "studies").glob(f"{copy}.*")))).array.shape
    # every liver voxel of the copy, carried through world mm into subject A's grid, is liver there
    ijk = np.argwhere(other.array == 1)
    back = np.rint(ref.view().world_to_native(other.view().native_to_world(ijk))).astype(int)
    inside = np.all((back >= 0) & (back < ref.array.shape), axis=1)
    assert inside.mean() > 0.99
    assert np.mean(ref.array[tuple(back[inside].T)] == 1) > (0.97 if copy != "a_08x08x5" else 0.85)


def test_the_contrast_copies_enhance_the_organs_and_vessels_and_nothing_else(devset):
    """a_contrast: subject A as a portal-venous acquisition (same grid); a_contrast_slab: that, stored L-A-S at
    1 x 1 x 2 mm, 20 slices, with noise."""
    studies = json.loads((devset / "manifest.json").read_text())["studies"]
    assert studies["a_contrast_slab"]["orientation"] == "LAS" and studies["a_contrast_slab"]["shape"][2] == 20
    plain = read_volume(str(devset / "studies" / "subject_a.nii.gz")).array.astype(float)
    enhanced = read_volume(str(devset / "studies" / "a_contrast.nii.gz")).array.astype(float)
    truth = read_volume(str(devset / "ground_truth" / "a_contrast.nii.gz")).array
    names = studies["a_contrast"]["labels"]
    gain = {n: float(np.median(enhanced[truth == i] - plain[truth == i])) for n, i in names.items()}
    assert gain["aorta"] > 100 and gain["kidney_left"] > 100 and 40 < gain["liver"] < 80, gain
    air_and_fat = (truth == 0) & (plain < -50)
    assert np.median(np.abs(enhanced - plain)[air_and_fat]) == 0  # the fat, air and lungs are as they were


def test_enhance_adds_each_class_offset_with_a_partial_volume_ramp():
    import SimpleITK as sitk

    from lib.data.reacquire import enhance

    seg = np.zeros((20, 20, 20), np.uint8)
    seg[5:15, 5:15, 5:15] = 3
    image = sitk.GetImageFromArray(np.full(seg.shape, 40, np.int16))
    image.SetSpacing((2.0, 2.0, 2.0))
    labels = sitk.GetImageFromArray(seg)
    labels.CopyInformation(image)
    out = sitk.GetArrayFromImage(enhance(image, labels, {3: 100, 9: 500}, sigma_vox=0.7))
    assert out.dtype == np.int16
    assert out[10, 10, 10] == 140 and out[0, 0, 0] == 40  # inside the class, far outside it
    assert 40 < out[10, 10, 4] < out[10, 10, 5] < 140  # the edge ramps over a voxel or two
    with pytest.raises(ValueError, match="grid"):
        enhance(image, sitk.GetImageFromArray(seg[:10]), {3: 100})
    # the builder refuses a contrast phase on MR: its offsets are numbered by TotalSegmentator's CT classes
    build = builder()
    with pytest.raises(ValueError, match="MR study"):
        build.reacquire(image, labels, {"contrast": "pv"}, np.zeros(3), 0, labels, {"pv": {3: 100}}, modality="MR")
    enhanced, _ = build.reacquire(image, labels, {"contrast": "pv"}, np.zeros(3), 0, labels, {"pv": {3: 100}})
    assert sitk.GetArrayFromImage(enhanced)[10, 10, 10] == 140


def test_the_oblique_copy_is_stored_on_a_rotated_grid(devset):
    """a_oblique: subject A on a grid tilted 12 degrees about R and turned 8 about S (its field of view grows)."""
    ref, oblique = (read_volume(str(devset / "studies" / f"{n}.nii.gz")) for n in ("subject_a", "a_oblique"))
    axes = oblique.affine[:3, :3] / np.linalg.norm(oblique.affine[:3, :3], axis=0)
    assert np.degrees(np.arccos(np.clip(np.abs(axes).max(axis=0), 0, 1))).max() > 10  # no stored axis along R, A or S
    assert np.allclose(np.linalg.norm(oblique.affine[:3, :3], axis=0), 3.0)
    assert all(o > r for o, r in zip(oblique.array.shape, ref.array.shape))
