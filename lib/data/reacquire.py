"""Re-acquire a study the ways clinical scans differ, keeping its world geometry (SimpleITK images).

Each operation changes how the same anatomy is *stored* (orientation, an oblique grid, voxel size, field
of view, noise) or imaged (contrast enhancement) and never where it lies in world coordinates, so a label
map put through the same operation stays the ground truth of the result. Used to build the development set
(``sample-data/build_devset.py``) and the geometry-invariance tests.

Images are ``SimpleITK.Image`` (3D, ITK's LPS+ geometry); orientations are three letters in the
convention of ``SimpleITK.DICOMOrient`` and nibabel (the direction each stored axis runs towards,
e.g. ``"LPS"``: DICOM's, ``"RAS"``: NIfTI tools').
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import SimpleITK as sitk
from scipy.spatial.transform import Rotation


def reorient(image: sitk.Image, orientation: str) -> sitk.Image:
    """The same voxels stored in ``orientation`` (an exact permutation and flip of the axes)."""
    return sitk.DICOMOrient(image, orientation.upper())


def resample(image: sitk.Image, spacing_mm: Sequence[float], label: bool = False) -> sitk.Image:
    """``image`` on a grid of ``spacing_mm`` (per stored axis) covering the same field of view (the outer
    faces of the first and last voxels stay in place). Images: Gaussian low-pass where voxels grow
    (σ = half the new voxel), then linear interpolation; ``label``: nearest neighbour."""
    old = np.asarray(image.GetSpacing(), float)
    new = np.asarray(spacing_mm, float)
    size = [max(1, int(round(n * o / s))) for n, o, s in zip(image.GetSize(), old, new)]
    direction = np.asarray(image.GetDirection()).reshape(3, 3)
    origin = np.asarray(image.GetOrigin()) + direction @ ((new - old) / 2.0)
    src = image
    if not label and (new > old * 1.01).any():
        sigma = [float(max(0.0, (s - o) / 2.0)) if s > o * 1.01 else 0.0 for o, s in zip(old, new)]
        src = sitk.SmoothingRecursiveGaussian(sitk.Cast(image, sitk.sitkFloat32), [max(x, 1e-3) for x in sigma])
    out = sitk.Resample(src, size, sitk.Transform(), sitk.sitkNearestNeighbor if label else sitk.sitkLinear,
                        tuple(origin), tuple(new), image.GetDirection(), 0, image.GetPixelID())
    return out


def rotate(image: sitk.Image, degrees: Sequence[float], label: bool = False) -> sitk.Image:
    """``image`` stored on an oblique grid: the same voxel size, its axes rotated by ``degrees`` about the
    patient's R, A and S axes (in that order, right-handed; e.g. a CT gantry tilt is a rotation about R), the
    grid grown to hold the whole former field of view (outside it: the image's minimum, 0 for a label map).
    Linear interpolation (``label``: nearest neighbour)."""
    ras_to_lps = np.diag([-1.0, -1.0, 1.0])
    ras = Rotation.from_euler("xyz", np.asarray(degrees, float), degrees=True).as_matrix()  # about R, then A, then S
    rotation = ras_to_lps @ ras @ ras_to_lps  # the same rotation in ITK's LPS world
    direction = rotation @ np.asarray(image.GetDirection()).reshape(3, 3)
    spacing = np.asarray(image.GetSpacing(), float)
    size = np.asarray(image.GetSize())
    corners = np.array([image.TransformContinuousIndexToPhysicalPoint([float(c) for c in np.asarray(k) * (size - 1)])
                        for k in np.ndindex(2, 2, 2)])
    local = corners @ direction  # the corners along the new axes (mm)
    lo, hi = local.min(axis=0), local.max(axis=0)
    new_size = [int(np.ceil(x)) + 1 for x in (hi - lo) / spacing]
    fill = 0 if label else float(sitk.GetArrayViewFromImage(image).min())
    return sitk.Resample(image, new_size, sitk.Transform(), sitk.sitkNearestNeighbor if label else sitk.sitkLinear,
                         tuple(direction @ lo), tuple(spacing), tuple(direction.ravel()), fill, image.GetPixelID())


def slab(image: sitk.Image, axis: int, start: int, count: int) -> sitk.Image:
    """``count`` slices from ``start`` along the stored ``axis`` (0, 1, 2 = ITK x, y, z), geometry kept."""
    index = [0, 0, 0]
    size = list(image.GetSize())
    index[axis], size[axis] = int(start), int(count)
    if start < 0 or start + count > image.GetSize()[axis]:
        raise ValueError(f"slices {start}..{start + count} are outside 0..{image.GetSize()[axis]} along axis {axis}")
    return sitk.RegionOfInterest(image, size, index)


def add_noise(image: sitk.Image, sd: float, seed: int) -> sitk.Image:
    """``image`` plus seeded Gaussian noise of ``sd`` (image units), same pixel type and geometry."""
    a = sitk.GetArrayFromImage(image).astype(np.float32)
    a += np.random.default_rng(seed).normal(0.0, sd, a.shape).astype(np.float32)
    return _like(a, image)


def _like(array: np.ndarray, image: sitk.Image) -> sitk.Image:
    """A float ``array`` (ITK's (z, y, x) order) as an image of ``image``'s pixel type (integers rounded and
    clipped) and geometry."""
    dtype = sitk.GetArrayViewFromImage(image).dtype
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        array = np.clip(np.rint(array), info.min, info.max)
    out = sitk.GetImageFromArray(array.astype(dtype))
    out.CopyInformation(image)
    return out


def enhance(image: sitk.Image, segmentation: sitk.Image, offsets: Mapping[int, float], sigma_vox: float = 0.7) -> sitk.Image:
    """``image`` as a contrast-enhanced acquisition: ``offsets[id]`` (image units, HU for CT) added to every
    voxel of ``segmentation`` id ``id`` (same grid as ``image``; ids not listed keep their intensity).

    The offset map is blurred by a Gaussian of ``sigma_vox`` voxels before it is added, so an enhanced
    organ's boundary has the partial-volume ramp a scanner gives it instead of a step at the label's edge.
    Same pixel type (integers rounded and clipped) and geometry."""
    if segmentation.GetSize() != image.GetSize():
        raise ValueError(f"segmentation {segmentation.GetSize()} is not on the image's grid {image.GetSize()}")
    seg = sitk.GetArrayViewFromImage(segmentation)
    lut = np.zeros(int(seg.max()) + 1, np.float32)
    for sid, hu in offsets.items():
        if 0 <= int(sid) < lut.size:
            lut[int(sid)] = float(hu)
    offset = sitk.GetImageFromArray(lut[seg])
    offset.CopyInformation(image)
    if sigma_vox > 0:
        offset = sitk.SmoothingRecursiveGaussian(offset, [sigma_vox * s for s in image.GetSpacing()])
    return _like(sitk.GetArrayFromImage(image).astype(np.float32) + sitk.GetArrayFromImage(offset), image)


def axial_axis(img: sitk.Image) -> int:
    """The stored axis that runs closest to the patient's superior-inferior axis."""
    return int(np.argmax(np.abs(np.asarray(img.GetDirection()).reshape(3, 3)[2])))


def reacquire(image: sitk.Image, label: sitk.Image, op: dict, centre_mm: np.ndarray, seed: int,
              segmentation: sitk.Image | None = None, enhancement: dict | None = None,
              modality: str = "CT") -> tuple[sitk.Image, sitk.Image]:
    """One re-acquisition of ``configs/devset.yaml`` (``reacquire.<subject>.<copy>``: any of ``contrast``,
    ``rotate_deg``, ``orientation``, ``spacing_mm``, ``slab``, ``noise_sd``, applied in that order) to an image and
    its label map. ``centre_mm``: the world point (mm) a ``slab`` is centred on along the stored axial axis;
    ``seed``: the noise's. ``segmentation``: the image's label map whose class ids ``enhancement`` (the config's
    section) gives HU offsets for (``contrast``, CT only). Returns ``(image, label)``."""
    if op.get("contrast"):
        if modality != "CT":
            raise ValueError(f"contrast {op['contrast']!r} on an {modality} study: the `enhancement` offsets are HU per "
                             "TotalSegmentator CT class id (an MR label map numbers its classes otherwise)")
        if segmentation is None or not enhancement or op["contrast"] not in enhancement:
            raise ValueError(f"contrast {op['contrast']!r}: no such phase in `enhancement`, or no source label map")
        image = enhance(image, segmentation, enhancement[op["contrast"]], float(enhancement.get("sigma_vox", 0.7)))
    if op.get("rotate_deg"):
        image, label = rotate(image, op["rotate_deg"]), rotate(label, op["rotate_deg"], label=True)
    if op.get("orientation"):
        image, label = reorient(image, op["orientation"]), reorient(label, op["orientation"])
    if op.get("spacing_mm"):
        image, label = resample(image, op["spacing_mm"]), resample(label, op["spacing_mm"], label=True)
    if op.get("slab"):
        axis, n = axial_axis(image), int(op["slab"])
        centre = image.TransformPhysicalPointToContinuousIndex(tuple(float(x) for x in centre_mm))[axis]
        start = int(np.clip(round(centre - n / 2), 0, image.GetSize()[axis] - n))
        image, label = slab(image, axis, start, n), slab(label, axis, start, n)
    if op.get("noise_sd"):
        image = add_noise(image, float(op["noise_sd"]), seed)
    return image, label
