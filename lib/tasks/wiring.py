"""What the app and the command line build alike from the settings: the datastore, each model's files,
the trainers and the pre-labeling task. ``apps/oneshot/main.py`` (the server) and :mod:`lib.cluster`
(``torchrun``) both call these, so a study, a model file and a draft mean the same on either path.
"""

from __future__ import annotations

import os
from typing import Sequence

from monailabel.interfaces.datastore import Datastore

from lib.prnet import checkpoint as prnet_checkpoint
from lib.segmentation import checkpoint as unet_checkpoint
from lib.settings import AppSettings
from lib.tasks.datastore import AtomicLocalDatastore
from lib.tasks.datastore_dicomweb import OneShotDICOMwebDatastore
from lib.tasks.infer_prnet import PRNetPrelabel
from lib.tasks.models import ModelFiles
from lib.tasks.train_prnet import PRNetTrain
from lib.tasks.train_segmentation import SegmentationTrain


def open_datastore(studies: str, settings: AppSettings, cache_path: str = "", extensions: Sequence[str] = ("*.nii.gz", "*.nii"),
                   auto_reload: bool = False, read_only: bool = False) -> Datastore:
    """The studies: a DICOMweb root (``http(s)://…``; its local cache in ``cache_path`` or
    ``dicomweb.cache_path``) or a local folder of NIfTI files."""
    if studies.startswith(("http://", "https://")):
        dw = settings.dicomweb
        return OneShotDICOMwebDatastore(studies, cache_path=str(dw.cache_path or cache_path or "") or None,
                                        listing_ttl_s=float(dw.listing_ttl_s), timeout_s=float(dw.timeout_s))
    return AtomicLocalDatastore(studies, extensions=list(extensions), auto_reload=auto_reload, read_only=read_only)


def model_dir(settings: AppSettings, app_dir: str) -> str:
    """Where the models are published: ``model_dir`` of the settings, else ``<app_dir>/model``."""
    return str(settings.model_dir or os.path.join(app_dir, "model"))


def model_files(folder: str) -> dict[str, ModelFiles]:
    """One owner of each model's files (``prnet``, ``segmentation``), shared by its infer and its train task."""
    return {"prnet": ModelFiles(folder, prnet_checkpoint.NAME), "segmentation": ModelFiles(folder, unet_checkpoint.NAME)}


def trainers(settings: AppSettings, models: dict[str, ModelFiles]) -> dict:
    return {"prnet": PRNetTrain(models["prnet"], settings.prnet, settings.window, settings.train_batch,
                                settings.job_threads),
            "segmentation": SegmentationTrain(models["segmentation"], settings.segmentation, settings.window,
                                              settings.train_batch, settings.job_threads)}


def prelabel_task(settings: AppSettings, datastore: Datastore, models: dict[str, ModelFiles]) -> PRNetPrelabel:
    return PRNetPrelabel(datastore, models["prnet"], settings.pseudo_mask_geos, settings.propagation, settings.prelabel,
                         support_tag=str(settings.support_tag))
