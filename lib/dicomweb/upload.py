"""Put NIfTI CT studies on a DICOMweb server (STOW-RS) as CT series; idempotent."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import pydicom
from dicomweb_client import DICOMwebClient

from lib.dicomweb.convert import nifti_to_ct_series, series_uids

logger = logging.getLogger(__name__)


def series_on_server(client: DICOMwebClient, series_uid: str) -> bool:
    return bool(client.search_for_series(search_filters={"SeriesInstanceUID": series_uid}))


def upload_study(client: DICOMwebClient, nifti: Path, study_id: str | None = None, batch: int = 64) -> tuple[str, bool]:
    """Convert ``nifti`` and store it; returns (SeriesInstanceUID, uploaded). Skips a series already there."""
    study_id = study_id or nifti.name.split(".")[0]
    uid = series_uids(study_id).series
    if series_on_server(client, uid):
        return uid, False
    with tempfile.TemporaryDirectory() as tmp:
        nifti_to_ct_series(nifti, tmp, study_id)
        files = sorted(Path(tmp).glob("*.dcm"))
        for start in range(0, len(files), batch):
            client.store_instances([pydicom.dcmread(f) for f in files[start:start + batch]])
    logger.info(f"stored {study_id} as series {uid}")
    return uid, True

