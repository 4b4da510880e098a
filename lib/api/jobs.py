"""Training, batch inference, scoring, active learning and model files: names checked before anything runs.

MONAI Label 0.8.5 answers ``POST /train/{model}`` (and ``/batch/infer``, ``/scoring``) with 200 and starts a
background job whatever the request holds; a bad request only surfaces as a failed job in the log, and
``run_sync=true`` blocks the server's event loop for the whole job. Here an unknown model, trainer,
strategy or scoring method is a 404 naming the ones that exist; the request's params must be a JSON
object of finite numbers; a trainer with a ``validate(params, datastore)`` method checks the request
first (4xx with what to fix); synchronous runs wait in a worker thread, so the server keeps serving.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Optional

from fastapi import APIRouter, Depends, HTTPException, UploadFile
from fastapi.concurrency import run_in_threadpool
from monailabel.config import RBAC_ADMIN, RBAC_ANNOTATOR, RBAC_USER, settings
from monailabel.endpoints import activelearning as ml_activelearning
from monailabel.endpoints import batch_infer as ml_batch
from monailabel.endpoints import model as ml_model
from monailabel.endpoints import scoring as ml_scoring
from monailabel.endpoints import train as ml_train
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.datastore import DefaultLabelTag
from monailabel.interfaces.tasks.batch_infer import BatchInferImageType
from monailabel.interfaces.utils.app import app_instance

from lib.api.prefetch import prefetch
from lib.config import ConfigError, check_keys
from lib.tasks.errors import ClientError
from lib.tasks.ids import check_name
from lib.tasks.jobs import running_job
from lib.tasks.params import check_object, number

USER = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))
ANNOTATOR = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR))
ADMIN = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ADMIN))

train_router = APIRouter(prefix="/train", tags=["Train"])
batch_router = APIRouter(prefix="/batch", tags=["Infer"])
scoring_router = APIRouter(prefix="/scoring", tags=["Scoring"])
activelearning_router = APIRouter(prefix="/activelearning", tags=["ActiveLearning"])
model_router = APIRouter(prefix="/model", tags=["Model"])


def known(name: Any, names: Iterable[str], what: str) -> str:
    """``name`` if it is one of ``names``; else 400 (not a valid name) or 404 listing ``names``."""
    check_name(name, what)
    names = sorted(names)
    if name not in names:
        raise ClientError(f"unknown {what} '{name}'; this server's: {names or 'none'}", status_code=404)
    return name


# --- training ----------------------------------------------------------------------------------------
#: keys of the protocol itself that a train request may carry whatever the trainer: MONAI Label's client
#: (and 3D Slicer through it) adds ``client_id``; MONAI Label's endpoint adds ``model``
PROTOCOL_KEYS = frozenset({"client_id", "model"})


def validate_training(model: str, params: Optional[dict]) -> dict:
    instance = app_instance()
    known(model, instance._trainers, "trainer")
    params = check_object(params)
    trainer = instance._trainers[model]
    if hasattr(trainer, "request_keys"):  # a misspelt key is an error, not a setting silently ignored
        try:
            own = {k: v for k, v in params.items() if k not in PROTOCOL_KEYS}
            check_keys(own, trainer.request_keys(), f"the request to trainer '{model}'")
        except ConfigError as e:
            raise ClientError(str(e)) from None
    if hasattr(trainer, "validate"):
        trainer.validate(params, instance.datastore())  # raises a ClientError (4xx) on bad input
    return params


def _model_dir() -> str:
    return str(getattr(app_instance(), "model_dir", "") or "")


def job_status(kind: str, status: Callable[[bool, bool], Any], all: bool, check_if_running: bool) -> Any:
    """MONAI Label's status of its ``kind`` jobs; a job that an earlier server process started (it holds the
    job lock, :mod:`lib.tasks.jobs`) is reported as running too."""
    holder = running_job(_model_dir(), kind) if _model_dir() else None
    try:
        result = status(all, check_if_running)
    except HTTPException:
        if holder is None:
            raise
        result = None
    if holder is not None and not (isinstance(result, dict) and result.get("status") == "RUNNING"):
        earlier = {"status": "RUNNING", "pid": holder.get("pid"), "what": holder.get("what"), "start_ts": holder.get("started"),
                   "details": ["started by an earlier server process"]}
        return [*(result if isinstance(result, list) else []), earlier] if all else earlier
    return result


def refuse_if_running(kind: str) -> None:
    """409 when a ``kind`` job holds its lock (also one started by an earlier server process)."""
    holder = running_job(_model_dir(), kind) if _model_dir() else None
    if holder is not None:
        raise ClientError(f"a {kind} job is running (PID {holder.get('pid')}, {holder.get('what')}, since "
                          f"{holder.get('started')}); wait for it, or stop it first", status_code=409)


@train_router.get("/", summary=f"{RBAC_USER}Get Status of Training Task")
async def api_train_status(all: bool = False, check_if_running: bool = False, user: User = USER):
    return job_status("train", ml_train.status, all, check_if_running)


@train_router.post("/{model}", summary=f"{RBAC_ADMIN} Run Training Task for specific model")
async def api_train_model(model: str, params: Optional[dict] = None, run_sync: Optional[bool] = False,
                          enqueue: Optional[bool] = False, user: User = ADMIN):
    params = await run_in_threadpool(validate_training, model, params)
    if not enqueue:
        refuse_if_running("train")
    return await run_in_threadpool(ml_train.run_model, model, params, run_sync, enqueue)


@train_router.delete("/", summary=f"{RBAC_ADMIN}Stop Training Task")
async def api_train_stop(user: User = ADMIN):
    return await run_in_threadpool(ml_train.stop)


# --- batch inference ---------------------------------------------------------------------------------
BATCH_DEFAULTS: Dict[str, Any] = {"logging": "WARNING", "save_label": True, "label_tag": DefaultLabelTag.ORIGINAL.value,
                                  "max_workers": 1, "max_batch_size": 0}


def validate_batch(model: str, params: Optional[dict]) -> dict:
    known(model, app_instance()._infers, "model")
    params = {**BATCH_DEFAULTS, **check_object(params)}
    check_name(params.get("label_tag") or DefaultLabelTag.ORIGINAL.value, "label tag")
    number(params, "max_workers", 1, 1, 64, integer=True)
    number(params, "max_batch_size", 0, 0, 1_000_000, integer=True)
    return params


@batch_router.get("/infer", summary=f"{RBAC_USER}Get Status of Batch Inference Task")
async def api_batch_status(all: bool = False, check_if_running: bool = False, user: User = USER):
    return job_status("batch", ml_batch.status, all, check_if_running)


@batch_router.post("/infer/{model}", summary=f"{RBAC_ADMIN}Run Batch Inference Task")
async def api_batch_run(model: str, images: Optional[BatchInferImageType] = BatchInferImageType.IMAGES_ALL,
                        params: Optional[dict] = None, run_sync: Optional[bool] = False, user: User = ADMIN):
    params = validate_batch(model, params)
    refuse_if_running("batch")
    return await run_in_threadpool(ml_batch.run, model, images, params, run_sync)


@batch_router.delete("/infer", summary=f"{RBAC_ADMIN}Stop Batch Inference Task")
async def api_batch_stop(user: User = ADMIN):
    return await run_in_threadpool(ml_batch.stop)


# --- scoring ----------------------------------------------------------------------------------------
@scoring_router.get("/", summary=f"{RBAC_USER}Get Status of Scoring Task")
async def api_scoring_status(all: bool = False, check_if_running: bool = False, user: User = USER):
    return ml_scoring.status(all, check_if_running)


@scoring_router.post("/{method}", summary=f"{RBAC_ANNOTATOR}Run Scoring Task for specific method")
async def api_scoring_run(method: str, params: Optional[dict] = None, run_sync: Optional[bool] = False, user: User = ANNOTATOR):
    known(method, app_instance()._scoring_methods, "scoring method")
    params = check_object(params)
    return await run_in_threadpool(ml_scoring.run_method, method, params, run_sync)


@scoring_router.delete("/", summary=f"{RBAC_ANNOTATOR}Stop Scoring Task")
async def api_scoring_stop(user: User = ANNOTATOR):
    return await run_in_threadpool(ml_scoring.stop)


# --- active learning ---------------------------------------------------------------------------------
@activelearning_router.post("/{strategy}", summary=f"{RBAC_USER}Run Active Learning strategy to get next sample")
async def api_sample(strategy: str, params: Optional[dict] = None, user: User = USER):
    known(strategy, app_instance()._strategies, "strategy")
    params = check_object(params)
    sample = await run_in_threadpool(ml_activelearning.sample, strategy, params, user.username)
    prefetch(sample.get("id") if isinstance(sample, dict) else None)  # read while the viewer loads it
    return sample


# --- model files -------------------------------------------------------------------------------------
def _known_model(model: str) -> str:
    instance = app_instance()
    return known(model, set(instance._infers) | set(instance._trainers), "model")


@model_router.get("/{model}", summary=f"{RBAC_ADMIN}Download Latest Model Weights")
async def api_download_model(model: str, user: User = ADMIN):
    return ml_model.download_model(_known_model(model))


@model_router.get("/info/{model}", summary=f"{RBAC_ADMIN}Get CheckSum/Details for the Latest Model File")
async def api_model_info(model: str, user: User = ADMIN):
    return ml_model.model_info(_known_model(model))


@model_router.put("/{model}", summary=f"{RBAC_ADMIN}Upload/Update Model File")
async def api_update_model(model: str, file: UploadFile, user: User = ADMIN):
    _known_model(model)
    raise ClientError(f"uploading weights for '{model}' is not offered (a checkpoint records its training set and "
                      f"normalisation); train it on this server with POST /train/{model}", status_code=405)


@model_router.delete("/{model}", summary=f"{RBAC_ADMIN}Delete Model File")
async def api_delete_model(model: str, user: User = ADMIN):
    return ml_model.delete_model(_known_model(model))
