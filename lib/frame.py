"""One physical frame for every study: world coordinates (RAS+, mm) and canonical voxel grids.

Studies arrive stored in any orientation (R-A-S from NIfTI tools, L-P-S from DICOM converters, axes
swapped or flipped), at any spacing and with any field of view. Everything that compares two studies
(PRNet propagation and its registration refinement) or that measures sizes in voxels (network
patches, GeoS filters) works on a :class:`View` of each study:

1. **reorientation**: the stored array is transposed and flipped (exact, no interpolation) so that
   its axes 0, 1, 2 run towards the patient's Right, Anterior and Superior (RAS+, nibabel's
   convention: world x increases from left to right, y from posterior to anterior, z from inferior to
   superior);
2. **resampling** to a voxel size chosen in mm per axis (``None`` keeps the stored one), keeping the
   field of view (the outer faces of the first and last voxels do not move).

Results go back to the study's own grid with :meth:`View.to_native` (nearest neighbour for labels),
so a client always gets a label on the grid and in the orientation it sent. Points travel between
studies in world millimetres (:meth:`View.to_world`, :meth:`View.from_world`).

Arrays are ``(I, J, K)``; affines ``(4, 4)`` map voxel indices (voxel centres) to world mm. An
oblique study (direction cosines off the axes) keeps its rotation in the view's affine: its axes are
the stored axes nearest to R, A, S.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import nibabel.orientations as nio
import numpy as np
from scipy import ndimage as ndi

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def world_affine(origin: Sequence[float], spacing: Sequence[float], direction: Sequence[float]) -> np.ndarray:
    """The ``(4, 4)`` voxel → RAS+ mm affine of an ITK image geometry (ITK's origin, spacing and
    row-major 3×3 direction are in LPS+ mm)."""
    m = np.eye(4)
    m[:3, :3] = np.asarray(direction, float).reshape(3, 3) @ np.diag(np.asarray(spacing, float))
    m[:3, 3] = np.asarray(origin, float)
    return _LPS_TO_RAS @ m


def voxel_sizes(affine: np.ndarray) -> np.ndarray:
    """mm per voxel along each array axis of ``affine``."""
    return np.linalg.norm(np.asarray(affine)[:3, :3], axis=0)


def axcodes(affine: np.ndarray) -> str:
    """The stored orientation of ``affine`` as three letters, e.g. ``"LPS"`` (the direction each array
    axis runs towards)."""
    return "".join(nio.aff2axcodes(affine))


def apply_affine(affine: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``points`` ``(N, 3)`` through a ``(4, 4)`` affine; float ``(N, 3)``."""
    pts = np.asarray(points, np.float64).reshape(-1, 3)
    return pts @ np.asarray(affine)[:3, :3].T + np.asarray(affine)[:3, 3]


@dataclass(frozen=True)
class View:
    """How a study stored with ``native_affine`` / ``native_shape`` is seen in the canonical frame.

    ``ornt``: nibabel orientation (stored axes → RAS axes); ``factor``: canonical voxel size / stored
    voxel size per canonical axis; ``shape`` / ``affine``: the canonical grid.
    """

    native_shape: tuple[int, int, int]
    native_affine: np.ndarray
    ornt: np.ndarray
    factor: np.ndarray
    shape: tuple[int, int, int]
    affine: np.ndarray

    @classmethod
    def of(cls, native_shape: Sequence[int], native_affine: np.ndarray,
           spacing_mm: Sequence[float | None] | float | None = None) -> "View":
        """The canonical view of a study; ``spacing_mm``: the voxel size (mm) per canonical axis
        (R, A, S), one number for all, or ``None`` (per axis or for all) to keep the stored one."""
        shape = tuple(int(n) for n in native_shape)
        native_affine = np.asarray(native_affine, np.float64)
        ornt = nio.io_orientation(native_affine)
        reoriented = native_affine @ nio.inv_ornt_aff(ornt, shape)
        re_shape = np.array(shape)[np.argsort(ornt[:, 0])]
        stored = voxel_sizes(reoriented)
        if spacing_mm is None or np.isscalar(spacing_mm):
            spacing_mm = [spacing_mm] * 3
        target = np.array([s if t is None else float(t) for s, t in zip(stored, spacing_mm)])
        if (target <= 0).any():
            raise ValueError(f"voxel sizes must be > 0 mm, got {list(spacing_mm)}")
        factor = target / stored
        out_shape = tuple(int(max(1, round(n / f))) for n, f in zip(re_shape, factor))
        scale = np.eye(4)
        scale[:3, :3] = np.diag(factor)
        scale[:3, 3] = (factor - 1.0) / 2.0  # canonical voxel c covers stored voxels [c f - 1/2, (c + 1) f - 1/2]
        return cls(shape, native_affine, ornt, factor, out_shape, reoriented @ scale)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """mm per canonical voxel, axes (R, A, S)."""
        return tuple(float(s) for s in voxel_sizes(self.affine))

    @property
    def native_spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in voxel_sizes(self.native_affine))

    def _reoriented_index(self, axis: int, n: int) -> np.ndarray:
        """Continuous stored (reoriented) index of each of ``n`` canonical voxel centres along ``axis``."""
        f = self.factor[axis]
        return np.arange(n) * f + (f - 1.0) / 2.0

    def image(self, array: np.ndarray, order: int = 1) -> np.ndarray:
        """The stored ``array`` ``(I, J, K)`` on the canonical grid, float32: reoriented, low-pass filtered
        where the voxels grow (σ = (f − 1) / 2 stored voxels, against aliasing) and interpolated (spline
        ``order``, 1 = trilinear; the border voxel repeats outside)."""
        a = nio.apply_orientation(np.asarray(array), self.ornt).astype(np.float32, copy=False)
        if np.allclose(self.factor, 1.0):
            return np.ascontiguousarray(a)
        sigma = np.maximum(0.0, (self.factor - 1.0) / 2.0)
        if sigma.max() > 0.05:
            a = ndi.gaussian_filter(a, sigma=sigma, mode="nearest")
        return ndi.affine_transform(a, self.factor, offset=(self.factor - 1.0) / 2.0, output_shape=self.shape,
                                    order=order, mode="nearest", prefilter=order > 1)

    def labels(self, array: np.ndarray) -> np.ndarray:
        """A stored label map ``(I, J, K)`` on the canonical grid by nearest neighbour (same dtype)."""
        a = nio.apply_orientation(np.asarray(array), self.ornt)
        idx = [np.clip(np.rint(self._reoriented_index(ax, n)), 0, a.shape[ax] - 1).astype(int)
               for ax, n in enumerate(self.shape)]
        return np.ascontiguousarray(a[np.ix_(*idx)])

    def to_native(self, label: np.ndarray, box: Sequence[slice] | None = None) -> np.ndarray:
        """A canonical map ``(..., *self.shape)`` (a label, or per-class maps with leading axes) back on the
        study's own grid and orientation, nearest neighbour, same dtype: ``(..., I, J, K)``, or only the stored
        voxels of ``box`` (three slices of the stored grid, step 1) without building the whole study."""
        label = np.asarray(label)
        lead = label.ndim - 3
        box = tuple(box) if box is not None else (slice(None),) * 3
        axes, idx = [], []
        for stored_axis, (n, s) in enumerate(zip(self.native_shape, box)):
            ax, sign = int(self.ornt[stored_axis, 0]), float(self.ornt[stored_axis, 1])
            re = np.arange(n)[s]
            if sign < 0:
                re = n - 1 - re  # this stored axis runs against its RAS axis
            f = self.factor[ax]
            c = (re - (f - 1.0) / 2.0) / f  # canonical coordinate of each stored voxel centre
            axes.append(ax)
            idx.append(np.clip(np.floor(c + 0.5), 0, self.shape[ax] - 1).astype(int))
        by_canonical = [idx[axes.index(ax)] for ax in range(3)]
        out = label[(Ellipsis, *np.ix_(*by_canonical))]
        return np.ascontiguousarray(np.moveaxis(out, [lead + a for a in axes], [lead + i for i in range(3)]))

    def to_world(self, points: np.ndarray) -> np.ndarray:
        """Canonical voxel coordinates ``(N, 3)`` → world mm."""
        return apply_affine(self.affine, points)

    def from_world(self, points: np.ndarray) -> np.ndarray:
        """World mm ``(N, 3)`` → canonical voxel coordinates (float)."""
        return apply_affine(np.linalg.inv(self.affine), points)

    def native_to_world(self, points: np.ndarray) -> np.ndarray:
        return apply_affine(self.native_affine, points)

    def world_to_native(self, points: np.ndarray) -> np.ndarray:
        return apply_affine(np.linalg.inv(self.native_affine), points)

    def inside(self, points: np.ndarray, margin_vox: float = 0.5) -> np.ndarray:
        """Whether canonical voxel coordinates ``(N, 3)`` lie within the grid (voxel faces, ± ``margin_vox``)."""
        p = np.asarray(points, float).reshape(-1, 3)
        return np.all((p >= -margin_vox) & (p <= np.asarray(self.shape) - 1 + margin_vox), axis=1)
