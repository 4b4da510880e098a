"""Label volumes to and from DICOM-SEG, with label ids that survive the round trip.

A label (NIfTI, one integer id per structure) becomes one segment per id present; the id is kept in the
segment's description (``label value <id>``), so reading it back gives the ids that were saved (MONAI
Label 0.8.5 numbers segments by position in ``label_info`` instead). Writing goes through dcmqi's
``itkimage2segimage`` (MONAI Label's wrapper, ``itk_image_to_dicom_seg``); reading through pydicom-seg,
resampled onto the reference image's voxel grid.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
from typing import Dict

import numpy as np
import pydicom
import SimpleITK as sitk
from monailabel.datastore.utils.convert import itk_image_to_dicom_seg

_VALUE_RE = re.compile(r"label value (\d+)")


class EmptyLabel(ValueError):
    """A label with no structure: there is nothing to store as DICOM-SEG."""


def dcmqi_available() -> bool:
    """Put this interpreter's ``bin`` on PATH (where pip installs dcmqi's ``itkimage2segimage``); True if found."""
    bin_dir = os.path.dirname(sys.executable)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([bin_dir, os.environ.get("PATH", "")])
    return shutil.which("itkimage2segimage") is not None


def label_to_seg(label_path: str, series_dir: str, names: Dict[str, int]) -> str:
    """Write the label volume as a DICOM-SEG of the CT series in ``series_dir``; returns the file's path.

    One segment per label id present (ascending), named from ``names`` (``{name: id}``); the id is kept
    in the segment's description. :class:`EmptyLabel` when the label has no structure.
    """
    arr = sitk.GetArrayFromImage(sitk.ReadImage(label_path))
    ids = [int(v) for v in np.unique(arr) if v != 0]
    if not ids:
        raise EmptyLabel("the label is empty: nothing to store as DICOM-SEG")
    by_id = {v: k for k, v in names.items()}
    segments = [{
        "labelID": i,
        "SegmentLabel": by_id.get(i, f"label {i}"),
        "SegmentDescription": f"{by_id.get(i, 'label')} (label value {i})",
        "SegmentAlgorithmType": "SEMIAUTOMATIC",
        "SegmentAlgorithmName": "MONAI Label one-shot",
        "SegmentedPropertyCategoryCodeSequence": {"CodeValue": "123037004", "CodingSchemeDesignator": "SCT",
                                                  "CodeMeaning": "Anatomical Structure"},
        "SegmentedPropertyTypeCodeSequence": {"CodeValue": "85756007", "CodingSchemeDesignator": "SCT",
                                              "CodeMeaning": "Tissue"},
    } for i in ids]
    template = {
        "ContentCreatorName": "MONAILabel", "ClinicalTrialSeriesID": "Session1", "ClinicalTrialTimePointID": "1",
        "SeriesDescription": "Segmentation (MONAI Label)", "SeriesNumber": "300", "InstanceNumber": "1",
        "segmentAttributes": [segments], "ContentLabel": "SEGMENTATION",
        "ContentDescription": "MONAI Label one-shot segmentation", "ClinicalTrialCoordinatingCenterName": "MONAI",
        "BodyPartExamined": "",
    }
    return itk_image_to_dicom_seg(label_path, series_dir, template)


def seg_to_label(seg_file: str, reference_image: str) -> tuple[sitk.Image, Dict[str, int]]:
    """A DICOM-SEG as a label image on the voxel grid of ``reference_image``, and its ``{name: id}``.

    Ids come from the segments' descriptions (``label value <id>``, as :func:`label_to_seg` writes);
    a SEG from elsewhere keeps its segment numbers.
    """
    import pydicom_seg  # only when a SEG is read: it is slow to import

    ds = pydicom.dcmread(seg_file)
    number_to_id, names = {}, {}
    for seg in ds.SegmentSequence:
        match = _VALUE_RE.search(str(seg.get("SegmentDescription", "")))
        value = int(match.group(1)) if match else int(seg.SegmentNumber)
        number_to_id[int(seg.SegmentNumber)] = value
        names[str(seg.SegmentLabel)] = value
    result = pydicom_seg.MultiClassReader().read(ds)
    arr = sitk.GetArrayFromImage(result.image)
    lut = np.zeros(max([*number_to_id, 0]) + 1, dtype=np.uint16)
    for number, value in number_to_id.items():
        lut[number] = value
    seg_img = sitk.GetImageFromArray(lut[arr])
    seg_img.CopyInformation(result.image)
    ref = sitk.ReadImage(reference_image)
    out = sitk.Resample(seg_img, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt16)
    return out, names
