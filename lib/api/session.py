"""``/session``: MONAI Label's sessions (a client's own volume to run inference on), contained.

MONAI Label 0.8.5 joins the session id into a path (``DELETE /session/..`` removes the sessions folder's
parent) and unpacks an uploaded archive with ``shutil.unpack_archive``, which follows ``../`` in tar
members. Here session ids follow :mod:`lib.tasks.ids`' rule; an archive is unpacked by
:func:`safe_unpack` (members must stay inside the folder; links, devices and absolute names are refused).
"""

from __future__ import annotations

import logging
import os
import shutil
import tarfile
import tempfile
import zipfile
from typing import List

import SimpleITK as sitk
from fastapi import APIRouter, Depends, File, UploadFile
from fastapi.concurrency import run_in_threadpool
from monailabel.config import RBAC_USER, settings
from monailabel.endpoints import session as ml_session
from monailabel.endpoints.user.auth import RBAC, User
from monailabel.interfaces.utils.app import app_instance

from lib.api.uploads import check_image
from lib.tasks.errors import ClientError
from lib.tasks.ids import check_name, path_under, volume_extension

logger = logging.getLogger(__name__)

router = APIRouter(prefix="/session", tags=["Session"])
USER = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))
MAX_MEMBERS = 10_000


def safe_unpack(archive: str, dest: str) -> None:
    """Unpack a ``.zip`` or tar archive into ``dest``; a ClientError (400) for a member that would leave
    ``dest`` or is not a plain file or folder, and (415) for anything that is not an archive."""
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            infos = z.infolist()
            if len(infos) > MAX_MEMBERS:
                raise ClientError(f"the archive has more than {MAX_MEMBERS} members")
            for info in infos:
                path_under(dest, info.filename)
            z.extractall(dest)
        return
    try:
        tar = tarfile.open(archive)
    except (tarfile.TarError, OSError):
        raise ClientError("with uncompress=true the upload must be a .zip or tar archive", status_code=415) from None
    with tar:
        members = tar.getmembers()
        if len(members) > MAX_MEMBERS:
            raise ClientError(f"the archive has more than {MAX_MEMBERS} members")
        for m in members:
            if not (m.isfile() or m.isdir()):
                raise ClientError(f"archive member '{m.name[:80]}' is a link or a device; only files and folders are accepted")
            path_under(dest, m.name)
        tar.extractall(dest, filter="data")


def check_session_data(data: str) -> None:
    """A ClientError (415 / 422) unless ``data`` is one volume file or a folder holding a DICOM series."""
    if os.path.isfile(data):
        volume_extension(data)
        check_image(data)
        return
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(data) if os.path.isdir(data) else ()
    if not series:
        for root, _dirs, names in os.walk(data):
            series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(root) if names else ()
            if series:
                return
        raise ClientError("the session's files are neither one volume (NIfTI, NRRD, MHA) nor a DICOM series", status_code=422)


def create_session(uncompress: bool, expiry: int, files: List[UploadFile]):
    sessions = app_instance().sessions()
    if sessions is None:
        raise ClientError("sessions are not enabled on this server", status_code=406)
    if not files:
        raise ClientError("no file: send the volume (or an archive with uncompress=true) as field 'files'")
    received = tempfile.mkdtemp(prefix="session-")
    try:
        for i, f in enumerate(files):
            name = os.path.basename(str(f.filename or "")) or f"file_{i}"
            check_name(name, "file name")
            with open(path_under(received, name), "wb") as out:
                shutil.copyfileobj(f.file, out)
        data = received
        if uncompress:
            if len(files) != 1:
                raise ClientError("with uncompress=true send exactly one archive")
            data = tempfile.mkdtemp(prefix="session-unpacked-", dir=received)
            safe_unpack(os.path.join(received, os.listdir(received)[0]), data)
        elif len(files) == 1:
            data = os.path.join(received, os.listdir(received)[0])
        check_session_data(data)
        session_id, info = sessions.add_session(data, max(0, int(expiry)), False)
        return {"session_id": session_id, "session_info": info.to_json()}
    finally:
        shutil.rmtree(received, ignore_errors=True)


@router.get("/{session_id}", summary=f"{RBAC_USER}Get Session ID")
async def api_get_session(session_id: str, update_ts: bool = False, image: bool = False, user: User = USER):
    check_name(session_id, "session id")
    if image:
        sessions = app_instance().sessions()
        info = sessions.get_session(session_id, update_ts=False) if sessions else None
        if info and os.path.isdir(info.image):
            raise ClientError(f"session '{session_id}' holds a folder of files (a DICOM series), not one file to download",
                              status_code=409)
    return ml_session.get_session(session_id, update_ts, image)


@router.put("/", summary=f"{RBAC_USER}Create new session with Image")
async def api_create_session(uncompress: bool = False, expiry: int = 0, files: List[UploadFile] = File(...), user: User = USER):
    if not 0 <= expiry <= 10**7:
        raise ClientError(f"'expiry' must be in [0, 10000000] seconds, got {expiry}")
    return await run_in_threadpool(create_session, uncompress, expiry, files)


@router.delete("/{session_id}", summary=f"{RBAC_USER}Delete Session")
async def api_remove_session(session_id: str, user: User = USER):
    return ml_session.remove_session(check_name(session_id, "session id"))
