"""MONAI Label app `oneshot`: one-shot scribble segmentation of 3D CT.

Only wires tasks from configuration (``configs/app.yaml`` + ``--conf`` overrides); the method and
the tasks live in the repository's ``lib/``.
"""

import logging
import os
from dataclasses import replace
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

from lib.config import app_config
from lib.geos import GeoSConfig
from lib.prnet.prelabel import pseudo_mask_geos
from lib.prnet.propagate import PropagationConfig
from lib.prnet.train import PRNetConfig
from lib.segmentation.config import SegConfig
from lib.tasks.batch_infer import HostAwareBatchInferTask
from lib.tasks.datastore import AtomicLocalDatastore
from lib.tasks.datastore_dicomweb import OneShotDICOMwebDatastore
from lib.tasks.infer_geos import PointsGeoS, ScribblesGeoS
from lib.tasks.infer_prnet import PRNetPrelabel
from lib.tasks.infer_segmentation import SegmentationInfer
from lib.tasks.strategy_prnet import PRNetConfidence
from lib.tasks.train_prnet import PRNetTrain
from lib.tasks.train_segmentation import SegmentationTrain

logger = logging.getLogger(__name__)


class OneShotApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: Dict[str, str]):
        self.cfg = app_config(conf)
        # experiment tracking only when asked for (MLflow's default file store refuses under mlflow 3)
        tracking_uri = str(self.cfg.get("tracking_uri") or "")
        settings.MONAI_LABEL_TRACKING_ENABLED = bool(self.cfg.get("tracking")) or bool(tracking_uri)
        settings.MONAI_LABEL_TRACKING_URI = tracking_uri
        self.model_dir = str(self.cfg.get("model_dir") or os.path.join(app_dir, "model"))
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name=f"One-shot scribble segmentation (MONAI Label {monailabel.__version__})",
            description="Segment new structures in 3D CT from one study annotated with scribbles",
            version="0.1.0",
        )

    def init_datastore(self) -> Datastore:
        if self.studies.startswith(("http://", "https://")):
            dw = self.cfg["dicomweb"]
            return OneShotDICOMwebDatastore(
                self.studies,
                cache_path=str(dw.get("cache_path") or settings.MONAI_LABEL_DATASTORE_CACHE_PATH or "") or None,
                listing_ttl_s=float(dw["listing_ttl_s"]),
                timeout_s=float(dw["timeout_s"]),
            )
        return AtomicLocalDatastore(
            self.studies,
            extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def init_infers(self) -> Dict[str, InferTask]:
        geos = GeoSConfig.from_dict(self.cfg["geos"])
        points = self.cfg["points"]
        p = self.cfg["prnet"]
        infers: Dict[str, InferTask] = {
            "scribbles_geos": ScribblesGeoS(geos),
            "points_geos": PointsGeoS(
                replace(geos, margin_mm=float(points["margin_mm"]), border_similarity_sd=float(points["border_similarity_sd"]),
                        intensity_weight=float(points["intensity_weight"]), working_voxels=int(points["working_voxels"])),
                point_radius_mm=float(points["radius_mm"]),
                max_growth=int(points.get("max_growth", 3)),
                labels={str(k): int(v) for k, v in (points.get("labels") or {}).items()},
            ),
            "prnet_prelabel": PRNetPrelabel(
                self.datastore(), os.path.join(self.model_dir, "prnet.pt"), pseudo_mask_geos(self.cfg), PropagationConfig.from_dict(p),
                support_tag=str(self.cfg["support_tag"]), stride=int(p["stride"]),
                class_strides={str(k): int(v) for k, v in (p.get("class_strides") or {}).items()},
            ),
            "segmentation": SegmentationInfer(os.path.join(self.model_dir, "segmentation.pt"),
                                              self.cfg["segmentation"]["min_component_fraction"]),
        }
        if self.cfg.get("scribbles_baseline"):
            from lib.tasks.baseline import BundledHistogramGraphCut

            infers["scribbles_histogram_graphcut"] = BundledHistogramGraphCut()
        return infers

    def init_trainers(self) -> Dict[str, TrainTask]:
        p = self.cfg["prnet"]
        geos = GeoSConfig.from_dict(self.cfg["geos"])
        return {
            "prnet": PRNetTrain(
                self.model_dir, PRNetConfig.from_dict(p), (geos.window_hu, geos.window_out),
                max_steps=int(p["max_steps"]), checkpoint_every=int(p["checkpoint_every"]), fc_hidden=int(p["fc_hidden"]),
            ),
            "segmentation": SegmentationTrain(self.model_dir, SegConfig.from_dict(self.cfg["segmentation"]),
                                              (geos.window_hu, geos.window_out)),
        }

    def init_strategies(self) -> Dict[str, Strategy]:
        return {"prnet_confidence": PRNetConfidence(), "random": Random(), "first": First()}

    def on_init_complete(self):
        super().on_init_complete()
        # the user's first click must not pay import / first-call costs
        for task in self._infers.values():
            if hasattr(task, "warmup"):
                task.warmup()

    def init_batch_infer(self) -> Callable:
        return HostAwareBatchInferTask(
            multi_gpu=self.cfg.get("batch_multi_gpu", "auto"), max_workers=self.cfg.get("batch_max_workers", 1),
            model_dir=self.model_dir,
        )
