"""The app on a real DICOMweb server (Orthanc from Debian's packages), through the real MONAI Label server.

Round trip: NIfTI → CT series → STOW to Orthanc → the app lists the series → fetches it on first use →
``points_geos`` → a ``final`` label saved as DICOM-SEG on Orthanc → read back by a fresh cache, equal.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import requests
from conftest import save_nifti, sphere_volume
from dicomweb_client import DICOMwebClient
from pydicom.uid import generate_uid

from lib.dicomweb.convert import nifti_to_ct_series, voxel_order_as_read_back
from lib.dicomweb.upload import upload_study
from lib.evaluation.metrics import dice
from lib.tasks.datastore_dicomweb import OneShotDICOMwebDatastore

pytestmark = pytest.mark.e2e  # starts real servers


def _nifti_from_series(series_dir) -> nib.Nifti1Image:
    """The series as MONAI Label reads it (ITK/GDCM), as NIfTI."""
    from monailabel.datastore.utils.convert import dicom_to_nifti

    path = dicom_to_nifti(str(series_dir))  # a temporary file
    image = nib.load(path)
    image = nib.Nifti1Image(np.asarray(image.dataobj), image.affine)
    os.unlink(path)
    return image


def test_ct_series_keeps_voxels_geometry_and_hounsfield_units(tmp_path):
    image, _ = sphere_volume(shape=(20, 16, 12))
    image[0, 0, 0], image[1, 0, 0] = -1024, 2500
    affine = np.array([[-0.8, 0, 0, 120.0], [0, 0.7, 0, -40.0], [0, 0, 2.5, 33.0], [0, 0, 0, 1]])
    src = tmp_path / "case.nii.gz"
    nib.save(nib.Nifti1Image(image, affine), str(src))
    uids = nifti_to_ct_series(src, tmp_path / "dcm")
    files = sorted((tmp_path / "dcm").glob("*.dcm"))
    assert len(files) == 12
    ds = pydicom.dcmread(files[0])
    assert ds.Modality == "CT" and ds.SeriesInstanceUID == uids.series and ds.RescaleType == "HU"
    assert ds.Rows == 16 and ds.Columns == 20 and [float(v) for v in ds.PixelSpacing] == [0.7, 0.8]

    back = _nifti_from_series(tmp_path / "dcm")
    assert back.shape == image.shape
    # a left-handed grid (x flipped) comes back with k reversed, at the same physical positions
    flipped = affine.copy()
    flipped[:3, 2], flipped[:3, 3] = -affine[:3, 2], affine[:3, 3] + 11 * affine[:3, 2]
    np.testing.assert_array_equal(np.asarray(back.dataobj), voxel_order_as_read_back(image, affine))
    np.testing.assert_allclose(back.affine, flipped, atol=1e-4)
    # a right-handed grid comes back voxel for voxel
    nib.save(nib.Nifti1Image(image, np.diag([0.8, 0.7, 2.5, 1.0])), str(src))
    nifti_to_ct_series(src, tmp_path / "rh")
    back = _nifti_from_series(tmp_path / "rh")
    np.testing.assert_array_equal(np.asarray(back.dataobj), image)
    np.testing.assert_allclose(back.affine, np.diag([0.8, 0.7, 2.5, 1.0]), atol=1e-4)
    # the same study converts to the same UIDs (uploading twice is idempotent)
    assert nifti_to_ct_series(src, tmp_path / "again").series == uids.series


def _extra_series(client: DICOMwebClient, study_uid: str, frames: int, count: int, modality: str = "CT") -> str:
    """Store a small series of ``count`` images with ``frames`` frames each; returns its UID."""
    series = generate_uid()
    datasets = []
    for n in range(count):
        ds = pydicom.Dataset()
        ds.file_meta = pydicom.dataset.FileMetaDataset()
        multi = frames > 1
        ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1" if multi else "1.2.840.10008.5.1.4.1.1.2"
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = study_uid, series, modality
        ds.PatientID, ds.SeriesDescription, ds.InstanceNumber = "extra", f"{frames} frames x {count}", n + 1
        ds.Rows = ds.Columns = 8
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        if multi:
            ds.NumberOfFrames = frames
        ds.PixelData = np.zeros((frames, 8, 8), np.int16).tobytes()
        ds.is_little_endian, ds.is_implicit_VR = True, False
        datasets.append(ds)
    client.store_instances(datasets)
    return series


@pytest.fixture(scope="module")
def pacs_cohort(orthanc, real_cohort):
    """The real sample cohort (subject A + pseudo_01) on Orthanc; ``{study id: SeriesInstanceUID}``."""
    client = DICOMwebClient(url=orthanc.url)
    t0 = time.perf_counter()
    mapping = {p.name.split(".")[0]: upload_study(client, p)[0] for p in sorted((real_cohort / "studies").glob("*.nii.gz"))}
    print(f"\nupload of {len(mapping)} studies: {time.perf_counter() - t0:.2f} s")
    assert upload_study(client, real_cohort / "studies" / "subject_a.nii.gz")[1] is False  # idempotent
    return mapping


def test_round_trip_through_the_app(orthanc, pacs_cohort, real_cohort, server_factory, tmp_path):
    client = DICOMwebClient(url=orthanc.url)
    study_uid = client.search_for_series(search_filters={"SeriesInstanceUID": pacs_cohort["subject_a"]})[0]["0020000D"]["Value"][0]
    multi = _extra_series(client, study_uid, frames=4, count=1)
    single = _extra_series(client, study_uid, frames=1, count=1)
    mr = _extra_series(client, study_uid, frames=1, count=3, modality="MR")

    server = server_factory(orthanc.url, {"dicomweb.cache_path": str(tmp_path / "cache"), "dicomweb.listing_ttl_s": "1"})
    ml = server.client()
    timings = {}

    # list: the two CT volumes; the multi-frame, single-image and MR series are skipped with a message
    t0 = time.perf_counter()
    stats = ml.info()["datastore"]
    timings["list"] = time.perf_counter() - t0
    assert stats["total"] == 2 and stats["completed"] == 0
    log = server.log.read_text()
    assert f"series {multi}" in log and "multi-frame image (4 frames)" in log
    assert f"series {single}" in log and "a single image, not a 3D volume" in log
    assert f"series {mr}" in log and "modality MR" in log

    # infer: points_geos on subject A's series (fetched from Orthanc on first use), a click in the liver
    series = pacs_cohort["subject_a"]
    truth = np.asarray(nib.load(str(real_cohort / "ground_truth" / "subject_a.nii.gz")).dataobj).astype(np.int64)
    names = json.loads((real_cohort / "ground_truth" / "labels.json").read_text())
    liver = np.argwhere(truth == names["liver"])
    click = liver[np.argmin(np.linalg.norm(liver - liver.mean(0), axis=1))].tolist()
    t0 = time.perf_counter()
    result, _ = ml.infer("points_geos", series, {"foreground": [click], "background": [], "result_extension": ".nii.gz"})
    timings["fetch+infer"] = time.perf_counter() - t0
    mask = np.asarray(nib.load(result).dataobj) > 0
    assert mask.shape == truth.shape and mask[tuple(click)] and mask.sum() > 50
    assert (truth[mask] == names["liver"]).mean() > 0.8

    # save final: stored on Orthanc as DICOM-SEG that references the image series
    final = truth.copy()
    final[final == names["spleen"]] = 0  # ids need not be consecutive: 1, 3..7
    label_file = save_nifti(final.astype(np.uint8), tmp_path / "final.nii.gz")
    nib.save(nib.Nifti1Image(final.astype(np.uint8), nib.load(result).affine), str(label_file))
    label_info = [{"name": n, "idx": i} for n, i in names.items() if n != "spleen"]
    t0 = time.perf_counter()
    ml.save_label(series, str(label_file), tag="final", params={"label_info": label_info})
    timings["save final (SEG + STOW)"] = time.perf_counter() - t0
    segs = client.search_for_series(search_filters={"Modality": "SEG"})
    assert len(segs) == 1
    seg_meta = client.retrieve_series_metadata(segs[0]["0020000D"]["Value"][0], segs[0]["0020000E"]["Value"][0])[0]
    assert seg_meta["00081115"]["Value"][0]["0020000E"]["Value"] == [series]  # ReferencedSeriesSequence
    assert ml.info()["datastore"]["completed"] == 1

    # correction mode on a DICOMweb study: a click is looked up against the study's final (its DICOM-SEG)
    result, body = ml.infer("points_geos", series, {"foreground": [click], "selected_label_name": "liver"})
    assert body["correction"]["from"] == "final"
    assert dice(np.asarray(nib.load(result).dataobj) > 0, final == names["liver"]) > 0.95  # the click agrees with it

    # a support annotation (tag scribbles) stays in the local cache, as drafts do; no new SEG
    scribbles = np.zeros_like(final, dtype=np.uint8)
    scribbles[tuple(click)] = 1
    scribble_file = tmp_path / "scribbles.nii.gz"
    nib.save(nib.Nifti1Image(scribbles, nib.load(result).affine), str(scribble_file))
    ml.save_label(series, str(scribble_file), tag="scribbles", params={"label_info": [{"name": "liver", "id": 1}]})
    assert len(client.search_for_series(search_filters={"Modality": "SEG"})) == 1
    assert ml.info()["datastore"]["label_tags"] == {"final": 1, "scribbles": 1}

    # read back: a fresh cache gets the SEG from Orthanc, on the image's grid, with the saved ids
    fresh = OneShotDICOMwebDatastore(orthanc.url, cache_path=str(tmp_path / "fresh"))
    assert fresh.get_labeled_images() == [series]
    assert fresh.get_labeled_images("scribbles") == []
    t0 = time.perf_counter()
    uri = fresh.get_label_uri(series, "final")
    timings["read back final"] = time.perf_counter() - t0
    np.testing.assert_array_equal(np.asarray(nib.load(uri).dataobj), final)
    assert fresh.get_label_info(series, "final")["label_names"] == {n: i for n, i in names.items() if n != "spleen"}
    fresh.close()
    print("\n" + "\n".join(f"{k}: {v:.2f} s" for k, v in timings.items()))


def test_pacs_down_answers_503_and_recovers(orthanc, pacs_cohort, server_factory, tmp_path):
    server = server_factory(orthanc.url, {"dicomweb.cache_path": str(tmp_path / "cache"), "dicomweb.listing_ttl_s": "0"})
    ml = server.client()
    series = pacs_cohort["pseudo_01"]
    assert ml.info()["datastore"]["total"] >= 2
    orthanc.stop()
    try:
        info = ml.info()  # viewers can still connect and see the reason
        assert info["datastore"]["total"] == 0 and "unreachable" in info["datastore"]["error"]
        for method, path, kwargs in [
            ("post", f"/infer/points_geos?image={series}", {"data": {"params": json.dumps({"foreground": [[60, 50, 50]]})}}),
            ("get", "/proxy/dicom/qido/studies", {}),  # OHIF's study list
            ("post", "/activelearning/first", {"json": {}}),
        ]:
            r = getattr(requests, method)(server.url + path, timeout=30, **kwargs)
            assert r.status_code == 503, (path, r.status_code, r.text)
            assert orthanc.url in r.json()["detail"] and "orthanc start" in r.json()["detail"]
        assert server.proc.poll() is None  # still serving
        assert "Traceback" not in server.log.read_text()
    finally:
        orthanc.start()
    assert ml.info()["datastore"]["total"] >= 2


def test_hung_pacs_times_out_with_503_and_the_server_stays_responsive(orthanc, pacs_cohort, server_factory, tmp_path):
    """Orthanc frozen (SIGSTOP): DICOMweb calls give up after ``dicomweb.timeout_s``; other requests are served."""
    import os
    import signal
    import threading

    server = server_factory(orthanc.url, {"dicomweb.cache_path": str(tmp_path / "cache"), "dicomweb.listing_ttl_s": "0",
                                          "dicomweb.timeout_s": "3"})
    pid = int((orthanc.storage / "orthanc.pid").read_text())
    os.kill(pid, signal.SIGSTOP)
    try:
        results = {}

        def study_list():  # OHIF's study list, through our proxy
            results["proxy"] = requests.get(server.url + "/proxy/dicom/qido/studies", timeout=60)

        t = threading.Thread(target=study_list)
        t0 = time.perf_counter()
        t.start()
        time.sleep(0.5)
        # meanwhile the server answers what does not need the PACS (MONAI Label's proxy froze it)
        r = requests.get(server.url + "/ohif/app-config.js", timeout=5)
        assert r.status_code == 200
        t.join()
        assert results["proxy"].status_code == 503 and "unreachable" in results["proxy"].json()["detail"]
        assert time.perf_counter() - t0 < 20
        r = requests.post(server.url + "/activelearning/first", json={}, timeout=60)
        assert r.status_code == 503
    finally:
        os.kill(pid, signal.SIGCONT)
    assert server.proc.poll() is None


def test_ohif_opening_a_series_reads_it_ahead(orthanc, pacs_cohort, server_factory, tmp_path):
    """OHIF asks for a series' metadata through ``/proxy/dicom`` when it opens it: the server fetches the series
    from the PACS and reads it meanwhile, so the first click does not wait for either."""
    cache = tmp_path / "cache"
    server = server_factory(orthanc.url, {"dicomweb.cache_path": str(cache)})
    ml = server.client()
    click = {"foreground": [[61, 50, 56]], "background": []}
    series = pacs_cohort["pseudo_01"]
    study = DICOMwebClient(url=orthanc.url).search_for_series(
        search_filters={"SeriesInstanceUID": series})[0]["0020000D"]["Value"][0]

    r = requests.get(f"{server.url}/proxy/dicom/wado/studies/{study}/series/{series}/metadata", timeout=60)
    assert r.status_code == 200 and len(r.json()) > 1  # OHIF gets its answer as before
    deadline = time.monotonic() + 120
    while not list(cache.rglob(f"{series}.nii.gz")):  # fetched from Orthanc and converted in the background
        assert time.monotonic() < deadline, "the series was not fetched ahead"
        time.sleep(0.2)
    time.sleep(1.0)  # ... and read (a read still under way would be waited for)
    _, body = ml.infer("points_geos", series, click)
    assert body["image"]["from"] == "prefetched", body["image"]

    # a series nobody opened: fetched and read by the request itself
    _, body = ml.infer("points_geos", pacs_cohort["subject_a"], click)
    assert body["image"]["from"] == "read", body["image"]


def test_a_fetch_that_stopped_midway_is_fetched_again(orthanc, pacs_cohort, tmp_path):
    """MONAI Label downloads a series into its cache folder in place and converts whatever it finds there: a server
    stopped mid-download would later serve a study with missing slices. The folder now appears only complete."""
    series = pacs_cohort["pseudo_01"]
    ds = OneShotDICOMwebDatastore(orthanc.url, cache_path=str(tmp_path / "cache"))
    full = nib.load(ds.get_image_uri(series))
    images = Path(ds._datastore.image_path())
    folder = images / series
    dicoms = sorted(folder.glob("*.dcm"))
    assert len(dicoms) == full.shape[2] > 3
    # what an interrupted fetch leaves: 3 of the series' files, no NIfTI, and a download's temporary folder
    (images / f"{series}.nii.gz").unlink()
    for f in dicoms[3:]:
        f.unlink()
    (images / f".{series}.killed").mkdir()
    (images / f".{series}.killed" / "x.dcm").write_bytes(b"partial")
    ds.close()

    again = OneShotDICOMwebDatastore(orthanc.url, cache_path=str(tmp_path / "cache"))
    image = nib.load(again.get_image_uri(series))
    assert image.shape == full.shape
    np.testing.assert_array_equal(np.asarray(image.dataobj), np.asarray(full.dataobj))
    assert len(list(folder.glob("*.dcm"))) == full.shape[2]
    assert not list(images.glob(f".{series}.*"))  # no temporary folder left
    again.close()
