"""Noise-robust training: PLC's rule, OEEM's Eq. 6, MCPM's look-ahead gradients, and a UNet that learns."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lib.noise.mcpm import MetaMaskNet, lookahead_parameters, mcpm_step, meta_gradients
from lib.noise.oeem import oeem_weights
from lib.noise.plc import PLCSchedule, plc_correct
from lib.segmentation.config import SegConfig
from lib.segmentation.data import PatchSampler, Study
from lib.segmentation.network import build_unet
from lib.segmentation.postprocess import remove_fragments
from lib.segmentation.train import SegTrainer, ce_map

TINY = SegConfig(channels=(4, 8), strides=(2,), num_res_units=0, patch_size=(16, 16, 16), batch_size=2)


def test_plc_flips_exactly_the_confident_disagreeing_voxels():
    label = np.array([[[0, 0, 1, 1, 2, 2]]])  # (1, 1, 6)
    probs = np.zeros((3, 1, 1, 6))
    # voxel:              0     1     2     3     4     5
    probs[0, 0, 0] = [0.97, 0.10, 0.96, 0.50, 0.02, 0.90]
    probs[1, 0, 0] = [0.02, 0.89, 0.02, 0.40, 0.97, 0.05]
    probs[2, 0, 0] = [0.01, 0.01, 0.02, 0.10, 0.01, 0.05]
    out, n = plc_correct(label, probs, delta=0.9)
    # 0: agrees; 1: disagrees, 0.89 ≤ δ; 2: disagrees, 0.96 > δ → 0; 3: argmax 0 at 0.5;
    # 4: disagrees, 0.97 → 1; 5: disagrees, exactly 0.90 is not above δ
    assert out.tolist() == [[[0, 0, 0, 1, 1, 2]]] and n == 2
    assert label.tolist() == [[[0, 0, 1, 1, 2, 2]]]  # the input is not modified


def test_plc_schedule():
    s = PLCSchedule()
    assert s.delta(0) == pytest.approx(0.95) and s.delta(1) == pytest.approx(0.9405)
    assert s.delta(100) == pytest.approx(0.85)
    w = PLCSchedule(warmup_epochs=3)
    assert w.delta(0) is None and w.delta(2) is None and w.delta(3) == pytest.approx(0.95)
    from lib.config import from_section

    assert from_section(PLCSchedule, {"warmup_epochs": "2", "delta0": "0.9"}, "plc") == PLCSchedule(delta0=0.9, warmup_epochs=2)


def test_oeem_weights_follow_eq6():
    loss = torch.tensor([[[0.1, 2.0], [0.5, 0.0]], [[1.0, 3.0], [0.2, 0.7]]])  # (B=2, 2, 2)
    labels = torch.tensor([[[0, 1], [1, 0]], [[2, 2], [2, 2]]])  # the 2nd patch holds one class
    w = oeem_weights(loss, labels)
    e = np.exp(-loss[0].numpy().ravel())
    expected = (e / e.sum()) / (e / e.sum()).mean()
    np.testing.assert_allclose(w[0].numpy().ravel(), expected, rtol=1e-6)
    assert w[0].mean().item() == pytest.approx(1.0)
    assert torch.equal(w[1], torch.ones(2, 2))
    assert w[0, 1, 1] > w[0, 0, 0] > w[0, 1, 0] > w[0, 0, 1]  # lower loss, higher weight


def test_oeem_per_class_keeps_each_class_share():
    # class 1 has high losses (learnt late): over the patch it gets almost no weight, per class its mean is 1
    loss = torch.tensor([[[0.0, 0.1, 0.2], [3.0, 4.0, 5.0]], [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]])  # (B=2, 2, 3)
    labels = torch.tensor([[[0, 0, 0], [1, 1, 1]], [[3, 3, 3], [3, 3, 3]]])
    patch = oeem_weights(loss, labels)
    per = oeem_weights(loss, labels, per_class=True)
    assert patch[0, 1].mean().item() < 0.06
    for c in (0, 1):
        row = loss[0][labels[0] == c].numpy()
        e = np.exp(-row)
        np.testing.assert_allclose(per[0][labels[0] == c].numpy(), e / e.mean(), rtol=1e-6)
    assert per[0, 1, 0] > per[0, 1, 1] > per[0, 1, 2]  # easy voxels of a class still weigh more
    assert torch.equal(per[1], torch.ones(2, 3))  # a single-class patch stays unweighted
    assert torch.isfinite(per).all()


def _mcpm_setup(seed=0):
    torch.manual_seed(seed)
    net = build_unet(TINY, 3).double()
    mask = MetaMaskNet(4).double()
    torch.nn.init.normal_(mask.fuse.weight, std=0.3)  # not the flat start, so every parameter matters
    x = torch.rand(2, 1, 16, 16, 16, dtype=torch.float64)
    y = torch.randint(0, 3, (2, 1, 16, 16, 16))
    mx = torch.rand(1, 1, 16, 16, 16, dtype=torch.float64)
    my = torch.randint(0, 3, (1, 1, 16, 16, 16))
    return net, mask, x, y, mx, my


def _meta_loss(lg, lb):
    return ce_map(lg, lb).mean()


def _meta_grads(net, mask, x, y, mx, my, scope, method):
    return meta_gradients(net, mask, x, y, ce_map(net(x), y), None, mx, my, ce_map, _meta_loss, alpha=0.5,
                          scope=scope, method=method)


@pytest.mark.parametrize("scope", ["all", "head"])
def test_mcpm_meta_loss_reaches_the_mask_net_only(scope):
    net, mask, x, y, mx, my = _mcpm_setup()
    grads, meta = _meta_grads(net, mask, x, y, mx, my, scope, "autograd")
    assert all(p.grad is None for p in net.parameters())  # the segmentation net gets nothing from it
    assert all(p.grad is None for p in mask.parameters())  # returned, not accumulated
    assert len(grads) == len(list(mask.parameters()))
    assert all(torch.isfinite(g).all() for g in grads) and sum(g.abs().sum() for g in grads) > 0

    # the gradient is the look-ahead's: central difference of meta(W'(Θ)) along the fusion bias
    def meta_at(bias_shift: float) -> float:
        with torch.no_grad():
            mask.fuse.bias += bias_shift
        _, m = _meta_grads(net, mask, x, y, mx, my, scope, "autograd")
        with torch.no_grad():
            mask.fuse.bias -= bias_shift
        return float(m)

    eps = 1e-4
    numeric = (meta_at(eps) - meta_at(-eps)) / (2 * eps)
    bias_grad = float(grads[list(dict(mask.named_parameters())).index("fuse.bias")])
    assert bias_grad == pytest.approx(numeric, rel=1e-3, abs=1e-9)

    # the cheap method (no double backward) gives the same gradients, and also leaves .grad alone
    fd, fd_meta = _meta_grads(net, mask, x, y, mx, my, scope, "finite_difference")
    assert float(fd_meta) == pytest.approx(float(meta), rel=1e-9)
    for a, b in zip(grads, fd):
        torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-3 * float(a.abs().max()))
    assert all(p.grad is None for p in net.parameters()) and all(p.grad is None for p in mask.parameters())


def test_mcpm_head_scope_is_the_last_layer():
    net = build_unet(TINY, 3)
    head = lookahead_parameters(net, "head")
    assert 0 < len(head) < len(list(net.parameters()))
    assert list(head) == list(dict(net.named_parameters()))[-len(head):]


def test_mcpm_step_updates_both_networks():
    net, mask, x, y, mx, my = _mcpm_setup()
    before_net = [p.detach().clone() for p in net.parameters()]
    before_mask = [p.detach().clone() for p in mask.parameters()]
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    mopt = torch.optim.SGD(mask.parameters(), lr=0.1)
    out = mcpm_step(net, mask, opt, mopt, x, y, mx, my, ce_map, None, _meta_loss, alpha=0.1)
    assert np.isfinite(out["loss"]) and 0 < out["weight_mean"] < 1
    assert any(not torch.equal(a, b) for a, b in zip(before_net, net.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(before_mask, mask.parameters()))


def _cube_study(seed: int, clean: bool = False) -> Study:
    rng = np.random.default_rng(seed)
    label = np.zeros((32, 32, 24), np.int64)
    label[8:20, 10:22, 6:16] = 1
    label[22:28, 4:10, 10:18] = 2
    image = (np.where(label == 1, 0.7, np.where(label == 2, 0.4, 0.1)) + rng.normal(0, 0.03, label.shape)).astype(np.float32)
    return Study(f"s{seed}", image, label, clean=clean)


def test_poly_learning_rate_decays_to_zero_over_the_run_and_none_keeps_it():
    from dataclasses import replace

    cfg = replace(TINY, lr=1e-2, epochs=2, steps_per_epoch=3)
    trainer = SegTrainer(cfg, 3, seed=0)
    rates = [trainer.lr_at(s) for s in range(6)]
    assert rates[0] == 1e-2 and all(a > b > 0 for a, b in zip(rates, rates[1:])) and trainer.lr_at(6) == 0.0
    assert rates[3] == pytest.approx(1e-2 * 0.5**0.9)  # half-way: nnU-Net's poly, power 0.9
    trainer.epoch([_cube_study(0)], 2)  # the optimizer uses the step's rate
    assert trainer.optimizer.param_groups[0]["lr"] == pytest.approx(rates[1])
    assert SegTrainer(replace(cfg, lr_decay="none"), 3).lr_at(5) == 1e-2
    with pytest.raises(ValueError, match="lr_decay"):
        SegTrainer(replace(cfg, lr_decay="cosine"), 3)


@pytest.mark.parametrize("strategy", ["none", "plc", "oeem", "mcpm"])
def test_unet_learns_a_phantom_with_every_strategy(strategy):
    from dataclasses import replace

    cfg = replace(TINY, channels=(8, 16, 32), strides=(2, 2), lr=1e-2, noise_strategy=strategy)
    trainer = SegTrainer(cfg, 3, seed=0)
    studies = [_cube_study(0), _cube_study(1, clean=True)]
    first = trainer.epoch(studies, 20)["loss"]
    for _ in range(9):
        last = trainer.epoch(studies, 20)["loss"]
    assert last < first
    pred = trainer.predict(studies[0].image).argmax(0)
    truth = studies[0].label
    for c in (1, 2):
        dice = 2 * ((pred == c) & (truth == c)).sum() / ((pred == c).sum() + (truth == c).sum())
        assert dice > 0.9, (strategy, c, dice)


def test_remove_fragments_gives_a_small_blob_its_next_class():
    probs = np.zeros((3, 20, 20, 20), np.float32)
    probs[0] = 0.5
    probs[1, 2:10, 2:10, 2:10] = 0.9  # organ 1: a large cube ...
    probs[2, 12:18, 12:18, 2:10] = 0.8  # organ 2, whose voxels ...
    probs[1, 14:16, 14:16, 4:6] = 0.95  # ... carry a small "organ 1" blob
    probs[2, 2:10, 12:18, 12:18] = 0.8  # organ 2 also has a second piece of similar size: kept
    raw = probs.argmax(0)
    assert (raw[14:16, 14:16, 4:6] == 1).all()
    out = remove_fragments(probs, 0.25)
    assert (out[14:16, 14:16, 4:6] == 2).all()  # the blob's next class, not background: no hole
    assert (out[2:10, 2:10, 2:10] == 1).all() and (out[2:10, 12:18, 12:18] == 2).all()
    assert ((out != raw).sum()) == 8
    np.testing.assert_array_equal(remove_fragments(probs, 0.0), raw)
    only_largest = remove_fragments(probs, 1.0)
    assert (only_largest == 2).sum() < (out == 2).sum()  # the second organ-2 piece (smaller) goes
    with pytest.raises(ValueError):
        remove_fragments(probs, 1.5)


def test_patch_sampler_centres_follow_the_background_ratio():
    label = np.zeros((40, 40, 40), np.int64)
    label[4:12, 4:12, 4:12], label[28:36, 28:36, 28:36] = 1, 2
    study = Study("s", np.zeros(label.shape, np.float32), label)
    for ratio, expected in ((1.0, 1 / 3), (8.0, 0.8)):
        sampler = PatchSampler((8, 8, 8), 3, seed=0, background_ratio=ratio)
        centres = [int(sampler.sample([study], 1)[1][0, 0, 4, 4, 4]) for _ in range(300)]
        assert abs(np.mean(np.array(centres) == 0) - expected) < 0.08, (ratio, np.bincount(centres))
    with pytest.raises(ValueError):
        PatchSampler((8, 8, 8), 3, background_ratio=0)
