"""The app's settings: ``configs/app.yaml`` with ``--conf`` overrides, read once into the dataclasses that
consume each section, with one policy: a key that no consumer reads is an error naming it and its section.

Sections and their consumers::

    (top level)         AppSettings' own fields (tracking, model_dir, support_tag, ...)
    server              lib.api.access.ServerConfig
    dicomweb            lib.tasks.datastore_dicomweb.DICOMwebConfig
    geos                lib.geos.GeoSConfig                      (scribbles_geos)
    points              lib.tasks.infer_geos.PointsConfig        (points_geos: a click's GeoS settings)
    correction          lib.correction.CorrectionConfig          (both interactive tasks: correcting a label)
    prnet.train         lib.prnet.train.PRNetConfig              (trainer prnet)
    prnet.propagation   lib.prnet.propagate.PropagationConfig    (Eq. 4, DFD)
    prnet.prelabel      lib.prnet.prelabel.PrelabelConfig        (infer prnet_prelabel: strides, pseudo masks' GeoS)
    segmentation        lib.segmentation.config.SegConfig        (trainer and infer segmentation)

MONAI Label's own ``--conf`` keys that its base app reads (``server_mode``) pass as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from lib.api.access import ServerConfig
from lib.config import ConfigError, app_config, check_keys, from_section, split_section
from lib.correction import CorrectionConfig
from lib.distributed import BATCH_MODES
from lib.geos import GeoSConfig
from lib.prnet.prelabel import PrelabelConfig
from lib.prnet.propagate import PropagationConfig
from lib.prnet.train import PRNetConfig
from lib.segmentation.config import SegConfig
from lib.tasks.datastore_dicomweb import DICOMwebConfig
from lib.tasks.infer_geos import PointsConfig
from lib.threads import check_job_threads

MONAILABEL_KEYS = ("server_mode",)  # read by monailabel.interfaces.app.MONAILabelApp itself


@dataclass(frozen=True)
class AppSettings:
    """Every section of the app's configuration, typed and checked (see the module's docstring)."""

    server: ServerConfig
    dicomweb: DICOMwebConfig
    geos: GeoSConfig
    points: PointsConfig
    correction: CorrectionConfig
    prnet: PRNetConfig
    propagation: PropagationConfig
    prelabel: PrelabelConfig
    segmentation: SegConfig
    tracking: bool = False  # MLflow experiment tracking (off unless a tracking URI is set)
    tracking_uri: str = ""
    batch_multi_gpu: str = "auto"  # auto | true | false
    batch_max_workers: int = 0  # 0: one per GPU on a multi-GPU host, else 1
    train_batch: str = "per_process"  # data-parallel training: per_process | global (lib.distributed)
    job_threads: int | str = "auto"  # torch threads of a training / batch job on a CPU host (lib.threads)
    model_dir: str = ""  # where trained models are published; "" = <app folder>/model
    support_tag: str = "scribbles"  # label tag of the one-shot support annotation
    scribbles_baseline: bool = False  # also serve MONAI Label's HistogramBasedGraphCut
    server_mode: Any = None  # MONAI Label's

    @property
    def pseudo_mask_geos(self) -> GeoSConfig:
        """GeoS of PRNet's pseudo masks: ``geos`` with the keys of ``prnet.prelabel.geos``."""
        return self.prelabel.pseudo_mask_geos(self.geos)

    @property
    def window(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The CT intensity window (HU knots, [0, 1] values) both networks train with (``geos.window_*``)."""
        return tuple(self.geos.window_hu), tuple(self.geos.window_out)


SECTIONS = ("server", "dicomweb", "geos", "points", "correction", "prnet", "segmentation")


def read_settings(cfg: Mapping[str, Any]) -> AppSettings:
    """:class:`AppSettings` of a merged configuration (:func:`lib.config.app_config`).

    Raises:
        ConfigError: for a key that nothing reads, anywhere, or a value its consumer refuses.
    """
    top = {k: v for k, v in cfg.items() if k not in SECTIONS}
    known_top = set(AppSettings.__dataclass_fields__) - set(SECTIONS) - {"propagation", "prelabel"}
    check_keys(top, known_top, "the configuration's top level")
    prnet = cfg.get("prnet") or {}
    if not isinstance(prnet, Mapping):
        raise ConfigError(f"'prnet' must be a section with train, propagation and prelabel, got {prnet!r}")
    check_keys(prnet, ("train", "propagation", "prelabel"), "prnet")
    (seg,) = split_section(cfg.get("segmentation"), "segmentation", SegConfig)
    settings = AppSettings(
        server=from_section(ServerConfig, cfg.get("server"), "server"),
        dicomweb=from_section(DICOMwebConfig, cfg.get("dicomweb"), "dicomweb"),
        geos=from_section(GeoSConfig, cfg.get("geos"), "geos"),
        points=from_section(PointsConfig, cfg.get("points"), "points"),
        correction=from_section(CorrectionConfig, cfg.get("correction"), "correction"),
        prnet=from_section(PRNetConfig, prnet.get("train"), "prnet.train"),
        propagation=from_section(PropagationConfig, prnet.get("propagation"), "prnet.propagation"),
        prelabel=from_section(PrelabelConfig, prnet.get("prelabel"), "prnet.prelabel"),
        segmentation=seg,
        **{k: v for k, v in top.items()},
    )
    if settings.train_batch not in BATCH_MODES:
        raise ConfigError(f"train_batch must be one of {', '.join(BATCH_MODES)}, got {settings.train_batch!r}")
    check_job_threads(settings.job_threads)
    settings.pseudo_mask_geos  # noqa: B018 - its keys are checked now, not at the first pre-label
    return settings


def app_settings(overrides: Mapping[str, Any] | None = None) -> AppSettings:
    """The app's settings: ``configs/app.yaml`` with ``overrides`` (``--conf``) applied, checked."""
    return read_settings(app_config(overrides))
