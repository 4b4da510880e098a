"""MONAI Label's local datastore with atomic writes.

MONAI Label 0.8.5 copies a saved label straight onto its destination and rewrites
``datastore_v2.json`` in place: a crash or a full disk mid-write leaves a truncated label or an
unreadable datastore. Here both are written to a temporary file in the destination folder and moved
into place with ``os.replace`` (atomic on POSIX), under the datastore's own file lock.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Any, Dict

from filelock import FileLock
from monailabel.datastore.local import DataModel, LocalDatastore

from lib.atomic import atomic_copy, atomic_write_text
from lib.tasks.errors import ImageNotFound

logger = logging.getLogger(__name__)


class AtomicLocalDatastore(LocalDatastore):
    """:class:`LocalDatastore` whose label files and index are replaced atomically.

    A file replaced by ``os.replace`` reaches the file watcher as a *moved* event, which MONAI Label
    ignores; handled here, so labels and index written by another process (a training or batch
    pre-labeling job runs in its own process) are seen by the server at once.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if getattr(self, "_handler", None) is not None:
            self._handler.on_moved = self._on_moved_event

    def close(self) -> None:
        """Stop watching the folder (a datastore made outside the server, e.g. in a script or test)."""
        observer = getattr(self, "_observer", None)
        if observer is not None:
            observer.stop()
            observer.join(timeout=5)

    def _on_moved_event(self, event) -> None:
        dest = os.fsdecode(getattr(event, "dest_path", "") or "")
        if dest == self._datastore_config_path:
            self._on_modify_event(type("Moved", (), {"src_path": dest})())
        else:
            self._on_any_event(event)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: Dict[str, Any]) -> str:
        obj = self._datastore.objects.get(image_id)
        if not obj:
            raise ImageNotFound(image_id)
        _, label_ext = self._to_id(os.path.basename(label_filename))
        label_path = self._datastore.label_path(label_tag)
        name = self._filename(image_id, label_ext)
        logger.info(f"Saving label (atomic): {image_id} => {label_tag} => {name}")
        with FileLock(self._lock_file):
            os.makedirs(label_path, exist_ok=True)
            atomic_copy(label_filename, os.path.join(label_path, name))
            info = dict(label_info) if label_info else {}
            info["ts"] = int(time.time())
            info["name"] = name
            obj.labels[label_tag] = DataModel(info=info, ext=label_ext)
            self._update_datastore_file(lock=False)
        return image_id

    def _update_datastore_file(self, lock: bool = True) -> None:
        def write() -> None:
            self._ignore_event_config = True
            text = json.dumps(self._datastore.model_dump(exclude={"base_path"}), indent=2, default=str)
            atomic_write_text(self._datastore_config_path, text)
            self._config_ts = os.stat(self._datastore_config_path).st_mtime

        if lock:
            with FileLock(self._lock_file):
                write()
        else:
            write()
