"""MONAI Label infer task ``prnet_prelabel``: propagate the support scribbles to one study and expand them
with GeoS into a multi-class draft label.

The support annotation is the label under tag ``support_tag`` (default ``scribbles``) of a study, its ids
named in the label's ``label_info`` (the background class named ``background``). Without one, scribbles are
sampled from a ``final`` label (a full mask saved from Slicer, its ids in ``label_names``).

The result's ``label_names`` (``{name: id}``) is what Slicer's *Next Sample* reads from the draft
(tag ``original``) saved by ``POST /batch/infer/prnet_prelabel?images=unlabeled``. Propagation statistics
(points kept per class, mean DFD similarity, and ``model_version``: the first 16 hex digits of the published
model file's sha256, which :mod:`lib.cluster` compares to skip studies already drafted by this model) are
returned and stored in the image's info under ``prnet``.
With the request parameter ``points: true`` the result also lists the propagated points per class, kept
and rejected by DFD (``{"points": {name: {"kept": [[i, j, k], ...], "rejected": [...]}}}``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import replace
from typing import Any, Dict, Mapping, Tuple

import numpy as np
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferType

from lib.config import is_true
from lib.data.labels import BACKGROUND
from lib.data.scribbles import ScribbleConfig, simulate_scribbles
from lib.geos import GeoSConfig
from lib.intensity import MODALITIES
from lib.io import Volume, read_volume
from lib.prnet.checkpoint import load_prnet
from lib.prnet.prelabel import PrelabelConfig, canonical_support, prelabel, support_encodings, with_tau
from lib.prnet.propagate import Group, PropagationConfig
from lib.tasks.errors import ClientError
from lib.tasks.labels import label_names_from_info
from lib.tasks.models import ModelFiles, ModelInferTask, PublishedModel, pick_device
from lib.tasks.params import number
from lib.tasks.results import write_result

logger = logging.getLogger(__name__)


class Support:
    """The one-shot support: the study (:class:`lib.io.Volume`, with its geometry), its scribble map
    ``(I, J, K)`` on the same grid and ``{name: id}`` (background included)."""

    def __init__(self, image_id: str, volume: Volume, scribbles: np.ndarray, names: Dict[str, int], source: str):
        self.image_id, self.volume, self.scribbles, self.names, self.source = image_id, volume, scribbles, names, source


def _modality(request: Mapping[str, Any]) -> str | None:
    """The request's ``modality`` (CT or MR) when it states one; None: told from the intensities."""
    value = request.get("modality")
    if value in (None, "", "auto"):
        return None
    if str(value).upper() not in MODALITIES:
        raise ClientError(f"modality must be one of {list(MODALITIES)} or 'auto', got {value!r}")
    return str(value).upper()


def images_with_tag(datastore: Datastore, tag: str) -> list[str]:
    """Image ids that have a label under ``tag`` (MONAI Label's ``get_labeled_images`` ignores the tag)."""
    return sorted(i for i in datastore.list_images() if datastore.get_label_uri(i, tag))


def find_support(datastore: Datastore, tag: str, cache: dict | None = None) -> Support:
    """The support annotation of the datastore (see the module's docstring); ClientError when there is none.

    ``cache``: a dict kept by the caller; a support whose label file is unchanged is not read again.
    """
    for t in (tag, "final"):
        for image_id in images_with_tag(datastore, t):
            uri = datastore.get_label_uri(image_id, t)
            key = (uri, os.stat(uri).st_mtime_ns)
            if cache is not None and key in cache:
                return cache[key]
            support = _load_support(datastore, tag, image_id) if t == tag else _support_from_final(datastore, image_id)
            if support is None:
                continue
            if cache is not None:
                cache.clear()
                cache[key] = support
            return support
    raise ClientError(
        f"no support annotation: scribble one study (foreground strokes per structure and background strokes) and save "
        f"it with label tag '{tag}' and its label_info, or save a full mask as a 'final' label with label_names"
    )


def _load_support(datastore: Datastore, tag: str, image_id: str) -> Support:
    names = label_names_from_info(datastore.get_label_info(image_id, tag), keep_background=True)
    if not names:
        raise ClientError(f"the '{tag}' label of '{image_id}' has no label_info naming its ids; save it with "
                          "params {\"label_info\": [{\"name\": ..., \"id\": ...}, ...]} (background named 'background')")
    if BACKGROUND not in names:
        raise ClientError(f"the '{tag}' label of '{image_id}' names no '{BACKGROUND}' class; scribble the background too")
    img = read_volume(datastore.get_image_uri(image_id))
    scribbles = read_volume(datastore.get_label_uri(image_id, tag)).array
    if scribbles.shape != img.array.shape:
        raise ClientError(f"the '{tag}' label of '{image_id}' has shape {list(scribbles.shape)}, its image {list(img.array.shape)}")
    return Support(image_id, img, np.rint(scribbles).astype(np.int64), dict(names), tag)


def _support_from_final(datastore: Datastore, image_id: str) -> Support | None:
    """Scribbles sampled from a ``final`` label with ``label_names``; None when it names no labels."""
    names = label_names_from_info(datastore.get_label_info(image_id, "final"))
    if not names:
        return None
    img = read_volume(datastore.get_image_uri(image_id))
    label = np.rint(read_volume(datastore.get_label_uri(image_id, "final")).array).astype(np.int64)
    bg = max(names.values()) + 1
    s = simulate_scribbles(label, img.array.astype(np.float32), names, bg, ScribbleConfig())
    return Support(image_id, img, s.astype(np.int64), {**names, BACKGROUND: bg}, "final")


class PRNetPrelabel(ModelInferTask):
    def __init__(
        self,
        datastore: Datastore,
        files: ModelFiles,
        geos: GeoSConfig,
        propagation: PropagationConfig = PropagationConfig(),
        prelabel: PrelabelConfig = PrelabelConfig(),
        support_tag: str = "scribbles",
    ):
        """``geos``: the pseudo masks' GeoS settings; its CT window gives way to the one the published model
        records (the window PRNet was trained with)."""
        super().__init__(
            PublishedModel(files, load_prnet, "PRNet is not trained yet: run the trainer 'prnet' first (POST /train/prnet)"),
            type=InferType.SEGMENTATION,
            labels=None,
            dimension=3,
            description="PRNet pre-label: support scribbles propagated (DFD-filtered) and expanded with GeoS",
            config={"tau": propagation.tau, "stride": prelabel.stride, "support_tag": support_tag},
        )
        self.datastore, self.geos, self.propagation = datastore, geos, propagation
        self.support_tag, self.sampling = support_tag, prelabel.sampling  # the support points propagated
        self._lock = threading.Lock()
        self._support_cache: dict = {}  # the support study, re-read only when its label file changes
        self._encodings: dict[str, tuple[tuple, dict]] = {}  # device -> support encodings for (support, model, stride)

    def _image_id(self, request: Dict[str, Any]) -> str | None:
        if request.get("_image_id"):
            return str(request["_image_id"])
        path = os.path.realpath(str(request.get("image", "")))
        for image_id in self.datastore.list_images():
            if os.path.realpath(self.datastore.get_image_uri(image_id)) == path:
                return image_id
        return None

    def _geos(self, model) -> GeoSConfig:
        """The pseudo masks' GeoS with the CT window the published ``model`` was trained with."""
        return self.geos if model.window is None else replace(self.geos, window_hu=model.window[0], window_out=model.window[1])

    def _cached_encodings(self, device: str, key: tuple, encodings: dict | None = None) -> dict:
        """The support encodings kept for ``device`` when made for ``key`` (support, model version, stride,
        batch), else a fresh dict (``encodings`` when given) kept in their place."""
        with self._lock:  # one set per device: batch pre-labeling on several GPUs runs one thread per GPU
            if encodings is not None or self._encodings.get(device, ((), {}))[0] != key:
                self._encodings[device] = (key, {} if encodings is None else encodings)
            return self._encodings[device][1]

    def encode_support(self, device: str, group: Group | None = None) -> None:
        """Encode the support's points for ``device`` now, as the first pre-label would; ``group`` (the ranks
        of a cohort's pre-labeling, all of which must call this together): each process encodes its share
        of the points and every process keeps them all."""
        model, version = self.model.get(device)
        support = find_support(self.datastore, self.support_tag, self._support_cache)
        sup = canonical_support(support.volume, support.scribbles, support.names, self._geos(model), model.config.spacing_mm,
                                self.sampling)
        encodings = support_encodings(model.localizer, sup, support.names, self.propagation, device, group)
        self._cached_encodings(device, (id(support), version, self.sampling.stride, self.propagation.batch_size), encodings)

    def __call__(self, request: Dict[str, Any]) -> Tuple[str | None, Dict]:
        t0 = time.perf_counter()
        path = self.image_path(request)
        device = pick_device(request)
        model, version = self.model.get(device)
        geos = self._geos(model)
        support = find_support(self.datastore, str(request.get("support_tag", self.support_tag)), self._support_cache)
        tau = number(request, "tau", self.propagation.tau, -1.0, 1.0)
        sampling = replace(self.sampling, stride=number(request, "stride", self.sampling.stride, 1, 1000, integer=True))
        query = read_volume(path)
        image_id = self._image_id(request)

        bg_id = support.names[BACKGROUND]
        encodings = self._cached_encodings(device, (id(support), version, sampling.stride, self.propagation.batch_size))
        try:
            result = prelabel(
                model.localizer, support.volume, support.scribbles, support.names, query, bg_id, geos,
                with_tau(self.propagation, tau), model.config.spacing_mm, sampling, device,
                identity=image_id == support.image_id, encodings=encodings, query_modality=_modality(request),
            )
        except ValueError as e:
            raise ClientError(str(e), status_code=422) from None
        warnings = list(result.warnings)
        if result.label is None and not any(p.inside.any() for c, p in result.propagation.items() if c != bg_id):
            raise ClientError("none of the support's scribbled structures lies inside this study's field of view: "
                              "no draft (" + "; ".join(warnings) + ")", status_code=422)
        if result.label is None:
            raise ClientError(f"no propagated foreground point survived DFD (tau={tau}); lower 'tau' or retrain 'prnet'", status_code=422)
        label_names = {n: c for n, c in support.names.items() if n != BACKGROUND}
        summary = {**result.stats(support.names), "tau": tau, "support": support.image_id, "frame": result.frame,
                   "support_source": support.source,
                   "model_version": self.model.digest(version), "seconds": round(time.perf_counter() - t0, 2)}
        if image_id and image_id != support.image_id:
            try:
                self.datastore.update_image_info(image_id, {"prnet": summary})
            except Exception as e:  # the label is still returned; the strategy just lacks this study's score
                warnings.append(f"could not store the propagation statistics in the image info: {e}")
        out = write_result(request, result.native_label, prefix="prnet_")
        body = {"label_names": label_names, "prnet": summary, "geos": result.geos, "warnings": warnings}
        if is_true(request.get("points", "")):
            body["points"] = result.located(support.names)
        return out, body

