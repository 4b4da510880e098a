"""``/logs``: the server log's tail without the host's folder layout or secrets; ``/logs/gpu``.

MONAI Label 0.8.5 answers ``/logs`` with the whole log (1.5 MB and hundreds of absolute paths on the
sample cohort) and ``/logs/gpu`` with a 500 on a host without ``nvidia-smi``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections import deque

from fastapi import APIRouter, Depends
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import PlainTextResponse
from monailabel.config import RBAC_ADMIN, settings
from monailabel.endpoints.user.auth import RBAC, User

from lib.api.access import auth_token
from lib.tasks.errors import ClientError

router = APIRouter(prefix="/logs", tags=["Others"])

# an absolute path of two or more parts: "/home/u/studies/x.nii.gz" -> "…/x.nii.gz"
_ABS_PATH = re.compile(r"(?<![\w.:/-])(?:/[\w.@+-]+)+/(?=[\w.@+-]*)")


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` with every absolute folder replaced by ``…/`` (the file names stay) and ``secrets`` by ``***``."""
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return _ABS_PATH.sub("…/", text)


def tail(path: str, lines: int) -> str:
    with open(path, errors="replace") as f:
        return "".join(deque(f, lines))


@router.get("/", summary=f"{RBAC_ADMIN}Get Logs")
async def api_logs(lines: int = 300, user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ADMIN))):
    if not 1 <= lines <= 100_000:
        raise ClientError(f"'lines' must be in [1, 100000], got {lines}")
    path = os.path.join(settings.MONAI_LABEL_APP_DIR, "logs", "app.log")
    if not os.path.isfile(path):
        raise ClientError("the server has written no log file yet", status_code=404)
    text = await run_in_threadpool(tail, path, lines)
    return PlainTextResponse(redact(text, (auth_token(),)))


@router.get("/gpu", summary=f"{RBAC_ADMIN}Get GPU Info (nvidia-smi)")
async def api_gpu_info(user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ADMIN))):
    exe = shutil.which("nvidia-smi")
    if exe is None:
        raise ClientError("no NVIDIA GPU information on this host (nvidia-smi not found); the server runs on the CPU",
                          status_code=404)
    out = await run_in_threadpool(subprocess.run, [exe], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
    return PlainTextResponse(out.stdout.decode("utf-8", errors="replace"))
