"""Reading a study ahead of the annotator's first scribble or click.

When a client is handed a study (``POST /activelearning/{strategy}``: 3D Slicer's *Next Sample*) or downloads
one (``GET /datastore/image``), the app's shared study cache (``studies_open`` of the app, a
:class:`lib.io.VolumeCache`) starts reading it in the background, while the viewer loads it and the
annotator draws. Studies of a DICOMweb datastore are not read ahead: fetching a series there is left to
the request that needs it (two fetches of one series at once would write the same cache folder).
"""

from __future__ import annotations

import logging

from monailabel.interfaces.utils.app import app_instance

from lib.tasks.datastore_dicomweb import OneShotDICOMwebDatastore

logger = logging.getLogger(__name__)


def prefetch(image_id: str | None) -> bool:
    """Start reading study ``image_id`` into the app's shared cache; whether a read was started."""
    instance = app_instance()
    cache = getattr(instance, "studies_open", None)
    if not image_id or cache is None:
        return False
    store = instance.datastore()
    if isinstance(store, OneShotDICOMwebDatastore):
        return False
    cache.prefetch(lambda: store.get_image_uri(image_id))
    return True
