"""The sample cohort as the benchmarks read it, and the oracle drafts: what the GeoS stage of pre-labeling makes
of the support's points when every point lands at its true location (PRNet and DFD make no error), so the
ceiling of the drafts the UNet can be handed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from lib.config import load_yaml
from lib.data.cohort import true_locations
from lib.data.deform import DeformConfig
from lib.data.labels import BACKGROUND
from lib.geos import GeoSConfig
from lib.intensity import normalize_intensity
from lib.io import read_volume
from lib.prnet.prelabel import Prelabel, PrelabelConfig, pseudo_mask
from lib.prnet.propagate import Propagation


def read_cohort(cohort: Path, studies: Sequence[str], window) -> tuple[dict, dict, dict]:
    """``(images, labels, names)``: each study's image ``(I, J, K)`` normalised with ``window`` (HU knots, [0, 1]
    values; float32), its ground truth (int64 ids) and ``{organ: id}`` of ``ground_truth/labels.json``."""
    names = json.loads((cohort / "ground_truth" / "labels.json").read_text())
    images, labels = {}, {}
    for s in studies:
        hu = read_volume(str(cohort / "studies" / f"{s}.nii.gz")).array.astype(np.float32)
        images[s] = normalize_intensity(hu, *window).astype(np.float32)
        labels[s] = np.rint(read_volume(str(cohort / "ground_truth" / f"{s}.nii.gz")).array).astype(np.int64)
    return images, labels, names


def oracle_drafts(cohort: Path, prelabel: PrelabelConfig, geos: GeoSConfig, studies: Sequence[str],
                  scribbles: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """GeoS pseudo masks ``{study: (I, J, K) int64}`` of ``studies`` from the support's points (``prelabel``'s
    strides) at their true locations (the cohort's own warps), grown with ``geos`` (the pseudo masks' settings).

    ``scribbles``: the support's ``(I, J, K)`` scribble map (ids of ``label_info.json``); default the cohort's.
    ``subject_a`` (the support) may be among ``studies``: its draft is GeoS from its own scribble points.
    """
    names = {d["name"]: d["id"] for d in json.loads((cohort / "scribbles" / "label_info.json").read_text())}
    if scribbles is None:
        scribbles = np.rint(read_volume(str(cohort / "scribbles" / "subject_a.nii.gz")).array).astype(np.int64)
    points = {c: p for c, p in prelabel.sampling.points(scribbles, names).items() if len(p)}
    cohort_cfg = load_yaml("sample_cohort.yaml")
    deform = DeformConfig.from_cohort_config(cohort_cfg["deformation"], cohort_cfg["intensity"])
    drafts = {}
    for s in studies:
        q = read_volume(str(cohort / "studies" / f"{s}.nii.gz"))
        # the support's own draft: its points where they are (as the pre-labeling of the support does)
        true = points if s == "subject_a" else true_locations(points, s, q.array.shape, deform, int(cohort_cfg["seed"]))
        r = Prelabel(label=None, propagation={c: Propagation(p, np.ones(len(p)), np.ones(len(p), bool)) for c, p in true.items()})
        drafts[s] = pseudo_mask(r, names[BACKGROUND], q.array.astype(np.float32), q.spacing, geos).label.astype(np.int64)
    return drafts
