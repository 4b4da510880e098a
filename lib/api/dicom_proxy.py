"""``/proxy/dicom``: OHIF's DICOMweb requests forwarded to ``--studies``, within its DICOMweb root.

MONAI Label's own proxy calls ``requests`` inside an ``async`` endpoint with no timeout (each fetch blocks
the event loop; a PACS that hangs freezes the server), forwards the browser's ``Authorization`` and
``Cookie`` headers upstream and the PACS's ``Set-Cookie`` back, and joins the path as given, so
``qido/../../x`` reached ``/x`` on the PACS host. Here the upstream call runs in the thread pool with a
timeout (``dicomweb.timeout_s``); the path is checked to stay under the configured DICOMweb root; only
content-negotiation headers go upstream (plus the credentials MONAI Label is configured with for that
server, ``MONAI_LABEL_DICOMWEB_USERNAME`` / ``_PASSWORD``), and no cookie comes back.
"""

from __future__ import annotations

import logging
import posixpath
from urllib.parse import urlsplit

import requests
from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from monailabel.config import settings
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.utils.app import app_instance

from lib.api.prefetch import prefetch_series
from lib.tasks.errors import ClientError

logger = logging.getLogger(__name__)

_PREFIXES = {"wado": "MONAI_LABEL_WADO_PREFIX", "qido": "MONAI_LABEL_QIDO_PREFIX", "stow": "MONAI_LABEL_STOW_PREFIX"}
# request headers a DICOMweb server needs to answer (content negotiation, caching, ranges)
_FORWARD = {"accept", "accept-encoding", "content-type", "range", "if-none-match", "if-modified-since", "user-agent"}
# response headers a browser may see
_RETURN = {"content-type", "content-length", "content-range", "accept-ranges", "etag", "last-modified", "cache-control",
           "content-location", "location", "warning"}


def upstream_url(path: str, query: str = "") -> str:
    """The DICOMweb URL for proxy path ``path`` (``qido/studies``, ``wado/studies/<uid>/...``); a ClientError
    (400) for a path that would leave the configured DICOMweb root, (404) when the datastore is a folder."""
    studies = str(settings.MONAI_LABEL_STUDIES or "")
    if not studies.startswith(("http://", "https://")):
        raise ClientError("this server's datastore is a local folder, not a DICOMweb server: nothing to proxy",
                          status_code=404)
    parts = path.split("/")
    if any(p in (".", "..") or "\\" in p for p in parts):
        raise ClientError("the DICOMweb path may not hold '.' or '..' segments")
    op, rest = parts[0], "/".join(parts[1:])
    prefix = getattr(settings, _PREFIXES[op], None) if op in _PREFIXES else None
    if op == "qido" and rest.endswith("metadata"):  # some OHIF versions ask QIDO for metadata
        prefix = settings.MONAI_LABEL_WADO_PREFIX
    root = studies.rstrip("/")
    target = "/".join(p for p in (root, prefix, rest if op in _PREFIXES else path) if p)
    root_path = urlsplit(root).path.rstrip("/")
    target_path = posixpath.normpath(urlsplit(target).path)
    if not (target_path == root_path or target_path.startswith(root_path + "/")):
        raise ClientError("the DICOMweb path leaves the configured DICOMweb root")
    return target + ("?" + query if query else "")


async def proxy_dicom(request: Request, path: str, user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))):
    target = upstream_url(path, request.url.query)
    headers = {k: v for k, v in request.headers.items() if k.lower() in _FORWARD}
    body = await request.body() if request.method == "POST" else None
    auth = None
    if settings.MONAI_LABEL_DICOMWEB_USERNAME and settings.MONAI_LABEL_DICOMWEB_PASSWORD:
        auth = (settings.MONAI_LABEL_DICOMWEB_USERNAME, settings.MONAI_LABEL_DICOMWEB_PASSWORD)
    upstream = await run_in_threadpool(requests.request, request.method, target, headers=headers, data=body,
                                       timeout=_proxy_timeout(), auth=auth, allow_redirects=False)
    out = {k: v for k, v in upstream.headers.items() if k.lower() in _RETURN and k.lower() != "content-length"}
    if request.method == "GET" and upstream.status_code == 200:
        await run_in_threadpool(prefetch_series, path)  # OHIF opens the series: its first click should not fetch it
    return Response(content=upstream.content, status_code=upstream.status_code, headers=out)


def _proxy_timeout() -> float:
    try:
        return float(app_instance().settings.dicomweb.timeout_s)
    except Exception:  # noqa: BLE001 - an app without that setting
        return float(settings.MONAI_LABEL_DICOMWEB_PROXY_TIMEOUT)


async def upstream_unreachable(request: Request, exc: Exception) -> JSONResponse:
    """A server we depend on (the DICOMweb PACS, also behind OHIF's ``/proxy/dicom``) did not answer: 503."""
    logger.error(f"{request.method} {request.url.path}: upstream unreachable: {type(exc).__name__}")
    studies = settings.MONAI_LABEL_STUDIES
    return JSONResponse(status_code=503, content={"detail": (
        f"the DICOMweb server {studies} is unreachable ({type(exc).__name__}); check that it is running "
        "(python -m lib.dicomweb.orthanc start) and that --studies points at its /dicom-web root")})
