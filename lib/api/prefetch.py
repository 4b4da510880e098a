"""Reading a study ahead of the annotator's first scribble or click.

When a client is handed a study (``POST /activelearning/{strategy}``: 3D Slicer's *Next Sample*), downloads one
(``GET /datastore/image``) or, on a DICOMweb datastore, OHIF asks for a series' metadata through ``/proxy/dicom``
(it opens the series), the app's shared study cache (``studies_open``, a :class:`lib.io.VolumeCache`) starts
reading it in the background while the viewer loads it and the annotator draws. On DICOMweb that includes
fetching the series from the PACS and converting it (the datastore fetches one series once at a time).
"""

from __future__ import annotations

import logging
import re

from monailabel.interfaces.utils.app import app_instance

logger = logging.getLogger(__name__)

_SERIES_METADATA = re.compile(r"(?:^|/)series/([0-9.]+)/metadata$")


def prefetch(image_id: str | None) -> bool:
    """Start reading study ``image_id`` into the app's shared cache; whether a read was started."""
    instance = app_instance()
    cache = getattr(instance, "studies_open", None)
    if not image_id or cache is None:
        return False
    store = instance.datastore()
    cache.prefetch(lambda: store.get_image_uri(image_id))
    return True


def prefetch_series(proxy_path: str) -> bool:
    """OHIF opening a series (``.../series/<uid>/metadata`` through ``/proxy/dicom``): read it ahead when it is
    one of the datastore's images."""
    match = _SERIES_METADATA.search(proxy_path)
    if not match:
        return False
    try:
        known = match.group(1) in app_instance().datastore().list_images()
    except Exception as e:  # noqa: BLE001 - a read ahead is a hint; the proxy answers regardless
        logger.debug(f"prefetch: series list unavailable: {e}")
        return False
    return known and prefetch(match.group(1))
