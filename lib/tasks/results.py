"""Writing an infer task's result the way the client asked for it."""

from __future__ import annotations

import os
import tempfile
from typing import Any, Mapping

import numpy as np

from lib.io import write_like
from lib.tasks.errors import ClientError


def write_result(request: Mapping[str, Any], label: np.ndarray, prefix: str) -> str:
    """Write ``label`` ``(I, J, K)`` on the grid of ``request["image"]`` to a temporary file, honouring the
    request's ``result_extension`` (default ``.nii.gz``), ``result_dtype`` (``uint8``) and
    ``result_compress``; a format or type that cannot be written is a ClientError (4xx)."""
    ext = str(request.get("result_extension") or ".nii.gz")
    if not ext.startswith("."):
        ext = "." + ext
    dtype = str(request.get("result_dtype") or "uint8")
    fd, out = tempfile.mkstemp(suffix=ext, prefix=prefix)
    os.close(fd)
    try:
        return write_like(label, request["image"], out, dtype=dtype, compress=bool(request.get("result_compress", True)))
    except Exception as e:
        os.unlink(out)
        raise ClientError(f"cannot write the result as '{ext}' / '{dtype}': {e}") from None
