"""MONAI Label's bundled scribbles task, served side by side with ours for the benchmark.

In monailabel 0.8.5 its result JSON carries numpy integers, which the /infer endpoint cannot
serialise (HTTP 500); this wrapper converts them and changes nothing else.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from monailabel.scribbles.infer import HistogramBasedGraphCut


def _plain(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


class BundledHistogramGraphCut(HistogramBasedGraphCut):
    def __call__(self, request, *args, **kwargs):
        result_file, result_json = super().__call__(request, *args, **kwargs)
        return result_file, json.loads(json.dumps(result_json, default=_plain))
