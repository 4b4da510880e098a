"""Interactive GeoS infer tasks: ``scribbles_geos`` (3D Slicer) and ``points_geos`` (OHIF v3 points).

Both take the request as the client sends it, validate it (bad input → HTTP 4xx with what to fix),
run :func:`lib.geos.geos_segment` on a crop and write a full-size label on the image's grid.

Slicer (``scribbles``): the scribbles volume in multipart field ``label``; params ``label_info``
(``background_scribbles`` / ``foreground_scribbles`` ids; without it bg = N+1, fg = N+2 with N the
number of labels, MONAI Label's convention), optional ``roi`` ``[i0, i1, j0, j1, k0, k1]``
(voxels) and ``selected_label_name``. The answer is a 0/1 mask that Slicer maps to the selected
segment. *Multi-class*: when ``label_info`` has no ``foreground_scribbles`` entry, every other
named segment with voxels in the volume is a foreground class; all compete in one GeoS and the answer
holds their ids (or, when ``selected_label_name`` names one of them, its 0/1 mask).

OHIF (``deepgrow``): params ``foreground`` / ``background`` lists of ``[i, j, k]`` voxel indices,
seeded as balls of ``point_radius_mm``; with no background points the ROI border, or a shell
``point_margin_mm`` beyond the points, is background.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass, field, replace
from typing import Any, Dict, Mapping, Sequence, Tuple

import numpy as np
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

from lib.correction import ClassPrior, CorrectionConfig, correct_label, window_strokes
from lib.geos import GeoSConfig, geos_segment, reaches_crop_face, seeds_from_points
from lib.intensity import MODALITIES, modality_of, seed_window, study_window
from lib.io import Volume, VolumeCache, read_volume, write_like
from lib.tasks.errors import ClientError
from lib.tasks.params import number
from lib.tasks.results import write_result
from lib.tasks.start_label import StartLabel, StartLabels, model_prior

logger = logging.getLogger(__name__)

# request keys a client may send to tune GeoS (also shown by Slicer as the task's config): (lowest, highest,
# whole number). The ranges bound one request's work: a raster-scan pass over a 512 x 512 x 100 crop takes ~5 s here.
TUNABLE: dict[str, tuple[float, float, bool]] = {
    "lamb": (0.0, 1.0, False),
    "iterations": (1, 16, True),
    "margin_mm": (0.0, 300.0, False),
    "intensity_weight": (0.0, 100.0, False),
    "refine_iterations": (0, 5, True),
    "median_filter_mm": (0.0, 30.0, False),
    "gaussian_sigma_mm": (0.0, 30.0, False),
    "denoise_min_noise": (0.0, 1.0, False),
    "opening_mm": (0.0, 15.0, False),
    "working_spacing_mm": (0.0, 10.0, False),
    "working_voxels": (0, 50_000_000, True),
    "border_similarity_sd": (0.0, 100.0, False),
    "mr_window_half_width": (0.01, 1.0, False),
}
POINT_RADIUS_MM = (0.0, 50.0)  # a click's seed ball


@dataclass(frozen=True)
class PointsConfig:
    """``points_geos`` (configuration ``points``): the GeoS settings of a click that differ from ``geos``, and the
    task's own. Sizes in mm."""

    radius_mm: float = 4.0  # each click seeds a ball of this radius
    margin_mm: float = 40.0  # with no background click, a shell this far beyond the clicks is background
    intensity_weight: float = 1.5
    iterations: int = 4  # raster-scan passes: from one click the distances must be nearer the exact geodesic
    working_voxels: int = 150_000
    max_growth: int = 3  # a result that runs into a face of the click's crop (inside the image) doubles it, this often
    border_similarity_sd: float = 1.5
    labels: Mapping[str, int] = field(default_factory=dict)  # {name: id} OHIF offers to click

    def __post_init__(self):
        if not (POINT_RADIUS_MM[0] <= float(self.radius_mm) <= POINT_RADIUS_MM[1]) or int(self.max_growth) < 0:
            raise ValueError(f"radius_mm must be in {list(POINT_RADIUS_MM)} mm and max_growth at least 0, "
                             f"got {self.radius_mm} and {self.max_growth}")

    def geos(self, base: GeoSConfig) -> GeoSConfig:
        """``base`` with this section's GeoS settings."""
        return replace(base, margin_mm=float(self.margin_mm), border_similarity_sd=float(self.border_similarity_sd),
                       intensity_weight=float(self.intensity_weight), working_voxels=int(self.working_voxels),
                       iterations=int(self.iterations))
MAX_POINTS = 1000  # clicks per list


class _GeoSTask(InferTask):
    def __init__(self, type: InferType, description: str, cfg: GeoSConfig, labels=None, extra_config=None,
                 start_labels: StartLabels | None = None, correction: CorrectionConfig = CorrectionConfig(),
                 images: VolumeCache | None = None):
        config = {k: getattr(cfg, k) for k in TUNABLE}
        config.update(extra_config or {})
        config["correct"] = bool(correction.enabled and start_labels is not None)
        super().__init__(type=type, labels=labels, dimension=3, description=description, config=config)
        self.cfg = cfg
        self.start_labels, self.correction = start_labels, correction
        self.images = images if images is not None else VolumeCache(size=4)  # the app shares one (prefetched)
        self._intensity: dict[int, tuple[Volume, str, tuple[float, float]]] = {}  # id -> (volume, modality, MR range)

    def is_valid(self) -> bool:
        return True

    # -- helpers -----------------------------------------------------------------------------------
    def _cfg(self, request: Mapping[str, Any]) -> GeoSConfig:
        fixed = sorted(k for k in request if k in GeoSConfig.__dataclass_fields__ and k not in TUNABLE)
        if fixed:
            raise ClientError(f"'{fixed[0]}' is a setting of the server (--conf geos.{fixed[0]}), not of a request; "
                              f"a request may set: {', '.join(TUNABLE)}")
        updates: dict[str, Any] = {}
        for k, (lo, hi, integer) in TUNABLE.items():
            v = request.get(k)
            if v is None or v == "":
                continue
            if k == "margin_mm" and isinstance(v, (list, tuple)):
                if len(v) != 3:
                    raise ClientError(f"'margin_mm' must be one number or three (I, J, K) in mm, got {str(v)[:60]}")
                updates[k] = tuple(float(number({k: x}, k, 0, lo, hi)) for x in v)
            else:
                x = number(request, k, 0, lo, hi, integer)
                updates[k] = type(getattr(self.cfg, k))(x) if k != "margin_mm" else float(x)
        try:
            return replace(self.cfg, **updates) if updates else self.cfg
        except ValueError as e:  # a value in range that GeoSConfig refuses (an even median filter)
            raise ClientError(str(e)) from None

    def _image(self, request: Mapping[str, Any]) -> tuple[Volume, dict]:
        """The request's study and ``{"from": "read" | "prefetched" | "cached", "s": seconds spent getting it}``."""
        path = request.get("image")
        if not isinstance(path, str) or not path or not os.path.exists(path):
            raise ClientError(f"image '{request.get('image')}' is not in the datastore", status_code=404)
        t0 = time.perf_counter()
        try:
            vol, source = self.images.lookup(path)
        except ValueError as e:
            raise ClientError(f"the image could not be read: {e}", status_code=422) from None
        return vol, {"from": source, "s": round(time.perf_counter() - t0, 4)}

    def _write(self, request: Mapping[str, Any], label: np.ndarray) -> str:
        return write_result(request, label, prefix="geos_")

    def _modality(self, request: Mapping[str, Any], vol: Volume) -> tuple[str, tuple[float, float]]:
        """The study's modality (the request's ``modality``, else told from its intensities) and, for MR,
        its robust intensity range; computed once per cached study."""
        asked = request.get("modality")
        if asked not in (None, ""):
            if not isinstance(asked, str) or asked.upper() not in MODALITIES:
                raise ClientError(f"'modality' must be one of {list(MODALITIES)}, got {str(asked)[:40]}")
        entry = self._intensity.get(id(vol))
        if entry is None or entry[0] is not vol or (asked and entry[1] != asked.upper()):
            modality = asked.upper() if asked else modality_of(vol.array)
            rng = (0.0, 1.0)
            if modality == "MR":
                w_in, _, _ = study_window(vol.array, self.cfg.window_hu, self.cfg.window_out, "MR")
                rng = (float(w_in[0]), float(w_in[-1]))
            live = {id(v) for v in self.images.values()}
            self._intensity = {k: v for k, v in self._intensity.items() if k in live}
            entry = self._intensity[id(vol)] = (vol, modality, rng)
        return entry[1], entry[2]

    def _window(self, request, vol: Volume, seeds: Sequence[np.ndarray], cfg: GeoSConfig):
        """The study's modality and intensity window: None for CT (the HU window of ``cfg``), for MR centred on
        the intensities under ``seeds`` (bool masks)."""
        modality, rng = self._modality(request, vol)
        if modality != "MR":
            return modality, None
        return modality, seed_window(rng, vol.array[np.logical_or.reduce(list(seeds))], cfg.mr_window_half_width)

    def _segment(self, request, vol: Volume, seeds: Dict[int, np.ndarray], background: np.ndarray, roi, t0: float,
                 cfg: GeoSConfig | None = None):
        cfg = cfg or self._cfg(request)
        modality, window = self._window(request, vol, list(seeds.values()), cfg)
        try:
            label, stats = geos_segment(vol.array, seeds, background, vol.spacing, cfg, roi=roi or None, window=window)
        except ValueError as e:
            raise ClientError(str(e)) from None
        stats["modality"] = modality
        stats["geos_s"] = round(time.perf_counter() - t0, 4)
        return label, stats

    # -- correction mode (lib/correction.py) ---------------------------------------------------------
    def _start(self, request: Mapping[str, Any], vol: Volume) -> tuple[StartLabel | None, str]:
        """The label this request corrects (None: segment from scratch) and, when None, why."""
        asked = request.get("correct")
        if asked is False or (isinstance(asked, str) and asked.lower() in ("false", "off", "no", "0")):
            return None, "turned off by the request ('correct': false)"
        if self.start_labels is None or not self.correction.enabled:
            return None, "correction is off on this server (correction.enabled)"
        only = None
        if isinstance(asked, str) and asked.lower() not in ("", "true", "auto", "on", "yes", "1"):
            if asked not in self.start_labels.sources:
                raise ClientError(f"'correct' must be true, false or one of {self.start_labels.sources} (where the "
                                  f"label to correct comes from), got {asked[:40]}")
            only = asked
        elif asked not in (None, True, "") and not isinstance(asked, str):
            raise ClientError(f"'correct' must be true, false or one of {self.start_labels.sources}, got {str(asked)[:40]}")
        start = self.start_labels.find(request.get("_image_id"), str(request["image"]), vol.array.shape, only)
        return start, "" if start else f"the study has no label to correct ({', '.join([only] if only else self.start_labels.sources)})"

    def _correct(self, request, vol: Volume, start: StartLabel, corrections: Dict[int, np.ndarray], roi,
                 removable: Sequence[int] | None, t0: float) -> tuple[np.ndarray, dict]:
        """``start`` corrected by ``corrections`` ``{class id: stroke mask}`` (0: background); with a ROI,
        nothing outside it changes."""
        cfg = self._cfg(request)
        modality, window = self._window(request, vol, window_strokes(corrections), cfg)
        prior, model_classes = self._prior(request, start)
        try:
            label, stats = correct_label(vol.array, start.array, corrections, vol.spacing, cfg, self.correction,
                                         removable=removable, window=window, prior=prior)
        except ValueError as e:
            raise ClientError(str(e)) from None
        if roi:
            inside = np.zeros(label.shape, bool)
            inside[tuple(slice(*sorted((max(0, a), max(0, b)))) for a, b in zip(roi[0::2], roi[1::2]))] = True
            label[~inside] = start.array[~inside]
        stats.update(modality=modality, geos_s=round(time.perf_counter() - t0, 4), model_classes=model_classes)
        return label, {"from": start.source, **stats}

    def _prior(self, request: Mapping[str, Any], start: StartLabel) -> tuple[ClassPrior | None, list[str]]:
        """The published segmentation model's posteriors for the classes of ``start`` it knows (by name), unless the
        server (``correction.model_prior``) or the request (``model_prior: false``) turns them off, and those
        classes' names."""
        asked = request.get("model_prior", True)
        asked = asked.lower() if isinstance(asked, str) else asked
        if asked not in (True, False, "true", "false", None, ""):
            raise ClientError(f"'model_prior' must be true or false, got {str(request.get('model_prior'))[:40]}")
        if (asked in (False, "false") or not self.correction.model_prior or self.start_labels is None
                or self.start_labels.probabilities is None or not start.names):
            return None, []
        probs = self.start_labels.probabilities(str(request["image"]))
        if probs is None or tuple(probs.view.native_shape) != tuple(start.array.shape):
            return None, []
        return model_prior(probs, start.names)

    def warmup(self) -> None:
        """Run once on a tiny volume so the user's first click pays no import / first-call cost."""
        import SimpleITK as sitk

        with tempfile.TemporaryDirectory() as d:
            image = np.zeros((12, 12, 12), np.float32)
            reference = os.path.join(d, "warmup.nii.gz")
            sitk.WriteImage(sitk.GetImageFromArray(image), reference)
            seeds = np.zeros(image.shape, bool)
            seeds[6, 6, 6] = True
            label, _ = geos_segment(image, {1: seeds}, np.zeros_like(seeds), (1.0, 1.0, 1.0), self.cfg)
            for ext in (".nii.gz", ".nrrd"):
                read_volume(write_like(label, reference, os.path.join(d, "out" + ext)))


def _roi(request: Mapping[str, Any], shape: Sequence[int]) -> list[int] | None:
    """The request's ``roi`` ``[i0, i1, j0, j1, k0, k1]`` (voxels) as whole numbers; None when absent."""
    roi = request.get("roi")
    if roi in (None, "", []):
        return None
    if not isinstance(roi, (list, tuple)) or len(roi) != 6:
        raise ClientError(f"'roi' must be [i0, i1, j0, j1, k0, k1] in voxels, got {str(roi)[:80]}")
    big = 4 * max(shape)
    return [int(round(number({"roi": v}, "roi", 0, -big, big))) for v in roi]


def _label_info(info: Any) -> dict[str, int]:
    """Slicer's ``label_info`` ``[{"name": ..., "id": ...}, ...]`` as ``{name: id}`` (ids 0-65535)."""
    if info in (None, ""):
        return {}
    if not isinstance(info, list) or not all(isinstance(d, Mapping) and "name" in d and "id" in d for d in info):
        raise ClientError("'label_info' must be a list of {\"name\": ..., \"id\": ...}")
    out = {}
    for d in info:
        if not isinstance(d["name"], str) or not d["name"]:
            raise ClientError(f"'label_info' names must be strings, got {str(d['name'])[:60]}")
        out[d["name"]] = number(d, "id", 0, 0, 65535, integer=True)
    return out


class ScribblesGeoS(_GeoSTask):
    """``scribbles_geos``: GeoS from Slicer's foreground / background scribbles (type ``scribbles``)."""

    def __init__(self, cfg: GeoSConfig = GeoSConfig(), labels=None, start_labels: StartLabels | None = None,
                 correction: CorrectionConfig = CorrectionConfig(), images: VolumeCache | None = None):
        super().__init__(
            InferType.SCRIBBLES,
            "Geodesic (GeoS) segmentation from foreground/background scribbles (3D Slicer); corrects the study's "
            "label (final, else PRNet's draft, else the UNet's prediction) when it has one",
            cfg,
            labels=labels,
            start_labels=start_labels,
            correction=correction,
            images=images,
        )
        n = len(self.labels)
        self.default_bg = n + 1 if n else 2
        self.default_fg = n + 2 if n else 3

    def __call__(self, request) -> Tuple[str | None, Dict]:
        t0 = time.perf_counter()
        vol, image = self._image(request)
        label_file = request.get("label")
        if not label_file or not os.path.exists(str(label_file)):
            raise ClientError("no scribbles: send the scribbles volume as multipart field 'label' (as Slicer does)")
        try:
            scribbles = read_volume(label_file).array
        except ValueError as e:
            raise ClientError(f"the scribbles upload is {e}; send a NIfTI or NRRD label volume", status_code=422) from None
        if scribbles.shape != vol.array.shape:
            raise ClientError(
                f"the scribbles volume has shape {list(scribbles.shape)} but the image has shape "
                f"{list(vol.array.shape)}; export the scribbles on the image's grid"
            )
        if not np.issubdtype(scribbles.dtype, np.integer):
            scribbles = np.rint(scribbles).astype(np.int32)

        names = _label_info(request.get("label_info"))
        selected = request.get("selected_label_name")
        if selected is not None and not isinstance(selected, str):
            raise ClientError(f"'selected_label_name' must be a segment's name (a string), got {str(selected)[:60]}")
        if selected and names and selected not in names:
            raise ClientError(f"unknown label '{selected}': selected_label_name must be one of {sorted(names)}")

        bg_id = names.get("background_scribbles", self.default_bg)
        background = scribbles == bg_id
        if names and "foreground_scribbles" not in names:
            classes = {n: i for n, i in names.items() if n != "background_scribbles" and np.any(scribbles == i)}
            seeds = {i: scribbles == i for i in classes.values()}
            no_fg = (f"no foreground scribble: none of the segments {sorted(n for n in names if n != 'background_scribbles')} "
                     "has voxels in the scribbles volume; draw at least one foreground stroke") if not classes else ""
        else:
            fg_id = names.get("foreground_scribbles", self.default_fg)
            seeds = {1: scribbles == fg_id}
            classes = {selected or "foreground": 1}
            no_fg = "" if seeds[1].any() else (f"no foreground scribble (label id {fg_id}, 'foreground_scribbles') in the "
                                                 "scribbles volume; draw at least one foreground stroke")

        roi = _roi(request, vol.array.shape)
        multi = bool(names) and "foreground_scribbles" not in names
        start, why = self._start(request, vol) if (not no_fg or background.any()) else (None, "")
        if start is not None:  # the structures corrected (by name in the label); background strokes alone may remove
            wanted = list(classes) if multi and classes else [selected] if selected else []
            ids, why = _start_ids(start, wanted)
            if ids is None:
                start = None
        if start is not None:
            corrections = {ids[n]: seeds[classes[n] if multi else 1] for n in ids if (classes.get(n) if multi else 1) in seeds}
            corrections = {c: m for c, m in corrections.items() if m.any()}
            if background.any():
                corrections[0] = background
            label, correction = self._correct(request, vol, start, corrections, roi, None if multi else list(ids.values()), t0)
            if multi and selected not in ids:  # every corrected structure, with the label's own ids
                label_names = dict(start.names) if start.names else dict(ids)
            else:  # one structure's 0/1 mask, as Slicer maps it to the selected segment
                key = selected if multi else next(iter(ids))
                label = (label == ids[key]).astype(np.uint8)
                label_names = {str(selected or key): 1}
            result = self._write(request, label)
            correction["total_s"] = round(time.perf_counter() - t0, 4)
            return result, {"label_names": label_names, "correction": correction, "image": image}
        if no_fg:
            raise ClientError(no_fg + (f" (nothing to correct: {why})" if why else ""))

        label, stats = self._segment(request, vol, seeds, background, roi, t0)
        if len(classes) > 1 and selected in classes:
            label = (label == classes[selected]).astype(np.uint8)
            label_names = {selected: 1}
        elif len(classes) > 1:
            label_names = classes
        else:
            label = (label > 0).astype(np.uint8)
            label_names = {next(iter(classes)): 1}
        result = self._write(request, label)
        stats["total_s"] = round(time.perf_counter() - t0, 4)
        return result, {"label_names": label_names, "geos": stats, "correction": {"from": None, "why": why}, "image": image}


def _start_ids(start: StartLabel, wanted: Sequence[str]) -> tuple[dict[str, int] | None, str]:
    """The ids in ``start`` of the structures a request corrects (by name; with no name, the label's only
    class); None and why not when one of them is not in ``start`` (that request segments from scratch)."""
    if not wanted:
        present = [int(c) for c in np.unique(start.array) if c > 0]
        if len(present) == 1:
            name = next((n for n, c in start.names.items() if c == present[0]), "foreground")
            return {name: present[0]}, ""
        return None, (f"the label to correct ('{start.source}') has {len(present)} structures: name the one to correct "
                      "('selected_label_name')")
    missing = [n for n in wanted if n not in start.names]
    if missing:
        return None, f"the label to correct ('{start.source}') has no structure named {missing[0]!r}"
    return {n: int(start.names[n]) for n in wanted}, ""


class PointsGeoS(_GeoSTask):
    """``points_geos``: GeoS from OHIF v3 click points (type ``deepgrow``)."""

    def __init__(self, cfg: GeoSConfig = GeoSConfig(), labels=None, point_radius_mm: float = 4.0, max_growth: int = 3,
                 start_labels: StartLabels | None = None, correction: CorrectionConfig = CorrectionConfig(),
                 images: VolumeCache | None = None):
        """``cfg.margin_mm`` is the shell beyond the points that is background when none is clicked; a
        region that reaches a face of that crop inside the image doubles the margin, at most ``max_growth``
        times."""
        super().__init__(
            InferType.DEEPGROW,
            "Geodesic (GeoS) segmentation from foreground/background click points (OHIF)",
            cfg,
            labels=labels,
            extra_config={"point_radius_mm": point_radius_mm},
            start_labels=start_labels,
            correction=correction,
            images=images,
        )
        self.point_radius_mm = point_radius_mm
        self.max_growth = max_growth

    @staticmethod
    def _points(request, key: str, shape: Sequence[int]) -> list[list[int]]:
        pts = request.get(key) or []
        if not isinstance(pts, (list, tuple)) or len(pts) > MAX_POINTS:
            raise ClientError(f"'{key}' must be a list of at most {MAX_POINTS} [i, j, k] voxel points, got {str(pts)[:80]}")
        out = []
        for p in pts:
            if not isinstance(p, (list, tuple)) or len(p) < 3:
                raise ClientError(f"'{key}' point {p!r} must be [i, j, k] voxel indices")
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < 1e9 for v in p[:3]):
                raise ClientError(f"'{key}' point {str(p)[:60]} must hold 3 numbers (voxel indices)")
            q = [int(round(v)) for v in p[:3]]
            if any(v < 0 or v >= s for v, s in zip(q, shape)):
                raise ClientError(f"'{key}' point {q} lies outside the volume of shape {list(shape)} (voxel indices)")
            out.append(q)
        return out

    def __call__(self, request) -> Tuple[str | None, Dict]:
        t0 = time.perf_counter()
        vol, image = self._image(request)
        shape = vol.array.shape
        fg_pts = self._points(request, "foreground", shape)
        bg_pts = self._points(request, "background", shape)
        if not fg_pts and not bg_pts:
            raise ClientError("no foreground point: click at least one point inside the structure ('foreground')")
        radius = number(request, "point_radius_mm", self.point_radius_mm, *POINT_RADIUS_MM)
        fg = seeds_from_points(shape, fg_pts, vol.spacing, radius)
        bg = seeds_from_points(shape, bg_pts, vol.spacing, radius) & ~fg
        roi = _roi(request, vol.array.shape)
        selected = request.get("selected_label_name")
        if selected is not None and not isinstance(selected, str):
            raise ClientError(f"'selected_label_name' must be a segment's name (a string), got {str(selected)[:60]}")
        start, why = self._start(request, vol)
        if start is not None:
            ids, why = _start_ids(start, [selected] if selected else [])
            if ids is None:
                start = None
        if start is not None:
            (name, c), = ids.items()
            corrections = {**({c: fg} if fg.any() else {}), **({0: bg} if bg.any() else {})}
            label, correction = self._correct(request, vol, start, corrections, roi, [c], t0)
            result = self._write(request, (label == c).astype(np.uint8))
            correction["total_s"] = round(time.perf_counter() - t0, 4)
            return result, {"label_names": {str(selected or name): 1}, "correction": correction, "image": image}

        if not fg_pts:
            raise ClientError("no foreground point: click at least one point inside the structure ('foreground')"
                              + (f"; background points alone need a label to correct ({why})" if why else ""))
        cfg = self._cfg(request)
        margin = cfg.margin_mm
        for grown in range(self.max_growth + 1):
            # without a ROI the crop is the clicks' box + the margin: a region that runs into a face of it
            # was cut by the crop, not by the structure, so the crop grows (the working grid coarsens with it)
            label, stats = self._segment(request, vol, {1: fg}, bg, roi, t0, replace(cfg, margin_mm=margin))
            if roi or grown == self.max_growth or not reaches_crop_face(label, stats["crop"], shape):
                break
            margin = tuple(2.0 * np.broadcast_to(np.asarray(margin, float), (3,)))
        stats["crop_grown"] = grown
        label = (label > 0).astype(np.uint8)
        result = self._write(request, label)
        stats["total_s"] = round(time.perf_counter() - t0, 4)
        name = str(selected or "foreground")
        return result, {"label_names": {name: 1}, "geos": stats, "correction": {"from": None, "why": why}, "image": image}
