#!/usr/bin/env python
"""Round-trip timings of the app on a DICOMweb server (Orthanc) vs the same app on the NIfTI folder.

    .venv/bin/python scripts/bench_dicomweb.py [--repeats 5]     # after scripts/start_ohif.sh or test.sh set-up

Per repeat, on a fresh Orthanc and a fresh app cache, for subject A of the sample cohort (122×101×112,
3 mm): convert + STOW the series; the app's first listing (QIDO + series checks); the first
``points_geos`` (fetches the series, converts it to NIfTI, segments); the first ``points_geos`` on a second series
(``pseudo_01``) ``--think-s`` after OHIF opened it (its metadata through ``/proxy/dicom``: the server fetches and
reads it meanwhile); a second ``points_geos`` (cached);
saving a ``final`` label (DICOM-SEG by dcmqi + STOW); reading it back into a fresh cache (QIDO + WADO +
SEG → label on the image grid). The same click and label on the local NIfTI datastore are the baseline.
Medians over ``--repeats``; writes ``benchmarks-out/dicomweb.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
from dicomweb_client import DICOMwebClient

from lib.atomic import atomic_write_json, atomic_write_text
from lib.dicomweb.orthanc import Orthanc
from lib.dicomweb.upload import upload_study
from lib.tasks.datastore_dicomweb import OneShotDICOMwebDatastore
from lib.workflow.server import free_port, start_server, stop_server

REPO = Path(__file__).resolve().parents[1]

COHORT = REPO / "sample-data" / "cohort"


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t0


def one_run(work: Path, click: list[int], final: Path, label_info: list, think_s: float) -> dict[str, float]:
    t: dict[str, float] = {}
    pacs = Orthanc(work / "orthanc", free_port()).start()
    try:
        (series, _), t["convert + STOW (112 slices)"] = timed(upload_study, DICOMwebClient(url=pacs.url),
                                                            COHORT / "studies" / "subject_a.nii.gz")
        lister = OneShotDICOMwebDatastore(pacs.url, cache_path=str(work / "list"))
        _, t["first listing (QIDO + series checks)"] = timed(lister.list_images)
        lister.close()
        opened, _ = upload_study(DICOMwebClient(url=pacs.url), COHORT / "studies" / "pseudo_01.nii.gz")
        server = start_server(pacs.url, work / "app", {"dicomweb.cache_path": str(work / "cache")})  # type: ignore[arg-type]
        try:
            ml = server.client()
            params = {"foreground": [click], "background": []}
            _, t["points_geos, first (fetch + convert + GeoS)"] = timed(ml.infer, "points_geos", series, params)
            # OHIF opens a series (its metadata through /proxy/dicom), the annotator clicks think_s later
            study = DICOMwebClient(url=pacs.url).search_for_series(
                search_filters={"SeriesInstanceUID": opened})[0]["0020000D"]["Value"][0]
            with urllib.request.urlopen(f"{server.url}/proxy/dicom/wado/studies/{study}/series/{opened}/metadata",
                                        timeout=60) as r:
                r.read()
            time.sleep(think_s)
            (_, body), t[f"second series: points_geos, first, {think_s:g} s after OHIF opened it"] = timed(
                ml.infer, "points_geos", opened, params)
            assert body["image"]["from"] == "prefetched", body["image"]
            _, t["second series: points_geos, again (cached)"] = timed(ml.infer, "points_geos", opened, params)
            _, t["points_geos, cached"] = timed(ml.infer, "points_geos", series, params)
            _, t["save final (DICOM-SEG + STOW)"] = timed(ml.save_label, series, str(final), tag="final",
                                                          params={"label_info": label_info})
        finally:
            stop_server(server)
        fresh = OneShotDICOMwebDatastore(pacs.url, cache_path=str(work / "fresh"))
        fresh.get_image_uri(series)
        _, t["read final back (QIDO + WADO + SEG → label)"] = timed(fresh.get_label_uri, series, "final")
        fresh.close()
    finally:
        pacs.stop()
    return t


def local_run(work: Path, click: list[int], final: Path, label_info: list) -> dict[str, float]:
    studies = work / "studies"
    studies.mkdir(parents=True)
    shutil.copy(COHORT / "studies" / "subject_a.nii.gz", studies)
    server = start_server(studies, work / "app")
    try:
        ml = server.client()
        t = {}
        params = {"foreground": [click], "background": []}
        _, t["points_geos, first (fetch + convert + GeoS)"] = timed(ml.infer, "points_geos", "subject_a", params)
        _, t["points_geos, cached"] = timed(ml.infer, "points_geos", "subject_a", params)
        _, t["save final (DICOM-SEG + STOW)"] = timed(ml.save_label, "subject_a", str(final), tag="final",
                                                      params={"label_info": label_info})
        return t
    finally:
        stop_server(server)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--think-s", type=float, default=2.0, help="seconds from OHIF opening a series to the first click")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks-out")
    args = ap.parse_args(argv)
    truth_img = nib.load(str(COHORT / "ground_truth" / "subject_a.nii.gz"))
    truth = np.asarray(truth_img.dataobj).astype(np.uint8)
    names = json.loads((COHORT / "ground_truth" / "labels.json").read_text())
    liver = np.argwhere(truth == names["liver"])
    click = liver[np.argmin(np.linalg.norm(liver - liver.mean(0), axis=1))].tolist()
    label_info = [{"name": n, "idx": i} for n, i in names.items()]

    dicomweb, local = [], []
    with tempfile.TemporaryDirectory() as tmp:
        final = Path(tmp) / "final.nii.gz"
        nib.save(nib.Nifti1Image(truth, truth_img.affine), str(final))
        for r in range(args.repeats):
            dicomweb.append(one_run(Path(tmp) / f"dw{r}", click, final, label_info, args.think_s))
            local.append(local_run(Path(tmp) / f"local{r}", click, final, label_info))
            print(f"repeat {r + 1}/{args.repeats}: {json.dumps({k: round(v, 3) for k, v in dicomweb[-1].items()})}")

    med = lambda runs, k: statistics.median(run[k] for run in runs) if k in runs[0] else None  # noqa: E731
    rows = ["| step | DICOMweb (Orthanc) s | local NIfTI folder s | ratio |", "|---|---|---|---|"]
    for k in dicomweb[0]:
        d, lo = med(dicomweb, k), med(local, k)
        rows.append(f"| {k} | {d:.3f} | {'' if lo is None else f'{lo:.3f}'} | {'' if lo is None else f'{d / lo:.2f}×'} |")
    machine = f"{platform.machine()}, {platform.processor() or 'cpu'}, Python {platform.python_version()}"
    text = (f"# DICOMweb round trip (median of {args.repeats}; {machine})\n\n"
            "Subject A of the sample cohort (122×101×112 voxels, 3 mm), one click in the liver, its 7-organ "
            "label as `final`. Local column: the same app on the NIfTI folder (no conversion, label saved "
            "as NIfTI).\n\n" + "\n".join(rows) + "\n")
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / "dicomweb.md", text)
    atomic_write_json(args.out / "dicomweb.json", {"dicomweb": dicomweb, "local": local})
    return 0


if __name__ == "__main__":
    sys.exit(main())
