"""``POST /infer/{model}``: inference on a datastore image, off the event loop, bounded in work and time.

MONAI Label 0.8.5 runs the task on the server's event loop (every other request waits behind it), takes
any server path as ``image``, and answers malformed ``params`` with a 500. Here:

- ``image`` is a datastore id (or ``session_id`` a MONAI Label session's); ``params`` a JSON object;
  ``label_tag`` (with ``save_label``) a valid tag; an unknown model is a 404 naming the models;
- the task runs in a bounded pool of worker threads (:class:`WorkerPool`): the event loop stays free
  for ``/info``, the datastore and other clients; a request that finds the pool and its queue full, or
  whose result is not ready within the time limit, is answered 503 with the reason;
- the answer is MONAI Label's (multipart ``params`` + ``image``, or one of them with ``output``).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, Optional

from fastapi import APIRouter, BackgroundTasks, Depends, File, Form, UploadFile
from fastapi.concurrency import run_in_threadpool
from monailabel.config import RBAC_USER, settings
from monailabel.datastore.utils.convert import binary_to_image
from monailabel.endpoints import infer as ml_infer
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.utils.app import app_instance
from monailabel.utils.others.generic import remove_file

from lib.api.datastore import known_image
from lib.api.uploads import received
from lib.config import is_true
from lib.tasks.errors import ClientError
from lib.tasks.ids import check_name
from lib.tasks.params import parse_object

logger = logging.getLogger(__name__)

# request keys the server sets itself: a client's would name server paths (``label``: "/etc/...")
RESERVED = frozenset({"image", "label", "file", "session", "model", "description", "_image_id"})

router = APIRouter(prefix="/infer", tags=["Infer"], responses={404: {"description": "Not found"}})


class WorkerPool:
    """At most ``workers`` computations at once and ``queue`` more waiting; each answered within ``timeout_s``.

    A computation that outlives its time limit cannot be interrupted (the task's C++ and torch code would
    be left in an undefined state); its thread finishes and its result is dropped, and it keeps its place
    in the count until then, so an overload is refused instead of piling up.
    """

    def __init__(self, workers: int, queue: int, timeout_s: float):
        self.workers, self.queue, self.timeout_s = int(workers), int(queue), float(timeout_s)
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="infer")
        self._busy = 0
        self._lock = threading.Lock()

    def _done(self, _future) -> None:
        with self._lock:
            self._busy -= 1

    async def run(self, fn: Callable[..., Any], *args: Any, timeout_s: float | None = None) -> Any:
        """``fn(*args)`` in a worker thread; 503 when the pool is full or the result is late."""
        with self._lock:
            if self._busy >= self.workers + self.queue:
                raise ClientError(f"the server is busy: {self._busy} inference requests are running or waiting "
                                  f"(at most {self.workers + self.queue}); retry in a moment", status_code=503)
            self._busy += 1
        future = self._executor.submit(fn, *args)
        future.add_done_callback(self._done)
        limit = self.timeout_s if timeout_s is None else timeout_s
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), timeout=limit)
        except asyncio.TimeoutError:
            raise ClientError(f"inference took longer than the server's limit of {limit:g} s (server.infer_timeout_s); "
                              "draw a smaller ROI or lower 'iterations'", status_code=503) from None


_pool: WorkerPool | None = None


def pool() -> WorkerPool:
    """The server's inference pool, sized from the app's ``server`` configuration section."""
    global _pool
    if _pool is None:
        server = app_instance().settings.server
        _pool = WorkerPool(int(server.infer_workers), int(server.infer_queue), float(server.infer_timeout_s))
    return _pool


def _compute(task: Callable, request: Dict[str, Any], image_id: str | None, tag: str | None) -> Dict[str, Any]:
    """Run ``task`` on ``request`` (worker thread); save the result as label ``tag`` of ``image_id`` when asked."""
    t0 = time.perf_counter()
    result_file, result_json = task(request)
    label_id = None
    if tag and image_id and result_file:
        label_id = app_instance().datastore().save_label(image_id, result_file, tag,
                                                         {"model": request["model"], "params": result_json})
    logger.info(f"infer {request['model']} on {image_id or 'session'}: {time.perf_counter() - t0:.2f} s")
    return {"label": label_id or result_file, "tag": tag, "file": result_file, "params": result_json}


async def run_inference(background_tasks: BackgroundTasks, model: str, image: str, session_id: str, params: str,
                        label: Optional[UploadFile], output: Optional[ml_infer.ResultType]):
    instance = app_instance()
    check_name(model, "model")
    task = instance._infers.get(model)
    if task is None:
        raise ClientError(f"unknown model '{model}'; this server's models: {sorted(instance._infers)}", status_code=404)
    if output == ml_infer.ResultType.dicom_seg:
        raise ClientError("output 'dicom_seg' is not offered; ask for 'image', 'json' or 'all'")
    given = parse_object(params)
    request: Dict[str, Any] = {k: v for k, v in given.items() if k not in RESERVED}
    request.update(model=model, description=task.description)
    image_id: str | None = None
    if session_id:
        check_name(session_id, "session id")
        session = instance.sessions().get_session(session_id) if instance.sessions() else None
        if not session:
            raise ClientError(f"session '{session_id}' not found (expired or never created)", status_code=404)
        request["image"], request["session"] = session.image, session.to_json()
    elif image:
        image_id = known_image(image)
        # off the event loop: on DICOMweb this fetches and converts the series the first time
        request["image"] = await run_in_threadpool(instance.datastore().get_image_uri, image_id)
        request["_image_id"] = image_id  # the tasks look up the study's labels by it (a correction's start)
    else:
        raise ClientError("no image: give a datastore image id ('image') or a session id ('session_id')")
    tag = None
    if is_true(request.get("save_label", False)) and image_id:
        tag = check_name(request.get("label_tag") or "original", "label tag")

    async def go() -> Dict[str, Any]:
        return await pool().run(_compute, task, request, image_id, tag)

    if label is not None:
        with received(label, extra=(".bin",)) as path:
            converted = ""
            if path.endswith(".bin"):  # OHIF's raw scribbles buffer, on the image's grid
                try:
                    converted = path = binary_to_image(request["image"], path)
                except Exception as e:  # noqa: BLE001
                    raise ClientError(f"the .bin label does not fit the image's grid ({str(e)[:120]})", status_code=422) from None
            request["label"] = path
            try:
                result = await go()
            finally:
                remove_file(converted)
    else:
        result = await go()
    return ml_infer.send_response(instance.datastore(), result, output, background_tasks)


@router.post("/{model}", summary=f"{RBAC_USER}Run Inference for supported model")
async def api_run_inference(
    background_tasks: BackgroundTasks,
    model: str,
    image: str = "",
    session_id: str = "",
    params: str = Form("{}"),
    label: UploadFile = File(None),
    output: Optional[ml_infer.ResultType] = None,
    user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER)),
):
    return await run_inference(background_tasks, model, image, session_id, params, label, output)
