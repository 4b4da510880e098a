"""Volume I/O with ITK's geometry (what Slicer and OHIF see): NIfTI, NRRD and other ITK formats.

Arrays are returned and taken in ``(I, J, K)`` voxel order (ITK's x, y, z index order), spacing in
mm in the same order.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from lib.frame import View, world_affine


@dataclass(frozen=True)
class Volume:
    array: np.ndarray  # (I, J, K)
    spacing: tuple[float, float, float]  # mm, (I, J, K) order
    affine: np.ndarray | None = None  # (4, 4) voxel index -> world RAS+ mm (lib/frame.py)

    def view(self, spacing_mm=None) -> View:
        """This study in the canonical frame (RAS axes, ``spacing_mm`` per axis; see :class:`lib.frame.View`)."""
        affine = self.affine if self.affine is not None else np.diag([*self.spacing, 1.0])
        return View.of(self.array.shape, affine, spacing_mm)


def read_volume(path: str) -> Volume:
    """Read a 3D volume; raises ``ValueError`` with the reason when the file is not a readable 3D image."""
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as e:
        first = str(e).strip().splitlines()[-1] if str(e).strip() else "unknown format"
        raise ValueError(f"not a readable image ({first[:200]})") from None
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError(
            f"expected a single-channel 3D volume, got {img.GetDimension()}D with "
            f"{img.GetNumberOfComponentsPerPixel()} component(s)"
        )
    return Volume(sitk.GetArrayFromImage(img).transpose(2, 1, 0), tuple(float(s) for s in img.GetSpacing()),
                  world_affine(img.GetOrigin(), img.GetSpacing(), img.GetDirection()))


def write_like(array: np.ndarray, reference: str, out_path: str, dtype: str = "uint8", compress: bool = True) -> str:
    """Write ``array`` ``(I, J, K)`` with the geometry (origin, spacing, direction) of ``reference``.

    The format follows ``out_path``'s extension (``.nii.gz``, ``.nrrd``, ...).
    """
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(reference))
    reader.ReadImageInformation()
    img = sitk.GetImageFromArray(np.ascontiguousarray(np.asarray(array, dtype=dtype).transpose(2, 1, 0)))
    img.SetOrigin(reader.GetOrigin())
    img.SetSpacing(reader.GetSpacing())
    img.SetDirection(reader.GetDirection())
    sitk.WriteImage(img, str(out_path), compress)
    return str(out_path)


class VolumeCache:
    """A small thread-safe LRU of read volumes keyed by path, size and mtime (interactive re-use)."""

    def __init__(self, size: int = 4):
        self.size = size
        self._items: OrderedDict[tuple, Volume] = OrderedDict()
        self._lock = threading.Lock()

    def values(self) -> list[Volume]:
        with self._lock:
            return list(self._items.values())

    def get(self, path: str) -> Volume:
        st = os.stat(path)
        key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        vol = read_volume(path)
        with self._lock:
            self._items[key] = vol
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return vol
