"""MONAI Label app `oneshot`: one-shot scribble segmentation of 3D CT.

Only wires tasks from configuration (``configs/app.yaml`` + ``--conf`` overrides); the method and
the tasks live in the repository's ``lib/``.
"""

import logging
import os
import sys
from dataclasses import replace
from pathlib import Path
from typing import Callable, Dict

# MONAI Label puts only this folder on sys.path (and unloads `lib*` modules) while loading main.py;
# the repository root holds `lib/`, also for the train / batch-infer subprocesses.
_REPO_ROOT = str(Path(__file__).resolve().parents[2])
if _REPO_ROOT not in sys.path:
    sys.path.insert(0, _REPO_ROOT)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_REPO_ROOT, os.environ.get("PYTHONPATH")) if p)

import monailabel  # noqa: E402
from monailabel.config import settings  # noqa: E402
from monailabel.interfaces.app import MONAILabelApp  # noqa: E402
from monailabel.interfaces.datastore import Datastore  # noqa: E402
from monailabel.interfaces.tasks.infer_v2 import InferTask  # noqa: E402
from monailabel.interfaces.tasks.strategy import Strategy  # noqa: E402
from monailabel.interfaces.tasks.train import TrainTask  # noqa: E402
from monailabel.tasks.activelearning.first import First  # noqa: E402
from monailabel.tasks.activelearning.random import Random  # noqa: E402

from lib.config import app_config  # noqa: E402
from lib.geos import GeoSConfig  # noqa: E402
from lib.prnet.prelabel import pseudo_mask_geos  # noqa: E402
from lib.tasks.batch_infer import HostAwareBatchInferTask  # noqa: E402
from lib.tasks.datastore import AtomicLocalDatastore  # noqa: E402
from lib.tasks.datastore_dicomweb import OneShotDICOMwebDatastore  # noqa: E402
from lib.prnet.propagate import PropagationConfig  # noqa: E402
from lib.prnet.train import PRNetConfig  # noqa: E402
from lib.tasks.infer_geos import PointsGeoS, ScribblesGeoS  # noqa: E402
from lib.tasks.infer_prnet import PRNetPrelabel  # noqa: E402
from lib.tasks.infer_segmentation import SegmentationInfer  # noqa: E402
from lib.segmentation.config import SegConfig  # noqa: E402
from lib.tasks.strategy_prnet import PRNetConfidence  # noqa: E402
from lib.tasks.train_prnet import PRNetTrain  # noqa: E402
from lib.tasks.train_segmentation import SegmentationTrain  # noqa: E402

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
