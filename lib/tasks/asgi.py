"""The app's ASGI entry point: MONAI Label's FastAPI app with request validation in front of training.

``POST /train/{model}`` starts training in a background process and answers 200 at once, so a bad
request (unknown ``noise_strategy``, nothing to train on) would only surface as a failed task in the
log. Here a trainer that has a ``validate(params, datastore)`` method checks the request first and
answers 4xx with what to fix; a valid request goes on to MONAI Label's own handler.

It replaces MONAI Label's DICOMweb proxy for OHIF (see :func:`proxy_dicom`), and it serves MONAI
Label's bundled OHIF viewer correctly: monailabel 0.8.5 maps ``/ohif/a/b.js`` to
the file ``a:b.js`` (``os.pathsep`` in place of ``os.sep``), so every nested asset (``/ohif/assets/...``,
the DICOM image decoders' WebAssembly) was answered with ``index.html`` and the viewer never started.
The viewer's MONAI Label panel also defaults to the server ``<host>:8000``; served from here, it
defaults to this server (the origin the page came from), unless the user already chose one.

Start the server with ``--uvicorn_app lib.tasks.asgi:app`` (``scripts/start.sh`` and ``lib/server.py`` do).
"""

from __future__ import annotations

import logging
import mimetypes
import os
from typing import Optional

import requests
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from monailabel.app import app
from monailabel.config import RBAC_ADMIN, settings
from monailabel.endpoints import ohif as ml_ohif
from monailabel.endpoints import train as ml_train
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.utils.app import app_instance

__all__ = ["app"]

logger = logging.getLogger(__name__)


async def train_model(
    model: str,
    params: Optional[dict] = None,
    run_sync: Optional[bool] = False,
    enqueue: Optional[bool] = False,
    user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ADMIN)),
):
    instance = app_instance()
    trainer = instance._trainers.get(model)
    if trainer is not None and hasattr(trainer, "validate"):
        trainer.validate(params or {}, instance.datastore())  # raises an HTTPException (4xx) on bad input
    return ml_train.run_model(model, params, run_sync, enqueue)


OHIF_DIR = os.path.join(os.path.dirname(os.path.realpath(ml_ohif.__file__)), "static", "ohif")
_MEDIA_TYPES = {".wasm": "application/wasm", ".js": "text/javascript", ".mjs": "text/javascript",
                ".css": "text/css", ".json": "application/json", ".svg": "image/svg+xml", ".html": "text/html"}


def ohif_file(path: str) -> str:
    """The bundled OHIF file for URL path ``path`` (relative to ``/ohif/``); ``index.html`` for the viewer's
    own routes (``/ohif/viewer?...``) and for anything that would leave the OHIF folder."""
    root = os.path.realpath(OHIF_DIR)
    file = os.path.realpath(os.path.join(root, path.lstrip("/")))
    if not file.startswith(root + os.sep) or not os.path.isfile(file):
        file = os.path.join(root, "index.html")
    return file


# runs before OHIF's scripts: the panel reads cookie MONAILABEL_SERVER_URL (JavaScript escape()d)
_DEFAULT_SERVER_SCRIPT = (
    "<script>if(!/(^|;) ?MONAILABEL_SERVER_URL=[^;]+/.test(document.cookie)){"
    "document.cookie='MONAILABEL_SERVER_URL='+escape(location.origin+'/')+'; path=/';}</script>"
)


def ohif_index_html() -> str:
    """OHIF's ``index.html`` with the panel's server defaulting to the page's origin."""
    with open(os.path.join(OHIF_DIR, "index.html"), encoding="utf-8") as f:
        html = f.read()
    return html.replace("<head>", "<head>" + _DEFAULT_SERVER_SCRIPT, 1)


async def get_ohif(path: str, user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))):
    file = ohif_file(path)
    if os.path.basename(file) == "index.html":
        return HTMLResponse(ohif_index_html())
    ext = os.path.splitext(file)[1].lower()
    return FileResponse(file, media_type=_MEDIA_TYPES.get(ext) or mimetypes.guess_type(file)[0] or "application/octet-stream")


async def upstream_unreachable(request: Request, exc: Exception) -> JSONResponse:
    """A server we depend on (the DICOMweb PACS, also behind OHIF's ``/proxy/dicom``) did not answer: 503."""
    logger.error(f"{request.method} {request.url.path}: upstream unreachable: {exc}")
    studies = settings.MONAI_LABEL_STUDIES
    return JSONResponse(status_code=503, content={"detail": (
        f"the DICOMweb server {studies} is unreachable ({type(exc).__name__}); check that it is running "
        "(python -m lib.dicomweb.orthanc start) and that --studies points at its /dicom-web root")})


_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-encoding", "content-length", "te",
               "trailer", "upgrade", "proxy-authenticate", "proxy-authorization"}
_PREFIXES = {"wado": "MONAI_LABEL_WADO_PREFIX", "qido": "MONAI_LABEL_QIDO_PREFIX", "stow": "MONAI_LABEL_STOW_PREFIX"}


async def proxy_dicom(request: Request, path: str, user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))):
    """OHIF's DICOMweb requests (``/proxy/dicom/{qido|wado|stow}/...``) forwarded to ``--studies``.

    MONAI Label's own proxy calls ``requests`` inside an ``async`` endpoint with no timeout: each
    fetch blocks the event loop, and a PACS that hangs freezes the whole server. Here the upstream
    call runs in the thread pool, with a timeout (``dicomweb.timeout_s``), and no hop-by-hop headers
    are forwarded.
    """
    op, _, rest = path.partition("/")
    prefix = getattr(settings, _PREFIXES[op], None) if op in _PREFIXES else None
    if op == "qido" and rest.endswith("metadata"):  # some OHIF versions ask QIDO for metadata
        prefix = settings.MONAI_LABEL_WADO_PREFIX
    target = "/".join(p for p in (settings.MONAI_LABEL_STUDIES.rstrip("/"), prefix, rest if op in _PREFIXES else path) if p)
    if request.url.query:
        target += "?" + request.url.query
    headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_BY_HOP | {"host"}}
    body = await request.body() if request.method == "POST" else None
    upstream = await run_in_threadpool(requests.request, request.method, target, headers=headers, data=body,
                                       timeout=_proxy_timeout())
    out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP_BY_HOP}
    return Response(content=upstream.content, status_code=upstream.status_code, headers=out)


def _proxy_timeout() -> float:
    try:
        return float(app_instance().cfg["dicomweb"]["timeout_s"])
    except Exception:  # noqa: BLE001 - an app without that setting
        return float(settings.MONAI_LABEL_DICOMWEB_PROXY_TIMEOUT)


def _install() -> None:
    for exc in (requests.exceptions.ConnectionError, requests.exceptions.Timeout):
        app.add_exception_handler(exc, upstream_unreachable)
    path = f"{settings.MONAI_LABEL_API_STR}/train/{{model}}"
    app.add_api_route(path, train_model, methods=["POST"], summary=f"{RBAC_ADMIN} Run Training Task for specific model")
    app.add_api_route("/ohif/{path:path}", get_ohif, methods=["GET"], include_in_schema=False)
    app.add_api_route("/proxy/dicom/{path:path}", proxy_dicom, methods=["GET", "POST"], include_in_schema=False)
    # ahead of MONAI Label's routers (routes match in registration order)
    for _ in range(3):
        app.router.routes.insert(0, app.router.routes.pop())


_install()
