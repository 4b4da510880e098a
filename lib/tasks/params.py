"""Request parameters: strict JSON objects and bounded, typed numbers.

MONAI Label parses a request's ``params`` form field with ``json.loads`` and passes whatever comes out
(``null``, a string, ``NaN``) to the task, which then fails with a 500. Here ``params`` must be a JSON
object of finite numbers, and each number a task reads is checked against its range with a message that
names the key.
"""

from __future__ import annotations

import json
import math
from typing import Any, Mapping

from lib.tasks.errors import ClientError

MAX_PARAMS_BYTES = 1 << 20  # a request's params JSON; Slicer's largest (label_info of 100s of segments) is a few kB


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def _reject_constant(name: str) -> float:
    raise ValueError(name)


def parse_object(text: str | bytes | None, what: str = "params") -> dict[str, Any]:
    """``text`` parsed as a JSON object (``{}`` when empty); a ClientError (400) for anything else, for
    ``NaN`` / ``Infinity`` and for numbers out of float range (``1e400``)."""
    if text is None or (isinstance(text, (str, bytes)) and not text.strip()):
        return {}
    if len(text) > MAX_PARAMS_BYTES:
        raise ClientError(f"'{what}' is larger than {MAX_PARAMS_BYTES} bytes", status_code=413)
    try:
        value = json.loads(text, parse_float=_finite, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        raise ClientError(f"'{what}' must be a JSON object of finite numbers, strings and lists ({str(e)[:120]})") from None
    if not isinstance(value, Mapping):
        raise ClientError(f"'{what}' must be a JSON object ({{\"key\": value, ...}}), got {type(value).__name__}")
    return check_object(value, what)


def check_object(value: Any, what: str = "params") -> dict[str, Any]:
    """``value`` if it is a mapping whose numbers are all finite (``{}`` for None); else a ClientError (400)."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ClientError(f"'{what}' must be a JSON object ({{\"key\": value, ...}}), got {type(value).__name__}")
    _check_finite(value, what)
    return dict(value)


def _check_finite(value: Any, where: str, depth: int = 0) -> None:
    if depth > 32:
        raise ClientError(f"'{where}' is nested too deeply")
    if isinstance(value, float) and not math.isfinite(value):
        raise ClientError(f"'{where}' must be a finite number, got {value}")
    if isinstance(value, Mapping):
        for k, v in value.items():
            _check_finite(v, f"{where}.{k}", depth + 1)
    elif isinstance(value, (list, tuple)):
        for v in value:
            _check_finite(v, where, depth + 1)


def number(request: Mapping[str, Any], key: str, default: float, lo: float, hi: float, integer: bool = False) -> float | int:
    """``request[key]`` (``default`` when absent or empty) as a number in ``[lo, hi]``; a ClientError (400)
    that names the key and the range otherwise. ``integer``: must be a whole number (``3`` or ``3.0``)."""
    value = request.get(key)
    if value is None or value == "":
        value = default
    if isinstance(value, bool):
        raise ClientError(f"'{key}' must be a number in [{lo}, {hi}], got {value!r}")
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ClientError(f"'{key}' must be a number in [{lo}, {hi}], got {str(value)[:60]!r}") from None
    if not math.isfinite(x) or not lo <= x <= hi or (integer and x != int(x)):
        kind = "a whole number" if integer else "a number"
        raise ClientError(f"'{key}' must be {kind} in [{lo}, {hi}], got {str(value)[:60]}")
    return int(x) if integer else x
