"""GeoS rules that must hold on any scan: MR intensities, sizes in mm, a working grid for fine voxels,
a click whose region must follow the structure and not the crop; the exact-geodesic oracle."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from conftest import save_nifti, start_server, stop_server

from lib.evaluation.metrics import dice
from lib.geos import (
    GeoSConfig,
    ball,
    exact_geodesic_distance,
    geodesic_distance,
    geos_segment,
    odd_sizes,
    reaches_crop_face,
    working_factors,
)
from lib.intensity import seed_window
from lib.io import read_volume

BG, FG = 2, 3


def _grid(shape):
    return np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), -1).astype(float)


def mr_phantom(shape=(48, 44, 16), spacing=(2.0, 2.0, 4.0), seed=0):
    """A magnitude-MR-like study: air 0, bright fat 600 around a dark organ (40) beside a brighter one
    (130), as the spleen and liver sit on T1; no voxel near CT's air. ``(image, organ, other)``."""
    rng = np.random.default_rng(seed)
    g = _grid(shape) * spacing
    body = np.linalg.norm((g - [48, 44, 32])[..., :2], axis=-1) <= 42
    organ = np.linalg.norm(g - [34, 44, 32], axis=-1) <= 14
    other = (np.linalg.norm(g - [64, 44, 32], axis=-1) <= 14) & ~organ
    image = np.where(body, 600.0, 0.0)
    image[other], image[organ] = 130.0, 40.0
    return (image + rng.normal(0, 8, shape)).clip(0).astype(np.float32), organ, other


def test_mr_window_is_centred_on_the_seeds_and_never_clips_a_dark_organ():
    (a, lo, hi, b), out = seed_window((0.0, 700.0), np.array([40.0, 42.0, 38.0]), 0.2)
    assert out == (0.0, 0.2, 0.8, 1.0) and a == 0.0 and b == 700.0
    assert lo == pytest.approx(0.7, abs=1e-6) and hi == pytest.approx(180.0)  # 40 ± 140, clipped to the range
    assert np.interp(40.0, (a, lo, hi, b), out) > 0.2  # the dark organ is inside the stretched band


@pytest.mark.e2e
def test_scribbles_on_an_mr_study_through_the_server(tmp_path):
    """An MR study (no air in HU) with a dark organ touching a brighter one: the server tells it is MR,
    normalises it around the scribbles and separates the two; ``modality`` must be CT or MR."""
    spacing = (2.0, 2.0, 4.0)
    image, organ, other = mr_phantom(spacing=spacing)
    studies = tmp_path / "studies"
    studies.mkdir()
    save_nifti(image, studies / "mr.nii.gz", spacing=spacing)
    s = np.zeros(image.shape, np.uint8)
    s[14:21, 22, 8] = FG  # a stroke across the dark organ's middle slice
    s[28:36, 22, 8] = BG  # one across the brighter one
    s[2:46, 4, 8] = BG    # and one in the fat
    f = str(save_nifti(s, tmp_path / "s.nii.gz", spacing=spacing))
    server = start_server(studies, tmp_path, conf={"model_dir": str(tmp_path / "model")})
    try:
        client = server.client()
        info = [{"name": "organ", "id": 1}, {"name": "background_scribbles", "id": BG}, {"name": "foreground_scribbles", "id": FG}]
        result, body = client.infer("scribbles_geos", "mr", {"label_info": info, "selected_label_name": "organ"}, label_in=f)
        out = read_volume(result).array == 1
        assert body["geos"]["modality"] == "MR"
        assert dice(out, organ) > 0.85 and (out & other).sum() < 0.05 * other.sum()
        from monailabel.client.client import MONAILabelClientException

        with pytest.raises(MONAILabelClientException) as e:
            client.infer("scribbles_geos", "mr", {"label_info": info, "modality": "PET"}, label_in=f)
        assert "modality" in str(e.value.msg) and "500" not in str(e.value.status_code)
    finally:
        stop_server(server)


def test_sizes_are_in_mm():
    assert odd_sizes(9.0, (3.0, 3.0, 3.0)) == (3, 3, 3)
    assert odd_sizes(9.0, (0.8, 0.8, 5.0)) == (11, 11, 1)
    assert ball(3.0, (3.0, 3.0, 3.0)).sum() == 7  # the 6-connected cross
    assert ball(3.0, (1.0, 1.0, 3.0)).shape == (7, 7, 3)
    assert working_factors((300, 300, 40), (0.7, 0.7, 5.0), 3.0) == (4, 4, 1)
    assert working_factors((30, 30, 10), (3.0, 3.0, 3.0), 2.0) == (1, 1, 1)
    big = working_factors((400, 400, 100), (1.0, 1.0, 1.0), 2.0, max_voxels=200_000)
    assert np.prod(np.ceil(np.array([400, 400, 100]) / big)) <= 200_000 and min(big) >= 2


def test_working_grid_keeps_the_result_on_the_stored_grid():
    """Fine voxels (0.6 mm): the geodesics on ~2 mm working voxels give the same organ on the stored
    grid, with a boundary decided per stored voxel (not in blocks)."""
    rng = np.random.default_rng(2)
    shape, spacing = (90, 90, 30), (0.6, 0.6, 1.5)
    g = _grid(shape) * spacing
    organ = np.linalg.norm(g - [27, 27, 22], axis=-1) <= 14
    image = np.where(organ, 200.0, 20.0) + rng.normal(0, 15, shape)
    seeds = np.zeros(shape, bool)
    seeds[35:55, 45, 15] = True
    background = np.zeros(shape, bool)
    background[5:85, [5, 84], 15] = True
    cfg = GeoSConfig(margin_mm=20.0)
    fine, _ = geos_segment(image, {1: seeds}, background, spacing, cfg)
    coarse, stats = geos_segment(image, {1: seeds}, background, spacing, replace(cfg, working_spacing_mm=2.0))
    assert stats["working_spacing_mm"] == [1.8, 1.8, 1.5]
    assert coarse.shape == shape and dice(coarse == 1, organ) > 0.97 and dice(fine == 1, organ) > 0.97
    # the boundary is not a staircase of 3x3 blocks: some block holds voxels of both classes
    blocks = (coarse[:87, :87] == 1).reshape(29, 3, 29, 3, 30).mean(axis=(1, 3))
    assert ((blocks > 0) & (blocks < 1)).any()


@pytest.mark.e2e
def test_one_click_in_a_large_organ_follows_it_past_the_first_crop(tmp_path):
    """A click deep in an organ much larger than the click's crop: the region reaches the crop's faces,
    so the crop grows until the organ's own boundary stops it (OHIF's result used to be the crop's cube)."""
    rng = np.random.default_rng(3)
    shape, spacing = (64, 64, 40), (2.0, 2.0, 2.0)
    g = _grid(shape) * spacing
    organ = np.linalg.norm(g - [64, 64, 40], axis=-1) <= 34
    image = np.where(organ, 120.0, -80.0) + rng.normal(0, 10, shape)
    studies = tmp_path / "studies"
    studies.mkdir()
    save_nifti(image.astype(np.int16), studies / "big.nii.gz", spacing=spacing)
    server = start_server(studies, tmp_path, conf={"model_dir": str(tmp_path / "model"), "points.margin_mm": "20"})
    try:
        result, body = server.client().infer("points_geos", "big", {"foreground": [[32, 32, 20]], "background": []})
        out = read_volume(result).array == 1
        assert body["geos"]["crop_grown"] >= 1
        assert dice(out, organ) > 0.9
        assert not reaches_crop_face(out.astype(np.uint8), body["geos"]["crop"], shape)
    finally:
        stop_server(server)


def test_raster_scan_converges_to_the_exact_geodesic():
    rng = np.random.default_rng(0)
    image = (rng.random((24, 20, 12)) * 0.3).astype(np.float32)
    seeds = np.zeros(image.shape, bool)
    seeds[12, 10, 6] = True
    exact = exact_geodesic_distance(image, seeds, (1.0, 1.0, 2.0))
    errors = []
    for passes in (1, 2, 8):
        d = geodesic_distance(image, seeds, (1.0, 1.0, 2.0), 1.0, passes)
        assert (d >= exact - 1e-4).all()  # a raster scan only ever over-estimates the shortest path
        errors.append(float(np.abs(d - exact).max() / exact.max()))
    assert errors[0] > errors[1] > errors[2] and errors[2] < 0.35
