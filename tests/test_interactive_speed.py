"""lib.io.VolumeCache (the interactive tasks' studies, read ahead and shared) and the GeoS clean-up's fast paths."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import save_nifti

from lib.io import VolumeCache


def _study(path, value: int):
    return str(save_nifti(np.full((6, 5, 4), value, np.int16), path))


def test_a_prefetched_study_is_not_read_again_and_says_so(tmp_path):
    a, b = _study(tmp_path / "a.nii.gz", 1), _study(tmp_path / "b.nii.gz", 2)
    cache = VolumeCache(size=2)
    cache.prefetch(lambda: a).result(timeout=30)
    vol, source = cache.lookup(a)
    assert source == "prefetched" and vol.array.shape == (6, 5, 4) and (vol.array == 1).all()
    again, source = cache.lookup(a)
    assert source == "cached" and again is vol
    assert cache.lookup(b)[1] == "read"
    # a prefetch of a study already there does not read it again
    cache.prefetch(lambda: a).result(timeout=30)
    assert cache.lookup(a) == (vol, "cached")


def test_least_recently_used_study_leaves_first(tmp_path):
    paths = [_study(tmp_path / f"{n}.nii.gz", n) for n in range(3)]
    cache = VolumeCache(size=2)
    first = cache.get(paths[0])
    cache.get(paths[1])
    cache.get(paths[0])  # used again: paths[1] is now the oldest
    cache.get(paths[2])
    assert cache.lookup(paths[0]) == (first, "cached")
    assert cache.lookup(paths[1])[1] == "read"


def test_read_aheads_nobody_used_leave_before_the_studies_in_use(tmp_path):
    paths = [_study(tmp_path / f"{n}.nii.gz", n) for n in range(6)]
    cache = VolumeCache(size=3)
    used = [cache.get(p) for p in paths[:3]]  # three studies annotators work on
    for p in paths[3:]:  # a script downloads three more: each download reads its study ahead
        cache.prefetch(lambda p=p: p).result(timeout=30)
    # the first read-ahead took the least recently used study's place; the later ones replaced only read-aheads
    assert cache.lookup(paths[0])[1] == "read"
    assert cache.lookup(paths[1]) == (used[1], "cached") and cache.lookup(paths[2]) == (used[2], "cached")
    assert cache.lookup(paths[3])[1] == "read" and cache.lookup(paths[4])[1] == "read"


def test_a_changed_file_is_read_again(tmp_path):
    path = _study(tmp_path / "a.nii.gz", 1)
    cache = VolumeCache()
    cache.get(path)
    _study(tmp_path / "a.nii.gz", 7)  # rewritten in place (new size or mtime)
    vol, source = cache.lookup(path)
    assert source == "read" and (vol.array == 7).all()


def test_a_failed_prefetch_is_not_an_error_until_the_study_is_needed(tmp_path):
    bad = tmp_path / "bad.nii.gz"
    bad.write_bytes(b"not an image")
    cache = VolumeCache()
    cache.prefetch(lambda: str(bad)).result(timeout=30)  # logged, not raised
    cache.prefetch(lambda: str(tmp_path / "missing.nii.gz")).result(timeout=30)
    with pytest.raises(ValueError, match="not a readable image"):
        cache.lookup(str(bad))


def test_fast_fill_holes_and_sparse_block_any_equal_scipy_and_numpy():
    """The GeoS clean-up's faster paths give exactly what they replace."""
    from scipy import ndimage as ndi

    from lib.geos import block_reduce, fill_holes_6

    rng = np.random.default_rng(0)
    for trial in range(60):
        shape = tuple(int(n) for n in rng.integers(1, 14, 3))
        region = rng.random(shape) < rng.uniform(0.2, 0.9)
        np.testing.assert_array_equal(fill_holes_6(region), ndi.binary_fill_holes(region))
        seeds = rng.random(shape) < 0.01
        f = tuple(int(x) for x in rng.integers(1, 5, 3))
        padded = np.pad(seeds, [(0, (-n) % x) for n, x in zip(shape, f)])
        n = [q // x for q, x in zip(padded.shape, f)]
        dense = padded.reshape(n[0], f[0], n[1], f[1], n[2], f[2]).any(axis=(1, 3, 5))
        np.testing.assert_array_equal(block_reduce(seeds, f, "any"), dense)
