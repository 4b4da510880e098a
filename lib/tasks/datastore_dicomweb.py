"""MONAI Label's DICOMweb datastore, made to work with this app's tasks and with a live PACS.

Image ids are SeriesInstanceUIDs; images are fetched into a local cache on first use and converted to
NIfTI, as MONAI Label does. What changes from MONAI Label 0.8.5's ``DICOMWebDatastore``:

- **Tags.** ``get_label_uri(image_id, tag)`` means the same as on a local folder: the label of that
  image under that tag. ``final`` labels live on the PACS as DICOM-SEG (written with dcmqi's
  ``itkimage2segimage``, read back onto the image's voxel grid); every other tag (``scribbles``,
  ``original``, ``plc``) stays in the local cache. MONAI Label's version reads the image id as a SEG
  series id and ignores the tag in ``get_labeled_images``.
- **Label ids survive the round trip.** Segment *k* of a SEG we write is the *k*-th label id present,
  named after the label (``label_names`` or Slicer's ``label_info``); the mapping id → segment is kept
  in the segment's description (``label value <id>``), so a SEG read back gives the ids that were saved.
  MONAI Label names segments by position in ``label_info``, not by id.
- **Fresh listings.** The series list and the SEG index are cached for ``listing_ttl_s`` seconds
  (MONAI Label: 2 hours), and a ``final`` save refreshes them at once.
- **Unusable series are skipped with a message** in the log: other modalities than CT (MR, US, ...),
  multi-frame (enhanced) images and single-image series.
- **PACS unreachable or hung**: a 503 at once (a hung PACS after ``timeout_s``) (one quick retry, not dicomweb-client's 30 s of back-off) that
  names the server and what to check, not a 500; ``/info`` still answers, with the reason.
- **Atomic local writes**, as :class:`~lib.tasks.datastore.AtomicLocalDatastore`, and a series' cache folder
  appears only complete: MONAI Label downloads into it in place and, finding it non-empty next time, converts
  whatever an interrupted download left (a study with missing slices, silently). Here a series is downloaded
  into a temporary sibling folder and renamed into place; a folder without its NIfTI is fetched again.
"""

from __future__ import annotations

import glob
import logging
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, TypeVar

import requests
import SimpleITK as sitk
from cachetools import TTLCache
from dicomweb_client import DICOMwebClient
from monailabel.datastore.dicom import DICOMwebClientX, DICOMWebDatastore
from monailabel.datastore.local import LocalDatastore
from monailabel.datastore.utils.convert import binary_to_image
from monailabel.datastore.utils.dicom import dicom_web_download_series, dicom_web_upload_dcm
from pydicom.dataset import Dataset

from lib.dicomweb.seg import EmptyLabel, dcmqi_available, label_to_seg, seg_to_label
from lib.tasks.datastore import AtomicLocalDatastore
from lib.tasks.errors import ClientError
from lib.tasks.ids import check_name, path_under
from lib.tasks.labels import label_names_from_info

logger = logging.getLogger(__name__)

T = TypeVar("T")
FINAL = "final"
_NUMBER_OF_FRAMES = "00280008"


@dataclass(frozen=True)
class DICOMwebConfig:
    """A DICOMweb server as the datastore (configuration ``dicomweb``)."""

    listing_ttl_s: float = 10.0  # the series / DICOM-SEG lists are re-read at most this often
    cache_path: str = ""  # local cache of fetched series and non-final labels ("" = MONAI Label's)
    timeout_s: float = 30.0  # a DICOMweb request that gets no answer this long → 503


class PACSUnavailable(ClientError):
    """The DICOMweb server did not answer (503)."""

    def __init__(self, url: str, error: Exception):
        super().__init__(f"the DICOMweb server {url} is unreachable ({type(error).__name__}); check that it is running "
                         "(python -m lib.dicomweb.orthanc start) and that --studies points at its /dicom-web root",
                         status_code=503)


class _TimeoutAdapter(requests.adapters.HTTPAdapter):
    def __init__(self, timeout_s: float):
        super().__init__()
        self.timeout_s = timeout_s

    def send(self, request, **kwargs):
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = self.timeout_s
        return super().send(request, **kwargs)


def timeout_session(timeout_s: float) -> requests.Session:
    """A session whose requests give up after ``timeout_s`` seconds without an answer (a PACS that hangs)."""
    session = requests.Session()
    adapter = _TimeoutAdapter(timeout_s)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


class OneShotDICOMwebDatastore(DICOMWebDatastore, AtomicLocalDatastore):
    """DICOMweb datastore (see the module's docstring). ``url``: the server's DICOMweb root."""

    def __init__(self, url: str, cache_path: Optional[str] = None, listing_ttl_s: float = 10.0,
                 search_filter: Optional[Dict[str, Any]] = None, client: Optional[DICOMwebClient] = None,
                 timeout_s: float = 30.0):
        if not dcmqi_available():
            logger.warning("itkimage2segimage (pip install dcmqi) not found: saving 'final' labels will fail")
        self._url = url.rstrip("/")
        search_filter = dict(search_filter or {"Modality": "CT"})
        wanted = search_filter.get("Modality", "CT")
        self._modalities = {str(m) for m in (wanted if isinstance(wanted, (list, tuple)) else [wanted])}
        self._series_ok: Dict[str, bool] = {}
        self._seg_refs: Dict[str, Optional[str]] = {}
        # the series list and the SEG index, recomputed at most every listing_ttl_s (cleared on a `final` save)
        self._listings: TTLCache = TTLCache(maxsize=2, ttl=listing_ttl_s)
        self._listings_lock = threading.Lock()
        self._fetch_locks: Dict[str, threading.Lock] = {}  # one fetch of a series at a time (get_image_uri)
        own_client = client is None
        if client is None:
            client = DICOMwebClientX(url=self._url, session=timeout_session(timeout_s))
            # dicomweb-client retries every failure 5 times with 2-16 s back-off: 30 s per call when the PACS
            # is down. One quick retry is enough on loopback; the user gets the 503 at once.
            client.set_http_retry_params(max_attempts=2, wait_exponential_multiplier=250)
        super().__init__(client, search_filter, cache_path)
        if own_client:  # pickled as what opens it again (:meth:`AtomicLocalDatastore.__reduce__`)
            self._opened_with = ((url,), {"cache_path": cache_path, "listing_ttl_s": listing_ttl_s,
                                          "search_filter": search_filter, "timeout_s": timeout_s})
        else:
            self._opened_with = None

    def __reduce__(self):
        if self._opened_with is None:
            raise TypeError("a DICOMweb datastore built on a caller's client does not pickle")
        return super().__reduce__()

    # --- talking to the PACS -------------------------------------------------------------------
    def _call(self, fn: Callable[..., T], *args, **kwargs) -> T:
        try:
            return fn(*args, **kwargs)
        except (requests.ConnectionError, requests.Timeout) as e:
            logger.error(f"DICOMweb server {self._url} unreachable: {e}")
            raise PACSUnavailable(self._url, e) from None

    def _list_series(self) -> List[str]:
        query = {k: v for k, v in self._search_filter.items() if k != "Modality"}
        found = self._call(self._client.search_for_series, search_filters=query or None)
        out = []
        for ds in found:
            meta = Dataset.from_json(ds)
            uid = str(meta.SeriesInstanceUID)
            if uid not in self._series_ok:
                self._series_ok[uid] = self._usable(meta)
            if self._series_ok[uid]:
                out.append(uid)
        return sorted(out)

    def _usable(self, series: Dataset) -> bool:
        uid, study = str(series.SeriesInstanceUID), str(series.StudyInstanceUID)
        what = f"series {uid} ({series.get('SeriesDescription', '')!s})"
        modality = str(series.get("Modality", ""))
        if modality == "SEG":
            return False  # a label (final), not an image
        if modality not in self._modalities:
            logger.warning(f"{what} skipped: modality {modality or 'unknown'}, the app segments {'/'.join(sorted(self._modalities))}")
            return False
        count = int(series.get("NumberOfSeriesRelatedInstances", 0) or 0)
        first = self._call(self._client.search_for_instances, study, uid, fields=[_NUMBER_OF_FRAMES], limit=1)
        frames = int(Dataset.from_json(first[0]).get("NumberOfFrames", 1) or 1) if first else 0
        if frames > 1:
            logger.warning(f"{what} skipped: multi-frame image ({frames} frames); the app reads single-frame CT series")
            return False
        if count == 1 or not first:
            logger.warning(f"{what} skipped: a single image, not a 3D volume")
            return False
        return True

    def _seg_index(self) -> Dict[str, str]:
        """``{image series: newest SEG series}`` over the SEG series on the server."""
        segs = [Dataset.from_json(d) for d in self._call(self._client.search_for_series, search_filters={"Modality": "SEG"})]
        segs.sort(key=lambda s: (str(s.get("SeriesDate", "")), str(s.get("SeriesTime", ""))))
        index = {}
        for seg in segs:
            uid = str(seg.SeriesInstanceUID)
            if uid not in self._seg_refs:
                meta = Dataset.from_json(self._call(self._client.retrieve_series_metadata, str(seg.StudyInstanceUID), uid)[0])
                ref = meta.get("ReferencedSeriesSequence")
                self._seg_refs[uid] = str(ref[0].SeriesInstanceUID) if ref else None
            if self._seg_refs[uid]:
                index[self._seg_refs[uid]] = uid
        return index

    def _cached_listing(self, key: str, compute: Callable[[], T]) -> T:
        with self._listings_lock:
            value = self._listings.get(key)
            if value is None:
                value = self._listings[key] = compute()
            return value

    # --- listing -----------------------------------------------------------------------------
    def list_images(self) -> List[str]:
        return list(self._cached_listing("series", self._list_series))

    def get_labeled_images(self, label_tag: Optional[str] = None, labels: Optional[List[str]] = None) -> List[str]:
        images = self.list_images()
        if label_tag in (None, FINAL):
            segs = self._cached_listing("segs", self._seg_index)
            return [i for i in images if i in segs]
        return [i for i in images if LocalDatastore.get_label_uri(self, i, label_tag)]

    def get_unlabeled_images(self, label_tag: Optional[str] = None, labels: Optional[List[str]] = None) -> List[str]:
        labeled = set(self.get_labeled_images())
        return [i for i in self.list_images() if i not in labeled]

    def status(self) -> Dict[str, Any]:
        """Counts for ``/info``; with the PACS down, zeros and the reason (so viewers can still connect)."""
        try:
            return super().status()
        except PACSUnavailable as e:
            return {"total": 0, "completed": 0, "label_tags": {}, "error": str(e)}

    def refresh(self):
        self._listings.clear()
        super().refresh()

    # --- images and labels -------------------------------------------------------------------
    def get_image_uri(self, image_id: str) -> str:
        """The series as a local NIfTI file in the cache, fetched and converted on first use. One fetch per series
        at a time: a second request for a series being fetched (a read ahead, another viewer) waits for it
        instead of reading the half-written folder."""
        with self._fetch_lock(image_id):
            self._download_series(image_id)
            uri = self._call(super().get_image_uri, image_id)
            # the first fetch answers the converter's temporary file (then copied into the cache); asked again, the
            # datastore answers the cache's copy: one path per study for the callers' caches, the temporary one dropped
            stored = self._call(super().get_image_uri, image_id)
            if uri != stored and os.path.dirname(os.path.realpath(uri)) == os.path.realpath(tempfile.gettempdir()):
                os.unlink(uri)
            return stored

    def _download_series(self, image_id: str) -> None:
        """The series' DICOM files into its cache folder, unless its NIfTI is there already (held: its fetch lock).

        Downloaded into a temporary sibling and renamed into place, so that the folder is never half-written;
        a folder without the NIfTI (a download an older version left unfinished, a conversion that failed) and
        temporary folders of downloads that stopped are replaced.
        """
        images = self._datastore.image_path()
        image_dir = path_under(images, check_name(image_id, "image id"))  # it may be replaced: never outside the cache
        if os.path.exists(os.path.join(images, f"{image_id}.nii.gz")):
            return
        for stale in glob.glob(os.path.join(images, f".{image_id}.*")):
            shutil.rmtree(stale, ignore_errors=True)
        partial = tempfile.mkdtemp(prefix=f".{image_id}.", dir=images)
        try:
            self._call(dicom_web_download_series, None, image_id, partial, self._client, self._fetch_by_frame)
            if os.path.isdir(image_dir):
                logger.warning(f"series {image_id}: its cache folder has no NIfTI (a fetch that did not finish): fetched again")
                shutil.rmtree(image_dir)
            try:
                os.rename(partial, image_dir)
            except OSError:
                if not os.path.isdir(image_dir):
                    raise
                # another process sharing the cache (a torchrun rank, a second server) put the series there meanwhile
        finally:
            shutil.rmtree(partial, ignore_errors=True)

    def _fetch_lock(self, image_id: str) -> threading.Lock:
        with self._listings_lock:
            return self._fetch_locks.setdefault(image_id, threading.Lock())

    def get_label_uri(self, label_id: str, label_tag: str, image_id: str = "") -> str:
        """The label of image ``label_id`` under ``label_tag`` (a local path; ``""`` when none)."""
        if label_tag != FINAL:
            return LocalDatastore.get_label_uri(self, label_id, label_tag)
        seg = self._cached_listing("segs", self._seg_index).get(label_id)
        if not seg:
            return ""
        local = LocalDatastore.get_label_uri(self, label_id, FINAL)
        if local and self.get_label_info(label_id, FINAL).get("SeriesInstanceUID") == seg:
            return local
        return self._fetch_seg(label_id, seg)

    def _fetch_seg(self, image_id: str, seg_uid: str) -> str:
        image = self.get_image_uri(image_id)
        seg_dir = os.path.join(self._datastore.label_path(FINAL), seg_uid)
        shutil.rmtree(seg_dir, ignore_errors=True)
        self._call(dicom_web_download_series, None, seg_uid, seg_dir, self._client)
        files = sorted(os.listdir(seg_dir))
        label, names = seg_to_label(os.path.join(seg_dir, files[0]), image)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, f"{image_id}.nii.gz")
            sitk.WriteImage(label, path, True)
            AtomicLocalDatastore.save_label(self, image_id, path, FINAL, {"SeriesInstanceUID": seg_uid, "label_names": names})
        shutil.rmtree(seg_dir, ignore_errors=True)
        return LocalDatastore.get_label_uri(self, image_id, FINAL)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: Dict[str, Any],
                   label_id: str = "") -> str:
        image = self.get_image_uri(image_id)  # fetches the series into the cache (and registers it)
        label_info = dict(label_info or {})
        converted = ""
        if label_filename.endswith(".bin"):
            converted = label_filename = binary_to_image(image, label_filename)
        try:
            if label_tag == FINAL:
                series_dir = os.path.join(self._datastore.image_path(), image_id)
                try:
                    seg_file = label_to_seg(label_filename, series_dir, label_names_from_info(label_info))
                except EmptyLabel as e:
                    raise ClientError(f"{e}; paint at least one structure") from None
                try:
                    label_info["SeriesInstanceUID"] = self._call(dicom_web_upload_dcm, seg_file, self._client)
                finally:
                    os.unlink(seg_file)
                self._listings.pop("segs", None)
            return AtomicLocalDatastore.save_label(self, image_id, label_filename, label_tag, label_info)
        finally:
            if converted:
                os.unlink(converted)

    def add_image(self, image_id: str, image_filename: str, image_info: Dict[str, Any]) -> str:
        raise ClientError(f"images live on the DICOMweb server {self._url}: store the series there (STOW-RS, "
                          "scripts/load_dicom.py), not through this server", status_code=405)

    def remove_image(self, image_id: str) -> None:
        raise ClientError(f"images live on the DICOMweb server {self._url}: remove the series there", status_code=405)

    def datalist(self, full_path=True) -> List[Dict[str, Any]]:
        for image_id in self.get_labeled_images():
            self.get_label_uri(image_id, FINAL)
        return LocalDatastore.datalist(self, full_path)
