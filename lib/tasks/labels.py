"""Label names as MONAI Label clients store them in a label's info.

- drafts saved by batch infer: ``info.params.label_names`` ``{name: id}``;
- Slicer's *Save label*: ``info.label_info`` ``[{"name": ..., "idx": ...}]`` (``id`` also accepted);
- our support scribbles: ``info.label_info`` ``[{"name": ..., "id": ...}]``.
"""

from __future__ import annotations

from typing import Any, Mapping

from lib.data.labels import BACKGROUND


def label_names_from_info(info: Mapping[str, Any] | None, keep_background: bool = False) -> dict[str, int]:
    """``{name: id}`` from a label's info (see the module's docstring); ``{}`` when it names none."""
    info = info or {}
    params = info.get("params") if isinstance(info.get("params"), Mapping) else {}
    for source in (info, params):
        names = source.get("label_names")
        if isinstance(names, Mapping) and names:
            out = {str(k): int(v) for k, v in names.items()}
            break
        items = source.get("label_info")
        if isinstance(items, list) and items:
            out = {str(d["name"]): int(d.get("id", d.get("idx"))) for d in items if "name" in d and ("id" in d or "idx" in d)}
            break
    else:
        return {}
    return out if keep_background else {k: v for k, v in out.items() if k != BACKGROUND and v != 0}
