"""NIfTI CT volume → a DICOM CT series (one file per axial slice), with its geometry and Hounsfield units.

Geometry: NIfTI's affine maps voxel ``(i, j, k)`` to RAS millimetres; DICOM's patient space is LPS, so
x and y change sign. Slice ``k`` becomes one CT image whose columns run along ``i`` and rows along ``j``:
``ImageOrientationPatient`` is the LPS direction of ``i`` then of ``j``, ``ImagePositionPatient`` the LPS
position of voxel ``(0, 0, k)``, ``PixelSpacing`` ``[spacing j, spacing i]`` (row spacing first, mm).
Reading the series back with ITK/GDCM (as MONAI Label does) gives the same voxels at the same
physical positions. ITK orders the slices along the normal ``row × column``; for a left-handed voxel grid
(``det(affine) < 0``, e.g. LAS) that reverses ``k``: :func:`voxel_order_as_read_back` does the same to a
label drawn on the NIfTI grid, so it matches the image the app reads from the PACS.

Pixels: signed 16-bit, stored value = HU (``RescaleSlope`` 1, ``RescaleIntercept`` 0).
UIDs are derived from the study id, so converting the same study twice gives the same series
(uploading it again to a PACS is idempotent).
"""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

# pydicom's own UID root ("1.2.826.0.1.3680043.8.498.") keeps generated UIDs valid and unique
_LPS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class SeriesUIDs:
    study: str
    series: str
    frame_of_reference: str


def series_uids(study_id: str) -> SeriesUIDs:
    """Deterministic UIDs for the study named ``study_id``."""
    return SeriesUIDs(
        study=generate_uid(entropy_srcs=[study_id, "study"]),
        series=generate_uid(entropy_srcs=[study_id, "series"]),
        frame_of_reference=generate_uid(entropy_srcs=[study_id, "for"]),
    )


def _geometry(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(LPS direction of i and j as a 6-vector, LPS origin, spacing (si, sj, sk) in mm)."""
    lin = _LPS @ affine[:3, :3]
    spacing = np.linalg.norm(lin, axis=0)
    dirs = lin / spacing
    return np.concatenate([dirs[:, 0], dirs[:, 1]]), _LPS @ affine[:3, 3], spacing


def left_handed(affine: np.ndarray) -> bool:
    """True when the voxel axes (i, j, k) form a left-handed frame: ITK reads such a series with ``k`` reversed."""
    return bool(np.linalg.det(affine[:3, :3]) < 0)


def voxel_order_as_read_back(array: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``array`` (I, J, K) on the NIfTI grid of ``affine``, in the voxel order of the series read back by ITK."""
    return array[:, :, ::-1] if left_handed(affine) else array


def nifti_to_ct_series(nifti: str | Path, out_dir: str | Path, study_id: str | None = None,
                       patient_name: str | None = None) -> SeriesUIDs:
    """Write ``nifti`` (a 3D CT volume in HU) as a CT series of ``K`` files ``out_dir/slice_####.dcm``.

    Returns the series' UIDs. ``study_id`` (default: the file's name without extension) is the
    PatientID and seeds the UIDs.
    """
    nifti = Path(nifti)
    study_id = study_id or nifti.name.split(".")[0]
    img = nib.load(str(nifti))
    vol = np.asarray(img.dataobj)
    if vol.ndim != 3:
        raise ValueError(f"{nifti}: expected a 3D volume, got shape {vol.shape}")
    hu = np.clip(np.rint(vol), -32768, 32767).astype(np.int16)
    orientation, origin, spacing = _geometry(img.affine)
    k_step = (_LPS @ img.affine[:3, :3])[:, 2]
    uids = series_uids(study_id)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    now = _dt.datetime.now()
    for k in range(hu.shape[2]):
        ds = _ct_slice(uids, study_id, patient_name or study_id, now)
        ds.SOPInstanceUID = generate_uid(entropy_srcs=[study_id, "slice", str(k)])
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = k + 1
        position = origin + k * k_step
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in orientation]
        ds.SliceLocation = f"{float(position @ np.cross(orientation[:3], orientation[3:])):.6f}"
        ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]
        ds.SliceThickness = f"{spacing[2]:.6f}"
        pixels = np.ascontiguousarray(hu[:, :, k].T)  # (rows = j, columns = i)
        ds.Rows, ds.Columns = pixels.shape
        ds.WindowCenter, ds.WindowWidth = "40", "400"
        ds.SmallestImagePixelValue = int(pixels.min())
        ds.LargestImagePixelValue = int(pixels.max())
        ds["SmallestImagePixelValue"].VR = "SS"
        ds["LargestImagePixelValue"].VR = "SS"
        ds.PixelData = pixels.tobytes()
        ds.save_as(out / f"slice_{k:04d}.dcm", write_like_original=False)
    return uids


def _ct_slice(uids: SeriesUIDs, patient_id: str, patient_name: str, now: _dt.datetime) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = generate_uid(entropy_srcs=["oneshot-monailabel"])
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.SOPClassUID = CTImageStorage
    ds.Modality = "CT"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PatientID, ds.PatientName = patient_id, patient_name
    ds.PatientBirthDate, ds.PatientSex = "", ""
    ds.StudyInstanceUID, ds.SeriesInstanceUID = uids.study, uids.series
    ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = uids.frame_of_reference, ""
    ds.StudyID, ds.SeriesNumber, ds.AccessionNumber = "1", 1, ""
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.StudyDescription = f"One-shot sample cohort: {patient_id}"
    ds.SeriesDescription = "CT (converted from NIfTI)"
    ds.ReferringPhysicianName, ds.Manufacturer = "", "oneshot-monailabel"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "HU"
    ds.KVP = ""
    return ds
