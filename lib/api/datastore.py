"""``/datastore``: MONAI Label's datastore endpoints, with names checked and uploads validated first.

Same paths, parameters and answers as MONAI Label 0.8.5 (Slicer and OHIF call them as they are). What
changes: every image id and label tag follows :mod:`lib.tasks.ids`' rule (400 otherwise); an unknown
image or label is a 404 that says so; ``params`` / ``info`` must be JSON objects; an uploaded image or
label is checked (:mod:`lib.api.uploads`) before the datastore stores it.
"""

from __future__ import annotations

import logging
import os
from typing import Any, Dict, Optional

from fastapi import APIRouter, BackgroundTasks, Depends, File, Form, UploadFile
from fastapi.responses import FileResponse
from monailabel.config import RBAC_ADMIN, RBAC_ANNOTATOR, RBAC_USER, settings
from monailabel.datastore.utils.convert import binary_to_image
from monailabel.endpoints import datastore as ml_datastore
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.utils.app import app_instance
from monailabel.utils.others.generic import get_mime_type, remove_file

from lib.api.prefetch import prefetch
from lib.api.uploads import check_image, check_label, received
from lib.tasks.errors import ClientError, ImageNotFound
from lib.tasks.ids import check_name, volume_extension
from lib.tasks.params import parse_object

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/datastore", tags=["Datastore"], responses={404: {"description": "Not found"}})

USER = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))
ANNOTATOR = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR))
ADMIN = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ADMIN))


def _store() -> Datastore:
    return app_instance().datastore()


def known_image(image_id: Any) -> str:
    """``image_id`` if it is a valid name of an image in the datastore; else 400 / 404."""
    check_name(image_id, "image id")
    if image_id not in _store().list_images():
        raise ImageNotFound(image_id)
    return image_id


def label_file(image_id: Any, tag: Any) -> str:
    """The file of image ``image_id``'s label under ``tag``; 400 / 404 with what exists."""
    known_image(image_id)
    check_name(tag, "label tag")
    path = _store().get_label_uri(image_id, tag)
    if not path or not os.path.isfile(path):
        raise ClientError(f"image '{image_id}' has no label with tag '{tag}'", status_code=404)
    return path


@router.get("/", summary=f"{RBAC_USER}Get All Images/Labels from datastore")
async def api_datastore(output: Optional[ml_datastore.ResultType] = None, user: User = USER):
    return ml_datastore.datastore(output)


def add_image(image: Optional[str], params: str, file: UploadFile, user: str | None) -> Dict[str, Any]:
    save_params = parse_object(params)
    if not image:
        name = str(file.filename or "")
        if "/" in name or "\\" in name:
            raise ClientError(f"the file name '{name[:80]}' holds a folder; give the image id with ?image=<id>")
        ext = volume_extension(name)
        image = name[: len(name) - len(ext)] if name.lower().endswith(ext) else name
    check_name(image, "image id")
    with received(file) as path:
        check_image(path)
        if user:
            save_params["user"] = user
        return {"image": _store().add_image(image, path, save_params)}


@router.put("/", summary=f"{RBAC_ANNOTATOR}Upload new Image", include_in_schema=False, deprecated=True)
@router.put("/image", summary=f"{RBAC_ANNOTATOR}Upload new Image")
def api_add_image(image: Optional[str] = None, params: str = Form("{}"), file: UploadFile = File(...), user: User = ANNOTATOR):
    return add_image(image, params, file, user.username)


@router.delete("/", summary=f"{RBAC_ADMIN}Remove Image and corresponding labels", include_in_schema=False, deprecated=True)
@router.delete("/image", summary=f"{RBAC_ADMIN}Remove Image and corresponding labels")
def api_remove_image(id: str, user: User = ADMIN):
    _store().remove_image(known_image(id))
    return {}


@router.head("/image", summary=f"{RBAC_USER}Check If Image Exists")
def api_check_image(image: str, check_sum: Optional[str] = None, user: User = USER):
    return ml_datastore.download_image(known_image(image), check_only=True, check_sum=check_sum)


@router.get("/image", summary=f"{RBAC_USER}Download Image")
def api_download_image(image: str, user: User = USER):
    response = ml_datastore.download_image(known_image(image))
    prefetch(image)  # a viewer opening the study: its first scribble or click should not wait for the read
    return response


@router.get("/image/info", summary=f"{RBAC_USER}Get Image Info")
def api_get_image_info(image: str, user: User = USER):
    info = dict(_store().get_image_info(known_image(image)))
    info.pop("path", None)  # a server path: nothing a client needs
    return info


@router.put("/image/info", summary=f"{RBAC_ANNOTATOR}Update Image Info")
def api_put_image_info(image: str, info: str = Form("{}"), user: User = ANNOTATOR):
    update = parse_object(info, "info")
    if user.username:
        update["user"] = user.username
    return _store().update_image_info(known_image(image), update)


def save_label(image: str, params: str, tag: str, label: UploadFile, user: str | None) -> Dict[str, Any]:
    known_image(image)
    tag = check_name(tag or DefaultLabelTag.FINAL.value, "label tag")
    save_params = parse_object(params)
    store = _store()
    with received(label, extra=(".bin",)) as path:
        image_path = store.get_image_uri(image)
        converted = ""
        if path.endswith(".bin"):  # OHIF's raw label buffer, on the image's grid
            try:
                converted = path = binary_to_image(image_path, path)
            except Exception as e:  # noqa: BLE001 - numpy / ITK refuse a buffer of the wrong size in many ways
                raise ClientError(f"the .bin label does not fit the image's grid ({str(e)[:120]})", status_code=422) from None
        try:
            check_label(path, image_path)
            label_id = store.save_label(image, path, tag, save_params)
        finally:
            remove_file(converted)
    res = app_instance().on_save_label(image, label_id) or {}
    res.update({"image": image, "label": label_id})
    return res


@router.put("/label", summary=f"{RBAC_ANNOTATOR}Save Finished Label")
def api_save_label(image: str, params: str = Form("{}"), tag: str = DefaultLabelTag.FINAL.value,
                   label: UploadFile = File(...), user: User = ANNOTATOR):
    return save_label(image, params, tag, label, user.username)


@router.delete("/label", summary=f"{RBAC_ADMIN}Remove Label")
def api_remove_label(id: str, tag: str, user: User = ADMIN):
    label_file(id, tag)
    _store().remove_label(id, tag)
    return {}


@router.head("/label", summary=f"{RBAC_USER}Check If Label Exists")
def api_check_label(image: str, tag: str, user: User = USER):
    label_file(image, tag)
    return {}


@router.get("/label", summary=f"{RBAC_USER}Download Label")
def api_download_label(label: str, tag: str, user: User = USER):
    path = label_file(label, tag)
    return FileResponse(path, media_type=get_mime_type(path), filename=os.path.basename(path))


@router.get("/label/info", summary=f"{RBAC_USER}Get Label Info")
def api_get_label_info(label: str, tag: str, user: User = USER):
    label_file(label, tag)
    return _store().get_label_info(label, tag)


def update_label_info(label: str, tag: str, info: str, user: str | None):
    label_file(label, tag)
    update = parse_object(info, "info")
    if user:
        update["user"] = user
    return _store().update_label_info(label, tag, update)


@router.put("/label/info", summary=f"{RBAC_ANNOTATOR}Update Label Info")
def api_put_label_info(label: str, tag: str, info: str = Form("{}"), user: User = ANNOTATOR):
    return update_label_info(label, tag, info, user.username)


@router.put("/updatelabelinfo", summary=f"{RBAC_ANNOTATOR}Update label info", include_in_schema=False, deprecated=True)
def api_update_label_info(label: str, tag: str, params: str = Form("{}"), user: User = ANNOTATOR):
    return update_label_info(label, tag, params, user.username)


@router.get("/dataset", summary=f"{RBAC_ANNOTATOR}Download full dataset as ZIP archive")
def api_download_dataset(background_tasks: BackgroundTasks, limit_cases: Optional[int] = None, user: User = ANNOTATOR):
    store = _store()
    if not store.get_labeled_images():
        raise ClientError("no study has a 'final' label yet: the dataset archive holds image/label pairs", status_code=404)
    path = store.get_dataset_archive(limit_cases)
    background_tasks.add_task(remove_file, path)
    return FileResponse(path, media_type="application/zip", filename="dataset.zip")

