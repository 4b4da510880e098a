"""Interactive-segmentation cases of the development set: per scan and structure, the requests a robot
annotator sends (DeepIGeoS / DeepEdit style evaluation).

A case is one structure of one scan: Slicer's scribbles (medial-axis strokes on 3 axial slices and a
background ring on each, sized in mm: :func:`lib.data.scribbles.study_scribbles`), Slicer's ROI (the
structure's bounding box + ``roi_margin_vox`` voxels, as Slicer's ROI tool around it is drawn), and
OHIF's one click (the structure's deepest voxel: the largest distance in mm to its boundary).
Arrays are ``(I, J, K)`` on the scan's stored grid.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from scipy import ndimage as ndi

from lib.data.scribbles import study_scribbles
from lib.io import Volume, read_volume

BACKGROUND = 250  # the background id of the simulated scribbles (above every structure id)


@dataclass
class Case:
    scan: str
    structure: str
    group: str  # the subject: scans derived from one subject form one group (leave-one-group-out)
    modality: str
    image: Volume
    image_path: Path
    truth: np.ndarray  # bool (I, J, K)
    scribbles: np.ndarray  # uint8 (I, J, K): 1 = foreground stroke, BACKGROUND = background, 0 = none
    roi: list[int]  # [i0, i1, j0, j1, k0, k1], voxels
    click: list[int]  # [i, j, k], voxels

    @property
    def foreground(self) -> np.ndarray:
        return self.scribbles == 1

    @property
    def background(self) -> np.ndarray:
        return self.scribbles == BACKGROUND


def deepest_voxel(mask: np.ndarray, spacing: Sequence[float]) -> list[int]:
    """The voxel of ``mask`` farthest (mm) from its boundary."""
    d = ndi.distance_transform_edt(np.pad(mask, 1), sampling=spacing)[1:-1, 1:-1, 1:-1]
    return [int(v) for v in np.unravel_index(int(np.argmax(d)), mask.shape)]


def devset_cases(devset: Path, scans: Sequence[str] | None = None, roi_margin_vox: int = 8,
                 skip_large: bool = False) -> Iterator[Case]:
    """Every structure of every scan of the development set (``sample-data/build_devset.py``'s output)."""
    manifest = json.loads((Path(devset) / "manifest.json").read_text())
    large = {n for g in manifest["config"]["reacquire"].values() for n, op in g.items() if op.get("large")}
    for scan, info in manifest["studies"].items():
        if (scans and scan not in scans) or (skip_large and scan in large):
            continue
        path = Path(devset) / "studies" / info["image"]
        image = read_volume(str(path))
        truth = read_volume(str(Path(devset) / "ground_truth" / f"{scan}.nii.gz")).array.astype(np.int64)
        hu = image.array.astype(np.float32)
        for structure, sid in info["labels"].items():
            mask = truth == sid
            if not mask.any():
                continue
            s = study_scribbles(truth, hu, image.affine, {structure: sid}, BACKGROUND)
            if not (s == sid).any():
                continue
            idx = np.argwhere(mask)
            lo = np.maximum(idx.min(0) - roi_margin_vox, 0)
            hi = np.minimum(idx.max(0) + 1 + roi_margin_vox, mask.shape)
            yield Case(scan, structure, info.get("derived_from") or scan, info["modality"], image, path, mask,
                       np.where(s == sid, 1, np.where(s == BACKGROUND, BACKGROUND, 0)).astype(np.uint8),
                       [int(v) for pair in zip(lo, hi) for v in pair], deepest_voxel(mask, image.spacing))
