"""``/ohif/``: MONAI Label's bundled OHIF viewer, served correctly.

monailabel 0.8.5 maps ``/ohif/a/b.js`` to the file ``a:b.js`` (``os.pathsep`` in place of ``os.sep``), so
every nested asset (``/ohif/assets/...``, the DICOM image decoders' WebAssembly) was answered with
``index.html`` and the viewer never started. The viewer's MONAI Label panel also defaults to the server
``<host>:8000``; served from here, it defaults to this server (the origin the page came from), unless the
user already chose one.
"""

from __future__ import annotations

import mimetypes
import os

from fastapi import Depends
from fastapi.responses import FileResponse, HTMLResponse
from monailabel.config import settings
from monailabel.endpoints import ohif as ml_ohif
from monailabel.endpoints.user.auth import RBAC, User

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
