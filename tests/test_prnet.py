"""PRNet (lib.prnet): network shapes, Eq. 1–3 training, batched propagation and DFD mechanics."""

from __future__ import annotations

import os
from dataclasses import replace

import numpy as np
import pytest
import torch

from lib.prnet.network import PRNet
from lib.prnet.propagate import Localizer, PropagationConfig, apply_affine, fit_robust_affine, propagate, robust_affine
from lib.prnet.patches import common_windows, patch_windows
from lib.prnet.train import PRNetConfig, extract_patches, sample_pairs, sample_points, train_prnet


def smooth_volume(shape=(48, 48, 40), seed=0, blobs=6) -> np.ndarray:
    """A volume whose content varies with position (``blobs`` blobs on a gradient), values in [0, 1]."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(0, 1, s) for s in shape], indexing="ij"), -1)
    v = 0.3 * grid[..., 0] + 0.2 * grid[..., 1] + 0.1 * grid[..., 2]
    for _ in range(blobs):
        c, r = rng.random(3), rng.uniform(0.08, 0.2)
        v += 0.4 * (np.linalg.norm(grid - c, axis=-1) < r)
    return np.clip(v, 0, 1).astype(np.float32)


def test_network_outputs_and_patch_size_check():
    net = PRNet((32, 32, 32), base_channels=4, fc_hidden=16)
    out = net(torch.rand(2, 1, 32, 32, 32))
    assert out["p"].shape == (2, 3) and out["recon"].shape == (2, 1, 32, 32, 32)
    assert out["f2"].shape == (2, 16) and out["f4"].shape == (2, 4)
    assert float(out["recon"].min()) >= 0 and float(out["recon"].max()) <= 1
    assert set(net(torch.rand(1, 1, 32, 32, 32), decode=False)) == {"p"}
    with pytest.raises(ValueError, match="multiple of 16"):
        PRNet((16, 32, 32))


def test_patches_are_centred_and_zero_padded():
    vol = np.arange(20 * 20 * 20, dtype=np.float32).reshape(20, 20, 20)
    p = extract_patches(vol, np.array([[10, 10, 10], [0, 0, 0]]), (8, 8, 8))
    assert p[0, 4, 4, 4] == vol[10, 10, 10] and p[0, 0, 0, 0] == vol[6, 6, 6]
    assert p[1, 4, 4, 4] == vol[0, 0, 0] and p[1, 0, 0, 0] == 0


def test_pairs_offsets_follow_eq1():
    rng = np.random.default_rng(0)
    c0, c1, d = sample_pairs(np.zeros((30, 30, 30)), (1.0, 2.0, 3.0), 5, rng, max_offset_mm=12)
    np.testing.assert_allclose(d, (c1 - c0) * [1.0, 2.0, 3.0])
    assert np.all(np.abs(d) <= 12 + 1e-6)


def test_pairs_are_centred_inside_the_body():
    vol = np.zeros((40, 40, 40), np.float32)
    vol[10:20, 5:35, 20:30] = 0.5  # the "body": 7.5 % of the grid
    rng = np.random.default_rng(0)
    pts = sample_points(vol, 500, rng, body_min=0.0)
    assert pts.shape == (500, 3) and np.all(vol[tuple(pts.T)] > 0)
    c0, c1, _ = sample_pairs(vol, (1.0, 1.0, 1.0), 200, rng, None, body_min=0.0)
    assert np.all(vol[tuple(c0.T)] > 0) and np.all(vol[tuple(c1.T)] > 0)
    assert np.mean(vol[tuple(sample_points(vol, 500, rng, None).T)] > 0) < 0.2  # None: the whole grid


def test_tiny_prnet_loss_falls():
    from lib.prnet.train import prnet_loss

    torch.manual_seed(0)
    vol = smooth_volume()
    # a single model (no fine one): the coarse model trains on the whole of Eq. 3
    cfg = PRNetConfig(patch_size=(32, 32, 32), base_channels=4, r_mm=(80.0, 80.0, 80.0), batch_pairs=4, lr=1e-3, fine_r_mm=None)
    assert cfg.stage(fine=False) == ((80.0, 80.0, 80.0), None, True)
    net = PRNet(cfg.patch_size, cfg.base_channels, fc_hidden=32)
    # Eq. 3 on a fixed held batch of 16 pairs, before and after 30 steps (single training batches are too noisy)
    c0, c1, d = sample_pairs(vol, (1.5, 1.5, 1.5), 16, np.random.default_rng(99), None, cfg.body_min)

    def held_loss() -> float:
        x0, x1 = (torch.from_numpy(extract_patches(vol, c, cfg.patch_size))[:, None] for c in (c0, c1))
        with torch.no_grad():
            return float(prnet_loss(net.eval(), x0, x1, torch.from_numpy(d), torch.tensor(cfg.r_mm))["loss"])

    before = held_loss()
    losses = []
    train_prnet(net, [vol], [(1.5, 1.5, 1.5)], cfg, steps=30, seed=0, callback=lambda s, st: losses.append(st))
    assert len(losses) == 30 and all(st["rec"] > 0 for st in losses)  # the reconstruction term is on
    assert held_loss() < 0.7 * before


def test_propagation_is_batched_and_dfd_threshold_filters():
    torch.manual_seed(0)
    vol = smooth_volume()
    net = PRNet((32, 32, 32), base_channels=4, fc_hidden=16)
    pts = np.array([[10, 10, 10], [30, 30, 20], [40, 12, 30]])
    fine = PRNet((32, 32, 32), base_channels=4, fc_hidden=16)
    models = Localizer(net, (60, 60, 60), fine, (20, 20, 20))
    keep_all = propagate(models, vol, pts, vol, (1.5, 1.5, 1.5), PropagationConfig(tau=0.0, batch_size=2))
    assert keep_all.located.shape == (3, 3) and keep_all.sim.shape == (3,)
    assert np.all((keep_all.located >= 0) & (keep_all.located < vol.shape))
    assert np.all(keep_all.sim <= 1.0 + 1e-6)
    strict = propagate(models, vol, pts, vol, (1.5, 1.5, 1.5), PropagationConfig(tau=0.999, batch_size=2))
    # same seed, same located points: only the threshold differs
    np.testing.assert_array_equal(strict.located, keep_all.located)
    assert strict.keep.sum() <= keep_all.keep.sum()
    assert np.array_equal(strict.keep, strict.sim > 0.999)


def test_robust_affine_recovers_the_map_despite_outliers():
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 60, size=(200, 3))
    matrix = np.array([[1.1, 0.05, 0.0], [-0.04, 0.95, 0.02], [0.0, 0.03, 1.05]])
    truth = src @ matrix.T + np.array([3.0, -5.0, 2.0])
    noisy = truth + rng.normal(0, 1.0, size=truth.shape)  # each point's estimate: ~1 voxel of noise
    wrong = rng.choice(len(src), 40, replace=False)
    noisy[wrong] += rng.uniform(15, 30, size=(40, 3)) * rng.choice([-1, 1], size=(40, 3))  # 20 % far off
    fitted = robust_affine(src, noisy, (3.0, 3.0, 3.0), trim=0.3)
    err = np.linalg.norm(fitted - truth, axis=1)
    assert np.median(err) < 0.5 and err.max() < 1.5, (np.median(err), err.max())
    # a plain least-squares fit is pulled off by the outliers
    plain = robust_affine(src, noisy, (3.0, 3.0, 3.0), trim=0.0)
    assert np.median(np.linalg.norm(plain - truth, axis=1)) > 2 * np.median(err)
    # too few points, or points on one plane: the median translation only
    flat = src.copy()
    flat[:, 2] = 7.0
    np.testing.assert_allclose(robust_affine(flat, flat + [1.0, 2.0, 3.0], (1, 1, 1), 0.3), flat + [1.0, 2.0, 3.0])
    np.testing.assert_allclose(robust_affine(src[:3], src[:3] + 4.0, (1, 1, 1), 0.3), src[:3] + 4.0)
    # fitted on a quarter of the points, the map carries all of them (what fit_points relies on)
    part = fit_robust_affine(src[:50], noisy[:50], (3.0, 3.0, 3.0), trim=0.3)
    assert part.shape == (4, 3)
    err_all = np.linalg.norm(apply_affine(part, src) - truth, axis=1)
    assert np.median(err_all) < 0.7 and err_all.max() < 2.0, (np.median(err_all), err_all.max())


def test_refine_affine_recovers_a_known_map_from_a_coarse_start():
    from scipy import ndimage as ndi

    from lib.registration import normalised_to_voxel, refine_affine, voxel_to_normalised

    support = smooth_volume((48, 48, 40), seed=3)
    # the query: the support under y = M x + b (voxels), a small rotation about k, scaling and a shift
    a = np.deg2rad(6.0)
    matrix = np.array([[np.cos(a), -np.sin(a), 0.0], [np.sin(a), np.cos(a), 0.0], [0.0, 0.0, 1.0]]) @ np.diag([1.05, 0.97, 1.0])
    shift = np.array([2.5, -3.0, 1.5])
    inv = np.linalg.inv(matrix)
    query = ndi.affine_transform(support, inv, offset=-inv @ shift, order=1).astype(np.float32)
    truth = np.vstack([matrix.T, shift])
    # the map <-> affine_grid parameters round trip
    np.testing.assert_allclose(normalised_to_voxel(voxel_to_normalised(truth, support.shape, query.shape), support.shape, query.shape),
                               truth, atol=1e-9)
    pts = np.argwhere(np.ones((6, 6, 5), bool)) * 6 + 8  # a grid of voxels well inside
    # a coarse start (what PRNet's points give): the right shift, 3 voxels off, no rotation
    start = np.vstack([np.eye(3), shift + 3.0])
    err_start = np.linalg.norm(apply_affine(start, pts) - apply_affine(truth, pts), axis=1)
    refined = refine_affine(support, query, start, (1.5, 1.5, 1.5), (1.5, 1.5, 1.5), steps=150, levels_mm=(3.0, 1.5))
    err = np.linalg.norm(apply_affine(refined, pts) - apply_affine(truth, pts), axis=1)
    assert np.median(err) < 1.0 and np.median(err) < np.median(err_start) / 3, (np.median(err), np.median(err_start))
    np.testing.assert_array_equal(refine_affine(support, query, start, (1.5,) * 3, (1.5,) * 3, steps=0), start)


def test_registration_finds_a_slab_inside_a_longer_support():
    """A slab of 16 slices near one end of 96 (at 3 mm, and at 1.5 mm in-plane): the translation search puts the
    refinement in the right basin (laying the bodies' centroids on each other starts it ~ 110 mm away, and the
    refinement from there ends ~ 80 mm off)."""
    from scipy import ndimage as ndi

    from lib.prnet.propagate import register
    from lib.registration import translation_search

    support = smooth_volume((40, 40, 96), seed=5, blobs=40)
    pts = np.argwhere(np.ones((5, 5, 4), bool)) * [6, 6, 3] + [8, 8, 6]  # support voxels inside the slab
    cfg = PropagationConfig(register_steps=60)
    for zoom in (1.0, 2.0):
        query = ndi.zoom(support[:, :, 4:20], (zoom, zoom, 1.0), order=1, grid_mode=True, mode="nearest").astype(np.float32)
        q_spacing = (3.0 / zoom, 3.0 / zoom, 3.0)
        # truth: support voxel x -> query voxel ((x + 1/2) * 3 mm - corner) / spacing - 1/2, the corner 4 slices up
        truth = (np.c_[pts[:, :2] + 0.5, pts[:, 2] - 4 + 0.5] * 3.0) / q_spacing - 0.5
        found, score = translation_search(support, query, (3.0,) * 3, q_spacing, level_mm=12.0)
        err = np.linalg.norm((apply_affine(found, pts) - truth) * q_spacing, axis=1)
        assert np.median(err) <= 6.0 and score > 0.9, (zoom, np.median(err), score)  # within half a 12 mm search voxel
        mapped, ncc = register(support, query, np.zeros((4, 3)), (3.0,) * 3, q_spacing, cfg)  # PRNet's map: degenerate
        err = np.linalg.norm((apply_affine(mapped, pts) - truth) * q_spacing, axis=1)
        assert np.median(err) < 1.5 and ncc > 0.98, (zoom, np.median(err), ncc)


def test_propagation_config_rejects_unknown_regularisation():
    with pytest.raises(ValueError, match="regularize"):
        PropagationConfig(regularize="rigid")
    with pytest.raises(ValueError, match="fit_points"):
        PropagationConfig(fit_points=5)
    with pytest.raises(ValueError, match="precision"):
        PropagationConfig(precision="fp16")
    with pytest.raises(ValueError, match="register_steps"):
        PropagationConfig(register_steps=-1)
    with pytest.raises(ValueError, match="register_levels_mm"):
        PropagationConfig(register_levels_mm=(12.0, 0.0))


def test_prnet_trainer_resumes_from_its_checkpoint(tmp_path):
    from conftest import save_nifti

    from lib.prnet.checkpoint import load_prnet
    from lib.tasks.datastore import AtomicLocalDatastore
    from lib.tasks.models import ModelFiles
    from lib.tasks.train_prnet import PRNetTrain

    studies = tmp_path / "studies"
    studies.mkdir()
    for i in range(2):
        save_nifti((smooth_volume(seed=i) * 1000 - 500).astype("int16"), studies / f"s{i}.nii.gz", spacing=(3.0, 3.0, 3.0))
    ds = AtomicLocalDatastore(str(studies), extensions=["*.nii.gz"], auto_reload=False)
    cfg = PRNetConfig(patch_size=(32, 32, 32), base_channels=4, batch_pairs=2, lr=1e-3, fc_hidden=16, max_steps=2,
                      checkpoint_every=1)
    window = ([-500, -100, 200, 1500], [0.0, 0.2, 0.8, 1.0])
    files = ModelFiles(str(tmp_path / "model"), "prnet")
    trainer = PRNetTrain(files, cfg, window)

    first = trainer({}, ds)
    assert first["step"] == 2 and [h["step"] for h in first["history"]] == [1, 2]
    assert {"err_mm", "fine_err_mm", "fine_rec"} <= set(first["history"][-1])  # both models train
    published = load_prnet(files.published)
    models, published_cfg = published.localizer, published.config
    assert published.window == tuple(tuple(float(x) for x in w) for w in window) and published.step == 2  # recorded
    assert published_cfg.fc_hidden == 16
    weights_after_2 = {**models.coarse.state_dict(), **{"fine." + k: v for k, v in models.fine.state_dict().items()}}
    # r covers the largest offset: the studies' extent in mm (48, 48, 40 voxels at 3 mm)
    assert published_cfg.r_mm == (144.0, 144.0, 120.0) and models.r_mm == (144.0, 144.0, 120.0)
    assert models.fine_r_mm == cfg.fine_r_mm and models.features is models.fine

    # "interrupted" after step 2: a new run with a larger budget continues from the checkpoint
    second = trainer({"max_steps": 4}, ds)
    assert [h["step"] for h in second["history"]] == [1, 2, 3, 4]
    again = load_prnet(files.published).localizer
    assert any(not torch.equal(weights_after_2[k], v) for k, v in again.coarse.state_dict().items())
    assert any(not torch.equal(weights_after_2["fine." + k], v) for k, v in again.fine.state_dict().items())
    # restart=true starts over
    third = trainer({"max_steps": 1, "restart": True}, ds)
    assert [h["step"] for h in third["history"]] == [1]
    assert third["warm_start_from_step"] is None

    # a study added after training: the same request trains max_steps steps on the 3 studies (from the weights of
    # the checkpoint), where resuming would have stopped at once at its step
    before = load_prnet(files.published).localizer.coarse.state_dict()
    save_nifti((smooth_volume(seed=5) * 1000 - 500).astype("int16"), studies / "s2.nii.gz", spacing=(3.0, 3.0, 3.0))
    ds.refresh()
    fourth = trainer({"max_steps": 1}, ds)
    assert fourth["studies"] == 3 and fourth["warm_start_from_step"] == 1 and [h["step"] for h in fourth["history"]] == [1]
    assert any(not torch.equal(before[k], v) for k, v in load_prnet(files.published).localizer.coarse.state_dict().items())
    mtime = os.stat(files.published).st_mtime_ns
    trainer({"max_steps": 1}, ds)  # nothing changed since: resumed at its step, done at once
    assert os.stat(files.published).st_mtime_ns == mtime


@pytest.fixture(scope="module")
def trained_on_phantoms():
    """Tiny coarse + fine PRNets trained 60 steps each (~30 s) on three shifted two-organ phantoms;
    ``(models, cfg, vols, labels, single)``; ``single``: one PRNet trained on the whole of Eq. 3 over
    independent pairs (the configuration without a fine model)."""
    from test_prnet_server import phantom

    from lib.intensity import normalize_intensity

    torch.manual_seed(0)
    vols, labels = [], []
    for i, shift in enumerate((0, 2, -2)):
        image, label = phantom(shift, seed=i)
        vols.append(normalize_intensity(image.astype(np.float32), (-500, -100, 200, 1500), (0.0, 0.2, 0.8, 1.0)))
        labels.append(label)
    cfg = PRNetConfig(patch_size=(32, 32, 32), base_channels=4, r_mm=(132.0, 120.0, 108.0), batch_pairs=4, lr=1e-3,
                      fine_r_mm=(30.0, 30.0, 30.0), fine_max_offset_mm=15.0)
    coarse, fine = (PRNet(cfg.patch_size, cfg.base_channels, fc_hidden=32) for _ in range(2))
    train_prnet(coarse, vols, [(3.0, 3.0, 3.0)] * 3, cfg, steps=60, seed=0)
    train_prnet(fine, vols, [(3.0, 3.0, 3.0)] * 3, cfg, steps=60, seed=1, fine=True)
    torch.manual_seed(0)
    single = PRNet(cfg.patch_size, cfg.base_channels, fc_hidden=32)
    train_prnet(single, vols, [(3.0, 3.0, 3.0)] * 3, replace(cfg, fine_r_mm=None), steps=60, seed=0)
    return Localizer(coarse.eval(), cfg.r_mm, fine.eval(), cfg.fine_r_mm), cfg, vols, labels, single.eval()


def test_propagation_onto_an_identical_copy_lands_within_a_few_voxels(trained_on_phantoms):
    models, cfg, vols, labels, _ = trained_on_phantoms
    pts = np.concatenate([np.argwhere(labels[0] == 1)[::20], np.argwhere(labels[0] == 2)[::20]])
    pr = propagate(models, vols[0], pts, vols[0].copy(), (3.0, 3.0, 3.0), PropagationConfig(tau=0.5, batch_size=16))
    err = np.abs(pr.located - pts).max(axis=1)  # Chebyshev distance, voxels
    assert np.median(err) <= 4 and np.percentile(err, 90) <= 8, (np.median(err), np.percentile(err, 90))
    # the affine map fitted on 24 located points carries all of them as well
    assert len(pts) > 48
    sub = propagate(models, vols[0], pts, vols[0].copy(), (3.0, 3.0, 3.0), PropagationConfig(tau=0.5, batch_size=16, fit_points=24))
    err = np.abs(sub.located - pts).max(axis=1)
    assert sub.located.shape == pts.shape and sub.sim.shape == (len(pts),)
    assert np.median(err) <= 4 and np.percentile(err, 90) <= 8, (np.median(err), np.percentile(err, 90))


def test_bfloat16_propagation_lands_like_float32(trained_on_phantoms):
    from lib.prnet.propagate import bf16_enabled

    assert bf16_enabled("bf16") and not bf16_enabled("fp32")
    assert isinstance(bf16_enabled("auto"), bool)
    models, _, vols, labels, _ = trained_on_phantoms
    pts = np.concatenate([np.argwhere(labels[0] == 1)[::40], np.argwhere(labels[0] == 2)[::40]])
    cfg = PropagationConfig(tau=0.5, batch_size=16, register_steps=0)
    full = propagate(models, vols[0], pts, vols[1], (3.0, 3.0, 3.0), cfg)
    half = propagate(models, vols[0], pts, vols[1], (3.0, 3.0, 3.0), replace(cfg, precision="bf16"))
    # the same points within a voxel; where a point lands on the same voxel, the same DFD similarity
    # within bfloat16's precision
    moved = np.abs(half.located - full.located).max(axis=1)
    assert np.median(moved) <= 1
    same = moved == 0
    assert same.any() and np.median(np.abs(half.sim - full.sim)[same]) < 0.02, np.abs(half.sim - full.sim)[same]


def test_dfd_keeps_the_right_point_and_rejects_one_planted_in_the_wrong_organ(trained_on_phantoms):
    from lib.prnet.propagate import dfd_similarity, encode

    # DFD's mechanics on a decoder trained with Eq. 3 (the fine model of this 60-step toy does not yet
    # separate the two phantom organs; on the real cohort DFD raises the fine model's point precision,
    # see scripts/bench_prnet.py)
    _, _, vols, labels, net = trained_on_phantoms
    a = np.argwhere(labels[0] == 1)
    b = np.argwhere(labels[0] == 2)
    support = a[len(a) // 2][None]
    src = encode(net, vols[0], np.concatenate([support, support]), 8, decode=True)
    # the copy of the support point, and a point planted in the other organ of an identical volume
    dst = encode(net, vols[0].copy(), np.concatenate([support, b[len(b) // 2][None]]), 8, decode=True)
    right, planted = dfd_similarity(src, dst)
    assert right > 0.99
    assert planted < PropagationConfig().tau  # rejected at the default τ = 0.5


def test_support_encodings_are_reused_across_queries(trained_on_phantoms):
    from lib.prnet.prelabel import SupportSampling, propagate_support

    models, cfg, vols, labels, _ = trained_on_phantoms
    s = np.zeros(labels[0].shape, np.int64)
    s[labels[0] == 1] = 1
    s[(labels[0] == 0) & (np.indices(s.shape)[2] == 18)] = 3
    names = {"bright": 1, "background": 3}
    window = ((-1.0, 2.0), (-1.0, 2.0))  # the phantom volumes are already in [0, 1]
    encodings: dict = {}
    kw = dict(models=models, support_hu=vols[0], scribbles=s, names=names, query_spacing=(3.0, 3.0, 3.0),
              window=window, propagation=PropagationConfig(batch_size=16), sampling=SupportSampling(stride=25))
    first = propagate_support(query_hu=vols[1], encodings=encodings, **kw)
    assert set(encodings) == {"support"}  # both classes encoded together
    for c in (1, 3):  # propagated together, handed back per class in the support's order
        assert len(first.propagation[c].located) == len(first.points[c]) == len(np.argwhere(s == c)[::25])
    cached = {c: {k: v.clone() for k, v in e.items()} for c, e in encodings.items()}
    again = propagate_support(query_hu=vols[1], encodings=encodings, **kw)
    fresh = propagate_support(query_hu=vols[1], **kw)
    assert all(torch.equal(cached["support"][k], encodings["support"][k]) for k in cached["support"])  # reused
    for c in (1, 3):
        np.testing.assert_array_equal(again.propagation[c].located, first.propagation[c].located)
        np.testing.assert_allclose(fresh.propagation[c].sim, first.propagation[c].sim, rtol=1e-5, atol=1e-6)
    # encodings made for another subset of located points (here: 12 instead of all) are not used as they are
    assert sum(len(p) for p in first.points.values()) > 12
    each = dict(kw, propagation=PropagationConfig(batch_size=16, fit_points=12))
    reused = propagate_support(query_hu=vols[1], encodings=encodings, **each)
    alone = propagate_support(query_hu=vols[1], **each)
    for c in (1, 3):
        np.testing.assert_array_equal(reused.propagation[c].located, alone.propagation[c].located)


def test_support_points_stride_per_class():
    from lib.prnet.prelabel import support_points

    s = np.zeros((20, 20, 4), np.int64)
    s[:, :, 1] = 1  # 400 voxels of class 1
    s[:, :, 2] = 9  # 400 voxels of the background class
    pts = support_points(s, [1, 9], 2, {9: 8})
    assert len(pts[1]) == 200 and len(pts[9]) == 50
    assert np.all(s[tuple(pts[9].T)] == 9)
    # a small structure is not thinned below min_points: every voxel of one scribbled with fewer
    s[:5, 0, 3] = 2  # 5 voxels
    s[:100, :, 0] = 0
    s[:3, :, 0] = 3  # 60 voxels
    pts = support_points(s, [1, 2, 3, 9], 2, {9: 8}, min_points=32)
    assert len(pts[1]) == 200 and len(pts[9]) == 50  # enough at their strides: unchanged
    assert len(pts[2]) == 5 and len(pts[3]) == 60  # 3 and 30 at stride 2: all of them (60 // 32 = stride 1)
    assert len(support_points(s, [3], 4, min_points=10)[3]) == 15  # stride 4 leaves 15 >= 10: kept
    assert len(support_points(s, [3], 8, min_points=10)[3]) == 10  # 8 would leave 8: stride 6 (60 // 10)


def test_mirror_check_tells_a_left_right_flipped_study():
    """A study stored with its left and right swapped aligns with the support better mirrored; one stored
    correctly (here shifted by 2 voxels) aligns better as it is."""
    from lib.prnet.propagate import mirror_check

    support = smooth_volume(seed=3)
    shifted = np.roll(support, 2, axis=1)
    cfg = PropagationConfig(mirror_check_steps=30)
    as_stored, flipped = mirror_check(support, shifted, (3.0,) * 3, (3.0,) * 3, cfg)
    assert as_stored > flipped + cfg.mirror_margin, (as_stored, flipped)
    as_stored, flipped = mirror_check(support, np.ascontiguousarray(shifted[::-1]), (3.0,) * 3, (3.0,) * 3, cfg)
    assert flipped > as_stored + cfg.mirror_margin, (as_stored, flipped)


def test_dfd_runs_only_for_the_points_inside_the_query():
    """A slab: the support points that land outside it get sim -1 (never kept) and no decoder pass; those inside
    get the DFD similarity of Eq. 5 as computed for every point."""
    from lib.prnet.propagate import dfd_similarity, encode, encode_support

    torch.manual_seed(0)
    vol = smooth_volume()
    models = Localizer(PRNet((32, 32, 32), base_channels=4, fc_hidden=16), (60, 60, 60))
    pts = np.array([[10, 10, 5], [30, 30, 20], [40, 12, 35], [20, 25, 38], [24, 24, 24]])
    query = np.ascontiguousarray(vol[:, :, 16:32])  # a slab of 16 of the 40 slices
    cfg = PropagationConfig(tau=-1.0, batch_size=2, regularize="affine", register_steps=20, fit_points=0)
    pr = propagate(models, vol, pts, query, (3.0, 3.0, 3.0), cfg, support_spacing=(3.0, 3.0, 3.0))
    assert pr.inside.any() and not pr.inside.all(), pr.inside
    assert np.all(pr.sim[~pr.inside] == -1.0) and not pr.keep[~pr.inside].any()
    # Eq. 5 with both patches of a pair blanked where either volume ends (dfd_in_common_view)
    common = common_windows(patch_windows(query.shape, pr.located, (32,) * 3), patch_windows(vol.shape, pts, (32,) * 3))
    every = dfd_similarity(encode(models.features, vol, pts, 2, decode=True, windows=common),
                           encode(models.features, query, pr.located, 2, decode=True, windows=common))
    np.testing.assert_allclose(pr.sim[pr.inside], every[pr.inside], atol=1e-5)


def test_points_beyond_a_slab_face_within_face_mm_are_placed_on_it():
    """``face_mm``: a support point whose estimate lies beyond a face of the query's grid by at most that many mm is
    placed on the face and scored by DFD there (a structure goes on beyond a slab's face); a farther one stays out."""
    from lib.prnet.propagate import dfd_similarity, encode

    torch.manual_seed(0)
    vol = smooth_volume()
    models = Localizer(PRNet((32, 32, 32), base_channels=4, fc_hidden=16), (60, 60, 60))
    pts = np.array([[10, 10, 5], [30, 30, 20], [40, 12, 35], [20, 25, 38], [24, 24, 24], [12, 30, 12]])
    query = np.ascontiguousarray(vol[:, :, 16:32])
    cfg = PropagationConfig(tau=-1.0, batch_size=2, regularize="affine", register_steps=20, fit_points=0)
    run = {f: propagate(models, vol, pts, query, (3.0, 3.0, 3.0), replace(cfg, face_mm=f), support_spacing=(3.0,) * 3)
           for f in (0.0, 1000.0)}
    beyond = run[0.0].beyond_mm
    assert (beyond > 0).any() and np.array_equal(run[0.0].inside, beyond == 0), beyond
    far = run[1000.0]
    np.testing.assert_array_equal(far.beyond_mm, beyond)
    assert far.inside.all() and np.array_equal(far.at_face, beyond > 0) and not run[0.0].at_face.any()
    on_face = (far.located == 0) | (far.located == np.asarray(query.shape) - 1)
    assert on_face[far.at_face].any(axis=1).all(), far.located[far.at_face]
    # DFD at the face, as for any point there; the points within the grid are scored as without face_mm
    common = common_windows(patch_windows(query.shape, far.located, (32,) * 3), patch_windows(vol.shape, pts, (32,) * 3))
    every = dfd_similarity(encode(models.features, vol, pts, 2, decode=True, windows=common),
                           encode(models.features, query, far.located, 2, decode=True, windows=common))
    np.testing.assert_allclose(far.sim, every, atol=1e-5)
    np.testing.assert_allclose(far.sim[beyond == 0], run[0.0].sim[beyond == 0], atol=1e-6)
    # between the two: exactly the points within f mm of a face come in
    f = float(np.sort(beyond[beyond > 0])[0])
    mid = propagate(models, vol, pts, query, (3.0, 3.0, 3.0), replace(cfg, face_mm=f), support_spacing=(3.0,) * 3)
    np.testing.assert_array_equal(mid.inside, beyond <= f)
    with pytest.raises(ValueError, match="face_mm"):
        PropagationConfig(face_mm=-1.0)


def test_dfd_compares_what_both_studies_show():
    """A slab cut from the support: a point at its exact place sees the same anatomy in both studies where the slab
    shows it, and zeros beyond the slab's faces in the query only. Blanking the support's patch there too gives
    the similarity of identical patches (1); comparing whole patches does not."""
    from lib.prnet.propagate import dfd_in_common_view, dfd_similarity, encode, encode_support

    torch.manual_seed(0)
    vol = smooth_volume()
    net = PRNet((32, 32, 32), base_channels=4, fc_hidden=16)
    pts = np.array([[24, 24, 18], [12, 30, 22], [30, 14, 25]])
    query = np.ascontiguousarray(vol[:, :, 12:30])  # 18 slices: every patch crosses both faces
    located = pts - [0, 0, 12]
    cfg = PropagationConfig(batch_size=2)
    whole = dfd_similarity(encode(net, vol, pts, 2, decode=True), encode(net, query, located, 2, decode=True))
    models = Localizer(net, (60, 60, 60))
    common = dfd_in_common_view(net, vol, pts, query, located, encode_support(models, vol, pts, 2), np.arange(3), cfg)
    np.testing.assert_allclose(common, 1.0, atol=1e-5)
    assert whole.max() < 0.999, whole
    # windows: the part of each 8-voxel patch inside a (10, 10, 10) volume, and what two volumes both show
    w = patch_windows((10, 10, 10), np.array([[5, 5, 5], [1, 5, 9]]), (8, 8, 8))
    np.testing.assert_array_equal(w[0], [[0, 8]] * 3)
    np.testing.assert_array_equal(w[1], [[3, 8], [0, 8], [0, 5]])
    np.testing.assert_array_equal(common_windows(w[:1], w[1:])[0], w[1])
    blank = extract_patches(np.ones((10, 10, 10), np.float32), np.array([[5, 5, 5]]), (8, 8, 8), windows=w[1:])[0]
    assert blank.sum() == 5 * 8 * 5 and blank[3:, :, :5].all()


def test_silent_features_agree():
    """ReLU features that are all zero in both studies agree (cosine 1), not disagree (PyTorch's 0)."""
    from lib.prnet.propagate import feature_cosine

    a = torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    b = torch.tensor([[0.0, 0.0], [2.0, 0.0], [2.0, 0.0], [1.0, 0.0]])
    np.testing.assert_allclose(feature_cosine(a, b).numpy(), [1.0, 0.0, 1.0, 2 ** -0.5], atol=1e-6)
