"""Volume I/O with ITK's geometry (what Slicer and OHIF see): NIfTI, NRRD and other ITK formats.

Arrays are returned and taken in ``(I, J, K)`` voxel order (ITK's x, y, z index order), spacing in
mm in the same order.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable

import numpy as np
import SimpleITK as sitk

from lib.frame import View, world_affine

logger = logging.getLogger(__name__)


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
    return Volume(to_array(img), tuple(float(s) for s in img.GetSpacing()),
                  world_affine(img.GetOrigin(), img.GetSpacing(), img.GetDirection()))


def to_array(image: sitk.Image) -> np.ndarray:
    """The voxels of ``image`` as an ``(I, J, K)`` array (the stored axes in the order of its index; ITK's arrays are
    ``(K, J, I)``)."""
    return sitk.GetArrayFromImage(image).transpose(2, 1, 0)


def from_array(array: np.ndarray) -> sitk.Image:
    """An ``(I, J, K)`` ``array`` as an image (ITK's default geometry: set it, or use :func:`image_like`)."""
    return sitk.GetImageFromArray(np.ascontiguousarray(array.transpose(2, 1, 0)))


def image_like(array: np.ndarray, like: sitk.Image) -> sitk.Image:
    """An ``(I, J, K)`` ``array`` as an image with ``like``'s geometry (origin, spacing, direction)."""
    out = from_array(array)
    out.CopyInformation(like)
    return out


def write_like(array: np.ndarray, reference: str, out_path: str, dtype: str = "uint8", compress: bool = True) -> str:
    """Write ``array`` ``(I, J, K)`` with the geometry (origin, spacing, direction) of ``reference``.

    The format follows ``out_path``'s extension (``.nii.gz``, ``.nrrd``, ...).
    """
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(reference))
    reader.ReadImageInformation()
    img = from_array(np.asarray(array, dtype=dtype))
    img.SetOrigin(reader.GetOrigin())
    img.SetSpacing(reader.GetSpacing())
    img.SetDirection(reader.GetDirection())
    sitk.WriteImage(img, str(out_path), compress)
    return str(out_path)


class VolumeCache:
    """A small thread-safe LRU of read volumes keyed by path, size and mtime, shared by the interactive tasks.

    :meth:`prefetch` reads a study in the background when a client is about to work on it (3D Slicer's *Next
    Sample*, an image download), so that the first scribble or click does not pay the read: a 512 x 512 x 200
    study takes 0.5-0.7 s to decompress here. A :meth:`lookup` of a study whose read is under way waits for that
    read instead of starting a second one. A full cache first drops a study read ahead and not used since, then the
    least recently used: a script that downloads every study (each download reads ahead) replaces only its own
    read-aheads, not the studies annotators are working on.
    """

    def __init__(self, size: int = 4):
        self.size = size
        self._items: OrderedDict[tuple, Volume] = OrderedDict()
        self._pending: dict[tuple, Future] = {}
        self._prefetched: set[tuple] = set()  # read ahead and not used yet
        self._lock = threading.Lock()
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")

    @staticmethod
    def _key(path: str) -> tuple:
        st = os.stat(path)
        return os.path.realpath(path), st.st_size, st.st_mtime_ns

    def values(self) -> list[Volume]:
        with self._lock:
            return list(self._items.values())

    def get(self, path: str) -> Volume:
        return self.lookup(path)[0]

    def lookup(self, path: str) -> tuple[Volume, str]:
        """The volume at ``path`` and where it came from: ``"cached"`` (used before), ``"prefetched"`` (read
        ahead, or its read ahead under way and waited for) or ``"read"`` (read now). Raises ``ValueError``
        when the file is not a readable 3D image."""
        key = self._key(path)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                source = "prefetched" if key in self._prefetched else "cached"
                self._prefetched.discard(key)
                return self._items[key], source
            pending = self._pending.get(key)
        if pending is not None:
            try:
                vol = pending.result()
            except ValueError:
                pass  # read again below, and raise with the reason
            else:
                with self._lock:
                    self._prefetched.discard(key)
                return vol, "prefetched"
        vol = read_volume(path)
        self._put(key, vol)
        return vol, "read"

    def prefetch(self, resolve: Callable[[], str]) -> Future:
        """Read the study at ``resolve()`` (called in the background: a datastore may fetch it first) into the
        cache unless it is there or on its way. Failures are logged, not raised: the request that needs the
        study reads it and reports the reason."""

        def read() -> None:
            try:
                path = resolve()
                key = self._key(path)
            except Exception as e:  # noqa: BLE001 - a prefetch is a hint
                logger.warning(f"prefetch: the study could not be located: {e}")
                return
            with self._lock:
                if key in self._items or key in self._pending:
                    return
                future: Future = Future()
                self._pending[key] = future
            try:
                vol = read_volume(path)
            except ValueError as e:
                logger.warning(f"prefetch of {os.path.basename(path)}: {e}")
                future.set_exception(e)
            else:
                self._put(key, vol, prefetched=True)
                future.set_result(vol)
            finally:
                with self._lock:
                    self._pending.pop(key, None)

        return self._reader.submit(read)

    def _put(self, key: tuple, vol: Volume, prefetched: bool = False) -> None:
        with self._lock:
            self._items[key] = vol
            self._items.move_to_end(key)
            if prefetched:
                self._prefetched.add(key)
            while len(self._items) > self.size:
                unused = next((k for k in self._items if k in self._prefetched and k != key), None)
                old = unused if unused is not None else next(iter(self._items))
                del self._items[old]
                self._prefetched.discard(old)
