"""The label an interactive correction starts from (:mod:`lib.correction`).

Neither Slicer nor OHIF sends the draft with a scribble or click request, so the server looks it up by
the request's image id, in the order of ``correction.sources``: datastore label tags (``final``, the
annotator's saved label; ``original``, PRNet's draft), then ``segmentation``, the published UNet's
prediction. The local folder and the DICOMweb datastore answer the same calls (a ``final`` on DICOMweb
is its DICOM-SEG, fetched and converted once).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from monailabel.interfaces.datastore import Datastore

from lib.correction import ClassPrior
from lib.io import VolumeCache
from lib.segmentation.predict import StudyProbabilities
from lib.tasks.errors import ClientError

logger = logging.getLogger(__name__)

MODEL_SOURCE = "segmentation"


@dataclass
class StartLabel:
    array: np.ndarray  # (I, J, K) integer class ids on the study's own grid; read-only (a cached file's)
    names: dict[str, int]  # {class name: id}; empty when the label did not record them
    source: str  # the label tag, or "segmentation"


def label_names(info: Mapping[str, Any]) -> dict[str, int]:
    """``{name: id}`` from a datastore label's info: ``label_names`` (as the tasks and the workflow save
    them, also under ``params``) or Slicer's ``label_info`` list."""
    for where in (info, info.get("params") if isinstance(info.get("params"), Mapping) else {}):
        names = where.get("label_names")
        if isinstance(names, Mapping):
            return {str(k): int(v) for k, v in names.items() if str(v).lstrip("-").isdigit()}
        items = where.get("label_info")
        if isinstance(items, list):
            out = {}
            for d in items:  # Slicer: {"name", "id"}; MONAI Label's DICOM-SEG convention: {"name", "idx"}
                i = d.get("id", d.get("idx")) if isinstance(d, Mapping) else None
                if i is not None and "name" in d and not str(d["name"]).endswith("_scribbles"):
                    out[str(d["name"])] = int(i)
            return out
    return {}


class StartLabels:
    """Finds the starting label of a study: ``find(image_id, image_path, shape)``.

    ``predict``: the published UNet as a callable ``image path → (label (I, J, K), {name: id})`` that raises
    :class:`ClientError` while no model is published (the ``segmentation`` source is skipped then);
    ``probabilities``: ``image path → StudyProbabilities`` of the same model, None while none is published
    (a correction's prior: :func:`model_prior`).
    """

    def __init__(self, datastore: Datastore | None, sources: Sequence[str],
                 predict: Callable[[str], tuple[np.ndarray, Mapping[str, int]]] | None = None,
                 probabilities: Callable[[str], StudyProbabilities | None] | None = None):
        self.datastore, self.sources, self.predict = datastore, [str(s) for s in sources], predict
        self.probabilities = probabilities
        # label files read once while unchanged (keyed by path, size and mtime): every stroke of a correction asks
        self._files = VolumeCache(size=4)

    def find(self, image_id: str | None, image_path: str, shape: Sequence[int], only: str | None = None) -> StartLabel | None:
        """The first source (or only the source ``only``) that has a label of ``shape`` for the study."""
        for source in [only] if only else self.sources:
            try:
                found = self._from(source, image_id, image_path)
            except ClientError:
                found = None
            except Exception as e:  # a broken label file must not break the interaction: from scratch instead
                logger.warning(f"starting label '{source}' of {image_id}: {e}")
                found = None
            if found is not None and tuple(found.array.shape) == tuple(shape):
                return found
        return None

    def _from(self, source: str, image_id: str | None, image_path: str) -> StartLabel | None:
        if source == MODEL_SOURCE:
            if self.predict is None:
                return None
            array, names = self.predict(image_path)
            return StartLabel(np.array(array), dict(names), source)  # a copy: the model's answer is cached
        if self.datastore is None or not image_id:
            return None
        uri = self.datastore.get_label_uri(image_id, source)
        if not uri:
            return None
        array = self._files.get(uri).array
        if not np.issubdtype(array.dtype, np.integer):
            array = np.rint(array).astype(np.int32)
        array.flags.writeable = False  # shared by the rounds of a correction: a correction works on a copy
        return StartLabel(array, label_names(self.datastore.get_label_info(image_id, source)), source)


def model_prior(probs: StudyProbabilities, names: Mapping[str, int]) -> tuple[ClassPrior | None, list[str]]:
    """The model's log-posteriors as a correction's :data:`lib.correction.ClassPrior` in the ids of a label whose
    classes are ``names`` ``{name: id}`` (matched by name; background is 0 in both), and the names it covers; None
    when the model knows none of them."""
    known = sorted(n for n in names if 0 < int(probs.names.get(n, -1)) < probs.probs.shape[0])
    if not known:
        return None, []
    ids = {0: 0, **{int(names[n]): int(probs.names[n]) for n in known}}  # label id -> model channel

    def prior(box: tuple[slice, slice, slice]) -> dict[int, np.ndarray]:
        return dict(zip(ids, probs.log_probs(box, list(ids.values()))))

    return prior, known
