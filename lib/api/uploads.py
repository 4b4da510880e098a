"""Uploaded files: received into a private temporary folder and checked before anything is stored.

MONAI Label 0.8.5 stores whatever it is sent: a truncated ``.nii.gz``, a shell script, a label of
another grid. The next training or pre-labeling job then fails on it, for every study. Here an image
must read as a single-channel 2D or 3D volume of finite values, and a label must be a non-negative
integer volume on its image's voxel grid (size, spacing, origin and direction); otherwise the request is
answered 4xx and nothing is written.
"""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
import zlib
from contextlib import contextmanager
from typing import Iterator

import nibabel as nib
import numpy as np
import SimpleITK as sitk
from fastapi import UploadFile

from lib.tasks.errors import ClientError
from lib.tasks.ids import volume_extension

MAX_VOXELS = 2**31  # 1300^3; a larger upload is refused before it is read into memory


@contextmanager
def received(upload: UploadFile, extra: tuple[str, ...] = ()) -> Iterator[str]:
    """The upload saved as ``upload.<ext>`` in a new private folder (``ext`` from its file name, a volume's
    type or one of ``extra``); the folder is removed on exit."""
    ext = volume_extension(upload.filename, extra=extra)
    folder = tempfile.mkdtemp(prefix="upload-")
    try:
        path = os.path.join(folder, "upload" + ext)
        with open(path, "wb") as out:
            shutil.copyfileobj(upload.file, out)
        if os.path.getsize(path) == 0:
            raise ClientError(f"the uploaded file '{_shown(upload.filename)}' is empty", status_code=422)
        yield path
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _shown(name: str | None) -> str:
    return os.path.basename(str(name or ""))[:80]


def _header(path: str, what: str) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        raise ClientError(f"the {what} is not a readable volume (NIfTI, NRRD or MHA)", status_code=422) from None
    if reader.GetDimension() not in (2, 3) or reader.GetNumberOfComponents() != 1:
        raise ClientError(f"the {what} must be a single-channel 2D or 3D volume, got {reader.GetDimension()}D with "
                          f"{reader.GetNumberOfComponents()} component(s)", status_code=422)
    size = reader.GetSize()
    if min(size) < 1 or int(np.prod(size, dtype=np.int64)) > MAX_VOXELS:
        raise ClientError(f"the {what} has {list(size)} voxels; at least 1 and at most {MAX_VOXELS} are accepted", status_code=422)
    return reader


def _pixels(path: str, what: str) -> np.ndarray:
    truncated = ClientError(f"the {what} could not be read to the end (truncated or corrupt file)", status_code=422)
    if path.endswith(".gz"):  # ITK reads a truncated gzip stream without complaint
        try:
            with gzip.open(path, "rb") as f:
                while f.read(1 << 24):
                    pass
        except (OSError, EOFError, zlib.error):
            raise truncated from None
    try:
        if path.endswith((".nii", ".nii.gz")):  # nibabel: ITK maps NaN voxels of some NIfTI files to 0
            return np.asanyarray(nib.load(path).dataobj)
        return sitk.GetArrayFromImage(sitk.ReadImage(path))
    except (RuntimeError, ValueError, OSError, EOFError):
        raise truncated from None


def check_image(path: str) -> None:
    """A ClientError (422) unless ``path`` is a readable single-channel 2D/3D volume of finite values."""
    _header(path, "image")
    arr = _pixels(path, "image")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ClientError("the image holds NaN or infinite voxels; export it with finite intensities", status_code=422)


def check_label(path: str, image_path: str) -> None:
    """A ClientError (422) unless ``path`` is a label volume on the voxel grid of ``image_path``: same size,
    spacing and origin within 1 % of a voxel, same direction, whole non-negative values below 65536."""
    label = _header(path, "label")
    image = _header(image_path, "study's image")
    if tuple(label.GetSize()) != tuple(image.GetSize()):
        raise ClientError(f"the label has size {list(label.GetSize())} but the image has {list(image.GetSize())}; "
                          "save the label on the image's grid", status_code=422)
    spacing = np.asarray(image.GetSpacing(), float)
    tol = 0.01 * float(spacing.min())
    if (not np.allclose(label.GetSpacing(), spacing, atol=tol) or not np.allclose(label.GetOrigin(), image.GetOrigin(), atol=tol)
            or not np.allclose(label.GetDirection(), image.GetDirection(), atol=1e-3)):
        raise ClientError("the label's spacing, origin or direction differ from the image's; save the label on the "
                          "image's grid (same geometry)", status_code=422)
    arr = _pixels(path, "label")
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all() or (arr != np.round(arr)).any():
            raise ClientError("the label must hold whole label ids (it has fractional, NaN or infinite values)", status_code=422)
    if arr.size and (arr.min() < 0 or arr.max() > 65535):
        raise ClientError(f"label ids must lie in 0..65535, got {arr.min()}..{arr.max()}", status_code=422)
