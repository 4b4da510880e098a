"""Label maps: reduce a multi-organ map to a named organ set, and describe label ids.

A *label info* list is the form MONAI Label clients exchange: ``[{"name": str, "id": int}, ...]``.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

BACKGROUND = "background"


def reduce_labels(seg: np.ndarray, organs: Mapping[str, int]) -> tuple[np.ndarray, dict[str, int]]:
    """Keep only ``organs`` of ``seg`` and renumber them 1..N in the mapping's order.

    Args:
        seg: integer label map, any shape (e.g. ``(I, J, K)``), with source ids (e.g. TotalSegmentator).
        organs: ordered ``{name: source_id}``; output id of an organ is its 1-based position.

    Returns:
        ``(label, names)``: a ``uint8`` map of ``seg``'s shape (0 = everything else) and ``{name: id}``.

    Raises:
        ValueError: if a source id is absent from ``seg`` (the organ would silently be empty).
    """
    seg = np.asarray(seg)
    present = set(np.unique(seg).tolist())
    missing = [n for n, sid in organs.items() if sid not in present]
    if missing:
        raise ValueError(f"organs absent from the source label map: {missing}")
    out = np.zeros(seg.shape, dtype=np.uint8)
    names: dict[str, int] = {}
    for new_id, (name, source_id) in enumerate(organs.items(), start=1):
        out[seg == source_id] = new_id
        names[name] = new_id
    return out, names


def label_info(names: Mapping[str, int]) -> list[dict]:
    """``{name: id}`` → ``[{"name": name, "id": id}, ...]`` sorted by id (MONAI Label's form)."""
    return [{"name": n, "id": int(i)} for n, i in sorted(names.items(), key=lambda kv: kv[1])]


def names_from_info(info: Sequence[Mapping]) -> dict[str, int]:
    """Inverse of :func:`label_info`."""
    return {str(d["name"]): int(d["id"]) for d in info}
