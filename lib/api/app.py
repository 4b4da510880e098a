"""The app's ASGI entry point: MONAI Label's FastAPI app with this package's endpoints in front.

Start the server with ``--uvicorn_app lib.api.app:app`` (``scripts/start.sh`` and ``lib/workflow/server.py`` do).
MONAI Label's routes for the datastore, inference, sessions, training, batch inference, scoring, active
learning, model files, logs, auth, OHIF and its DICOMweb proxy are replaced by this package's (same paths
and parameters, see :mod:`lib.api`); ``/info``, ``/openapi.json``, ``/docs`` and the static files stay
MONAI Label's. ``/reload`` (re-creates the app on any caller's request) is not served.
"""

from __future__ import annotations

import importlib
import logging

import requests
from monailabel.app import app
from monailabel.config import settings
from monailabel.interfaces.exception import MONAILabelError, MONAILabelException
from starlette.requests import Request
from starlette.responses import JSONResponse

from lib.api import access, datastore, infer, jobs, lifecycle, logs, session
from lib.api.dicom_proxy import proxy_dicom, upstream_unreachable
from lib.api.ohif import get_ohif
from lib.settings import app_settings

__all__ = ["app"]

logger = logging.getLogger(__name__)

API = settings.MONAI_LABEL_API_STR
OWNED_PREFIXES = ("/infer", "/datastore", "/session", "/train", "/batch", "/scoring", "/activelearning", "/model",
                  "/logs", "/auth", "/ohif", "/proxy", "/reload")
# MONAI Label's endpoint modules whose routes are replaced (wsi_infer and proxy are not served)
REPLACED = tuple(importlib.import_module(f"monailabel.endpoints.{name}") for name in (
    "infer", "wsi_infer", "datastore", "session", "train", "batch_infer", "scoring", "activelearning", "model", "logs",
    "login", "ohif", "proxy"))
ROUTERS = (datastore.router, infer.router, session.router, jobs.train_router, jobs.batch_router, jobs.scoring_router,
           jobs.activelearning_router, jobs.model_router, logs.router, access.router)

async def monailabel_error(request: Request, exc: MONAILabelException) -> JSONResponse:
    """A ``MONAILabelException`` raised below an endpoint: 404 for a missing image or label, 400 for invalid
    input, 500 (with MONAI Label's message) for the rest."""
    if "NotFound" in type(exc).__name__:
        status = 404
    else:
        status = 400 if getattr(exc, "error", None) == MONAILabelError.INVALID_INPUT else 500
    return JSONResponse(status_code=status, content={"detail": str(getattr(exc, "msg", exc))[:500]})


def _install() -> None:
    access.configure(app_settings(settings.MONAI_LABEL_APP_CONF).server)
    owned = tuple(API + p for p in OWNED_PREFIXES)
    replaced = {id(m.router) for m in REPLACED}

    def ours(route) -> bool:  # FastAPI >= 0.13x keeps an included router as one route object
        router = getattr(route, "original_router", None)
        return id(router) in replaced if router is not None else getattr(route, "path", "").startswith(owned)

    app.router.routes[:] = [r for r in app.router.routes if not ours(r)]
    for router in ROUTERS:
        app.include_router(router, prefix=API)
    app.add_api_route("/ohif/{path:path}", get_ohif, methods=["GET"], include_in_schema=False)
    app.add_api_route("/proxy/dicom/{path:path}", proxy_dicom, methods=["GET", "POST"], include_in_schema=False)
    for exc in (requests.exceptions.ConnectionError, requests.exceptions.Timeout):
        app.add_exception_handler(exc, upstream_unreachable)
    app.add_exception_handler(MONAILabelException, monailabel_error)
    access.install(app)
    lifecycle.install()


_install()
