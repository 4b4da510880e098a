"""MONAI Label app `oneshot`: one-shot scribble segmentation of 3D CT.

Only wires tasks from configuration (``configs/app.yaml`` + ``--conf`` overrides); the method and
the tasks live in the repository's ``lib/``.
"""

import logging
from typing import Callable, Dict

import monailabel
from monailabel.config import settings
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random

from lib.io import VolumeCache
from lib.settings import app_settings
from lib.tasks.batch_infer import HostAwareBatchInferTask
from lib.tasks.infer_geos import PointsGeoS, ScribblesGeoS
from lib.tasks.infer_segmentation import SegmentationInfer
from lib.tasks.start_label import StartLabels
from lib.tasks.strategy_prnet import PRNetConfidence
from lib.tasks.wiring import model_dir, model_files, open_datastore, prelabel_task, trainers

logger = logging.getLogger(__name__)


class OneShotApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: Dict[str, str]):
        self.settings = app_settings(conf)  # every key checked: a typo is an error naming it and its section
        # experiment tracking only when asked for (MLflow's default file store refuses under mlflow 3)
        settings.MONAI_LABEL_TRACKING_ENABLED = bool(self.settings.tracking) or bool(self.settings.tracking_uri)
        settings.MONAI_LABEL_TRACKING_URI = str(self.settings.tracking_uri or "")
        self.model_dir = model_dir(self.settings, app_dir)
        self.models = model_files(self.model_dir)
        self.studies_open = VolumeCache(size=4)  # the interactive tasks' studies, read ahead (lib.api.prefetch)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name=f"One-shot scribble segmentation (MONAI Label {monailabel.__version__})",
            description="Segment new structures in 3D CT from one study annotated with scribbles",
            version="0.1.0",
        )

    def init_datastore(self) -> Datastore:
        return open_datastore(self.studies, self.settings, cache_path=str(settings.MONAI_LABEL_DATASTORE_CACHE_PATH or ""),
                              extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
                              auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
                              read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY)

    def init_infers(self) -> Dict[str, InferTask]:
        s = self.settings
        segmentation = SegmentationInfer(self.models["segmentation"], s.segmentation.min_component_fraction)
        # what a scribble or a click corrects: the study's final, else its draft, else the UNet's prediction
        start = StartLabels(self.datastore(), s.correction.sources, predict=segmentation.predict_label,
                            probabilities=segmentation.probabilities)
        infers: Dict[str, InferTask] = {
            "scribbles_geos": ScribblesGeoS(s.geos, start_labels=start, correction=s.correction, images=self.studies_open),
            "points_geos": PointsGeoS(s.points.geos(s.geos), point_radius_mm=float(s.points.radius_mm),
                                      max_growth=int(s.points.max_growth),
                                      labels={str(k): int(v) for k, v in dict(s.points.labels).items()},
                                      start_labels=start, correction=s.correction, images=self.studies_open),
            "prnet_prelabel": prelabel_task(s, self.datastore(), self.models),
            "segmentation": segmentation,
        }
        if s.scribbles_baseline:
            from lib.tasks.baseline import BundledHistogramGraphCut

            infers["scribbles_histogram_graphcut"] = BundledHistogramGraphCut()
        return infers

    def init_trainers(self) -> Dict[str, TrainTask]:
        return trainers(self.settings, self.models)

    def init_strategies(self) -> Dict[str, Strategy]:
        return {"prnet_confidence": PRNetConfidence(), "random": Random(), "first": First()}

    def on_init_complete(self):
        super().on_init_complete()
        # the user's first click must not pay import / first-call costs
        for task in self._infers.values():
            if hasattr(task, "warmup"):
                task.warmup()

    def init_batch_infer(self) -> Callable:
        return HostAwareBatchInferTask(multi_gpu=self.settings.batch_multi_gpu, max_workers=self.settings.batch_max_workers,
                                       model_dir=self.model_dir, threads=self.settings.job_threads)
