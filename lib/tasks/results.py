"""Writing an infer task's result the way the client asked for it."""

from __future__ import annotations

import os
import tempfile
from typing import Any, Mapping

import numpy as np

from lib.io import write_like
from lib.tasks.errors import ClientError
from lib.tasks.ids import VOLUME_EXTENSIONS

RESULT_DTYPES = ("uint8", "uint16", "int16", "int32", "float32")


def write_result(request: Mapping[str, Any], label: np.ndarray, prefix: str) -> str:
    """Write ``label`` ``(I, J, K)`` on the grid of ``request["image"]`` to a temporary file, honouring the
    request's ``result_extension`` (default ``.nii.gz``), ``result_dtype`` (``uint8``) and
    ``result_compress``; a format or type that cannot be written is a ClientError (4xx)."""
    ext = str(request.get("result_extension") or ".nii.gz")
    if not ext.startswith("."):
        ext = "." + ext
    if ext.lower() not in VOLUME_EXTENSIONS:
        raise ClientError(f"'result_extension' must be one of {', '.join(VOLUME_EXTENSIONS)}, got {ext[:40]!r}")
    dtype = str(request.get("result_dtype") or "uint8")
    if dtype not in RESULT_DTYPES:
        raise ClientError(f"'result_dtype' must be one of {', '.join(RESULT_DTYPES)}, got {dtype[:40]!r}")
    fd, out = tempfile.mkstemp(suffix=ext, prefix=prefix)
    os.close(fd)
    try:
        return write_like(label, request["image"], out, dtype=dtype, compress=bool(request.get("result_compress", True)))
    except Exception as e:
        os.unlink(out)
        raise ClientError(f"cannot write the result as '{ext}' / '{dtype}': {e}") from None
