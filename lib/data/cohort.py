"""A MONAI Label studies folder built from one labelled CT: the subject plus deformed pseudo-subjects.

Layout written by :func:`build_cohort` under ``out_dir``::

    studies/<id>.nii.gz            images (int16 HU) — the folder MONAI Label serves
    ground_truth/<id>.nii.gz       organ label maps (uint8), for evaluation only, never served
    ground_truth/labels.json       {"liver": 1, ...}
    scribbles/<subject_id>.nii.gz  the simulated one-shot support annotation (0 = none)
    scribbles/label_info.json      [{"name": "liver", "id": 1}, ..., {"name": "background", "id": N+1}]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import nibabel as nib
import numpy as np

from lib.data.deform import DeformConfig, deform_pair, locate_in_pseudo, source_coordinates
from lib.data.labels import BACKGROUND, label_info, reduce_labels
from lib.data.scribbles import ScribbleConfig, simulate_scribbles


@dataclass(frozen=True)
class CohortSpec:
    organs: Mapping[str, int]  # ordered {name: source id}; output ids are 1..N in this order
    subject_id: str = "subject_a"
    n_pseudo: int = 8
    seed: int = 0
    deform: DeformConfig = DeformConfig()
    scribbles: ScribbleConfig = ScribbleConfig()


def pseudo_ids(n: int) -> list[str]:
    return [f"pseudo_{i:02d}" for i in range(1, n + 1)]


def pseudo_seed(spec_seed: int, n: int) -> int:
    """The warp seed of the ``n``-th pseudo-subject (0-based) of a cohort built with ``spec_seed``."""
    return spec_seed + 1000 * (n + 1)


def true_locations(points: Mapping[int, np.ndarray], study_id: str, shape: Sequence[int], deform: DeformConfig,
                   spec_seed: int) -> dict[int, np.ndarray]:
    """Where subject A's ``points`` ``{class id: (N, 3) voxel indices}`` lie in the pseudo-subject ``study_id``
    (``pseudo_NN``) of a cohort built with ``deform`` and ``spec_seed``: the true correspondence, from the
    cohort's own warp recomputed from its seed (for evaluating propagation, never used by it)."""
    src = source_coordinates(shape, deform, pseudo_seed(spec_seed, int(study_id.split("_")[-1]) - 1))
    return {c: locate_in_pseudo(p, src) if len(p) else np.asarray(p) for c, p in points.items()}


def _save(array: np.ndarray, like: nib.Nifti1Image, path: Path, dtype) -> None:
    header = like.header.copy()
    header.set_data_dtype(dtype)
    img = nib.Nifti1Image(np.asarray(array).astype(dtype), like.affine, header)
    img.set_qform(like.affine, code=1)
    img.set_sform(like.affine, code=1)
    nib.save(img, str(path))


def build_cohort(
    image_path: Path,
    label_path: Path,
    out_dir: Path,
    spec: CohortSpec,
    progress: Callable[[str], None] = lambda msg: None,
) -> dict:
    """Write the cohort of ``spec`` from one CT (``image_path``) and its label map (``label_path``).

    Returns a summary: ``{"studies": [...ids], "labels": {name: id}, "scribbles": {name: voxels}}``.
    """
    src_img = nib.load(str(image_path))
    src_seg = nib.load(str(label_path))
    if src_img.shape != src_seg.shape or not np.allclose(src_img.affine, src_seg.affine, atol=1e-3):
        raise ValueError("the source image and label map are not on the same voxel grid")
    image = np.asarray(src_img.dataobj).astype(np.float32)
    labels, names = reduce_labels(np.asarray(src_seg.dataobj), spec.organs)

    studies, truth, scribble_dir = out_dir / "studies", out_dir / "ground_truth", out_dir / "scribbles"
    for d in (studies, truth, scribble_dir):
        d.mkdir(parents=True, exist_ok=True)

    cases = [(spec.subject_id, image, labels)]
    for n, case_id in enumerate(pseudo_ids(spec.n_pseudo)):
        progress(f"deforming {case_id}")
        img_n, lab_n = deform_pair(image, labels, spec.deform, seed=pseudo_seed(spec.seed, n))
        cases.append((case_id, img_n, lab_n))
    for case_id, img_c, lab_c in cases:
        _save(np.clip(np.rint(img_c), -32768, 32767), src_img, studies / f"{case_id}.nii.gz", np.int16)
        _save(lab_c, src_img, truth / f"{case_id}.nii.gz", np.uint8)
    (truth / "labels.json").write_text(json.dumps(names, indent=2))

    progress("simulating the support scribbles")
    background_id = len(names) + 1
    scribbles = simulate_scribbles(labels, image, names, background_id, spec.scribbles)
    _save(scribbles, src_img, scribble_dir / f"{spec.subject_id}.nii.gz", np.uint8)
    info = label_info({**names, BACKGROUND: background_id})
    (scribble_dir / "label_info.json").write_text(json.dumps(info, indent=2))

    return {
        "studies": [c[0] for c in cases],
        "labels": names,
        "scribbles": {d["name"]: int((scribbles == d["id"]).sum()) for d in info},
    }
