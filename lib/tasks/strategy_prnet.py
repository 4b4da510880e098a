"""Active-learning strategy ``prnet_confidence``: the unlabeled study whose PRNet propagation was least
confident (lowest mean DFD similarity, stored in the image info by ``prnet_prelabel``) comes first;
studies not pre-labeled yet follow, in id order."""

from __future__ import annotations

from typing import Any, Dict

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.strategy import Strategy


class PRNetConfidence(Strategy):
    def __init__(self):
        super().__init__("Unlabeled study with the lowest PRNet propagation confidence first")

    def __call__(self, request: Dict[str, Any], datastore: Datastore) -> Dict[str, Any] | None:
        images = sorted(datastore.get_unlabeled_images())
        if not images:
            return None
        scored = []
        for image_id in images:
            conf = (datastore.get_image_info(image_id) or {}).get("prnet", {}).get("confidence")
            scored.append((0 if conf is not None else 1, conf if conf is not None else 0.0, image_id))
        _, conf, image_id = min(scored)
        return {"id": image_id, "prnet_confidence": conf}
