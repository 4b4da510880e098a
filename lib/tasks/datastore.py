"""MONAI Label's local datastore with atomic writes, contained in its folder.

MONAI Label 0.8.5 copies a saved label straight onto its destination and rewrites
``datastore_v2.json`` in place: a crash or a full disk mid-write leaves a truncated label or an
unreadable datastore. Here both are written to a temporary file in the destination folder and moved
into place with ``os.replace`` (atomic on POSIX), under the datastore's own file lock; temporary files
that a killed server left behind are removed at start.

It also joins ids and tags into paths as given, so ``image=../../x`` or ``tag=..`` wrote and deleted
files outside the studies folder. Here every image id and label tag that is written or deleted follows
:mod:`lib.tasks.ids`' rule, every path is checked to lie under the folder, and a removed label leaves the
listing at once (MONAI Label waited for a file-system event that never came for new tags).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import time
from typing import Any, Dict

from filelock import FileLock
from monailabel.datastore.local import DataModel, ImageLabelModel, LocalDatastore, LocalDatastoreModel

from lib.atomic import atomic_copy, atomic_write_text
from lib.tasks.errors import ClientError, ImageNotFound
from lib.tasks.ids import check_name, path_under, volume_extension

logger = logging.getLogger(__name__)


class AtomicLocalDatastore(LocalDatastore):
    """:class:`LocalDatastore` whose label files and index are replaced atomically.

    A file replaced by ``os.replace`` reaches the file watcher as a *moved* event, which MONAI Label
    ignores; handled here, so labels and index written by another process (a training or batch
    pre-labeling job runs in its own process) are seen by the server at once.
    """

    def __init__(self, datastore_path: str, *args, **kwargs):
        remove_stale_temporaries(datastore_path)
        super().__init__(datastore_path, *args, **kwargs)
        if getattr(self, "_handler", None) is not None:
            self._handler.on_moved = self._on_moved_event
        self._opened_with = ((datastore_path, *args), {**kwargs, "auto_reload": False})

    def __reduce__(self):
        """Pickled as the arguments that open it again (its file watcher does not pickle): a worker process of a
        distributed job (:func:`lib.distributed.spawn`) opens the same folder, without watching it."""
        return reopen, (type(self), *self._opened_with)

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

    def add_image(self, image_id: str, image_filename: str, image_info: Dict[str, Any]) -> str:
        """Store ``image_filename`` as image ``image_id`` (a valid name; its file type must be a volume's)."""
        ext = volume_extension(image_filename)
        check_name(image_id, "image id")
        dest = path_under(self._datastore.image_path(), self._filename(image_id, ext))
        logger.info(f"Adding image (atomic): {image_id} => {os.path.basename(dest)}")
        with FileLock(self._lock_file):
            self._reload_index()
            old = self._datastore.objects.get(image_id)
            atomic_copy(image_filename, dest)
            if old is not None and old.image.ext != ext:  # the same study re-uploaded in another format
                old_file = path_under(self._datastore.image_path(), self._filename(image_id, old.image.ext))
                if os.path.isfile(old_file):
                    os.unlink(old_file)
            info = dict(image_info or {})
            info["ts"] = int(time.time())
            info["name"] = os.path.basename(dest)
            labels = old.labels if old is not None else {}
            self._datastore.objects[image_id] = ImageLabelModel(image=DataModel(info=info, ext=ext), labels=labels)
            self._update_datastore_file(lock=False)
        return image_id

    def remove_image(self, image_id: str) -> None:
        """Remove image ``image_id`` and all its labels (404 for an unknown id)."""
        check_name(image_id, "image id")
        with FileLock(self._lock_file):
            self._reload_index()
            obj = self._datastore.objects.get(image_id)
            if not obj:
                raise ImageNotFound(image_id)
            for tag, label in list(obj.labels.items()):
                self._unlink(self._datastore.label_path(tag), self._filename(image_id, label.ext))
            self._unlink(self._datastore.image_path(), self._filename(image_id, obj.image.ext))
            self._datastore.objects.pop(image_id, None)
            self._update_datastore_file(lock=False)

    def remove_label(self, label_id: str, label_tag: str) -> None:
        """Remove the label of image ``label_id`` under ``label_tag``; gone from the listing at once (404 when none)."""
        check_name(label_id, "image id")
        check_name(label_tag, "label tag")
        with FileLock(self._lock_file):
            self._reload_index()
            obj = self._datastore.objects.get(label_id)
            if not obj:
                raise ImageNotFound(label_id)
            label = obj.labels.get(label_tag)
            if label is None:
                raise ClientError(f"image '{label_id}' has no label with tag '{label_tag}'; its tags: {sorted(obj.labels)}",
                                  status_code=404)
            self._unlink(self._datastore.label_path(label_tag), self._filename(label_id, label.ext))
            obj.labels.pop(label_tag, None)
            self._update_datastore_file(lock=False)

    @staticmethod
    def _unlink(folder: str, name: str) -> None:
        path = path_under(folder, name)
        if os.path.isfile(path) or os.path.islink(path):
            os.unlink(path)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: Dict[str, Any]) -> str:
        check_name(image_id, "image id")
        check_name(label_tag, "label tag")
        label_ext = volume_extension(label_filename)
        label_path = self._datastore.label_path(label_tag)
        name = self._filename(image_id, label_ext)
        dest = path_under(label_path, name)
        logger.info(f"Saving label (atomic): {image_id} => {label_tag} => {name}")
        with FileLock(self._lock_file):
            self._reload_index()
            obj = self._datastore.objects.get(image_id)
            if not obj:
                raise ImageNotFound(image_id)
            os.makedirs(label_path, exist_ok=True)
            old = obj.labels.get(label_tag)
            atomic_copy(label_filename, dest)
            if old is not None and old.ext != label_ext:
                self._unlink(label_path, self._filename(image_id, old.ext))
            info = dict(label_info) if label_info else {}
            info["ts"] = int(time.time())
            info["name"] = name
            obj.labels[label_tag] = DataModel(info=info, ext=label_ext)
            self._update_datastore_file(lock=False)
        return image_id

    def update_image_info(self, image_id: str, info: Dict[str, Any]) -> None:
        with FileLock(self._lock_file):
            self._reload_index()
            obj = self._datastore.objects.get(image_id)
            if not obj:
                raise ImageNotFound(image_id)
            obj.image.info.update(info)
            self._update_datastore_file(lock=False)

    def update_label_info(self, label_id: str, label_tag: str, info: Dict[str, Any]) -> None:
        with FileLock(self._lock_file):
            self._reload_index()
            label = self._datastore.label(label_id, label_tag)
            if not label:
                raise ClientError(f"image '{label_id}' has no label with tag '{label_tag}'", status_code=404)
            label.info.update(info)
            self._update_datastore_file(lock=False)

    def _reload_index(self) -> None:
        """The index as it is on disk, read under the lock before every change: another process (a job, a rank
        of a distributed pre-labeling, a second server) may have written it since, and writing this
        process's stale copy back would drop its entries. Always read: file times are too coarse to tell."""
        if os.path.exists(self._datastore_config_path):
            with open(self._datastore_config_path) as f:
                model = LocalDatastoreModel.model_validate_json(f.read())
            model.base_path = self._datastore_path
            self._datastore = model
            self._config_ts = os.stat(self._datastore_config_path).st_mtime

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


def reopen(cls: type, args: tuple, kwargs: dict) -> Any:
    """``cls(*args, **kwargs)``: how a pickled datastore is opened again in another process."""
    return cls(*args, **kwargs)


def remove_stale_temporaries(datastore_path: str, min_age_s: float = 60.0) -> list[str]:
    """Remove the temporary files of atomic writes (``.<name>.<random>``, see :mod:`lib.atomic`) that a
    killed process left in the datastore folder and its label folders; returns their paths.

    Runs under the datastore's file lock (every datastore write holds it) and leaves files younger than
    ``min_age_s`` alone, so a write in progress in another process is never touched.
    """
    root = os.path.realpath(datastore_path)
    if not os.path.isdir(root):
        return []
    removed = []
    now = time.time()
    with FileLock(os.path.join(root, ".lock")):
        for folder in [root, *glob.glob(os.path.join(root, "labels", "*"))]:
            for path in glob.glob(os.path.join(folder, ".*")):
                name = os.path.basename(path)
                if not _TEMPORARY_RE.fullmatch(name) or not os.path.isfile(path) or os.path.islink(path):
                    continue
                if now - os.stat(path).st_mtime >= min_age_s:
                    os.unlink(path)
                    removed.append(path)
    if removed:
        logger.warning(f"removed {len(removed)} temporary file(s) left by an interrupted write: {[os.path.basename(p) for p in removed]}")
    return removed


# lib.atomic's temporary names: "." + the destination's name + "." + mkstemp's 8 random characters
_TEMPORARY_RE = re.compile(r"\..+\.(json|nii|nii\.gz|nrrd|mha)\.[A-Za-z0-9_]{8}")
