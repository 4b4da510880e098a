#!/usr/bin/env python
"""Load the sample cohort into a DICOMweb server (Orthanc) as CT series, and optionally its support scribbles.

    python scripts/load_dicom.py [--dicomweb http://127.0.0.1:8042/dicom-web] [--studies sample-data/cohort/studies]
    python scripts/load_dicom.py --support-to http://127.0.0.1:8000    # once the app runs on DICOMweb

Each NIfTI study becomes one CT series (``lib/dicomweb/convert.py``); a series already on the server
is skipped. ``--support-to`` saves the sample's support scribbles (``sample-data/cohort/scribbles``)
under label tag ``scribbles`` on the running app, for the study's series, through the MONAI Label
REST API, as Slicer would. Writes ``<studies>/../dicom_series.json`` (study id → SeriesInstanceUID).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from dicomweb_client import DICOMwebClient

from lib.dicomweb.convert import series_uids, voxel_order_as_read_back
from lib.dicomweb.upload import upload_study

ROOT = Path(__file__).resolve().parents[1]


def save_support(server: str, series_uid: str, scribbles: Path, label_info: list, tag: str = "scribbles") -> None:
    """Save ``scribbles`` (on its study's NIfTI grid) for the study's series, in the series' voxel order."""
    import nibabel as nib
    import numpy as np
    from monailabel.client import MONAILabelClient

    img = nib.load(str(scribbles))
    arr = voxel_order_as_read_back(np.asarray(img.dataobj), img.affine)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scribbles.nii.gz"
        nib.save(nib.Nifti1Image(np.ascontiguousarray(arr), img.affine), str(path))
        client = MONAILabelClient(server, tmpdir=tmp)
        client.save_label(series_uid, str(path), tag=tag, params={"label_info": label_info})


def has_label(server: str, image_id: str, tag: str) -> bool:
    from monailabel.client import MONAILabelClient

    with tempfile.TemporaryDirectory() as tmp:
        objects = MONAILabelClient(server, tmpdir=tmp).datastore().get("objects", {})
    return tag in objects.get(image_id, {}).get("labels", {})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dicomweb", default="http://127.0.0.1:8042/dicom-web")
    ap.add_argument("--studies", type=Path, default=ROOT / "sample-data" / "cohort" / "studies")
    ap.add_argument("--scribbles", type=Path, default=ROOT / "sample-data" / "cohort" / "scribbles")
    ap.add_argument("--support-to", default="", help="MONAI Label server to save the support scribbles on")
    ap.add_argument("--skip-upload", action="store_true", help="only look the series up (they are on the server)")
    args = ap.parse_args(argv)

    client = DICOMwebClient(url=args.dicomweb)
    mapping = {}
    for nifti in sorted(args.studies.glob("*.nii.gz")):
        study = nifti.name.split(".")[0]
        if args.skip_upload:
            mapping[study] = series_uids(study).series
            continue
        uid, uploaded = upload_study(client, nifti)
        mapping[study] = uid
        print(f"{nifti.name}: series {uid} ({'uploaded' if uploaded else 'already on the server'})")
    if not args.skip_upload:
        out = args.studies.parent / "dicom_series.json"
        out.write_text(json.dumps(mapping, indent=2))
        print(f"wrote {out}")

    if args.support_to:
        info = json.loads((args.scribbles / "label_info.json").read_text())
        for label in sorted(args.scribbles.glob("*.nii.gz")):
            study = label.name.split(".")[0]
            if has_label(args.support_to, mapping[study], "scribbles"):
                print(f"support scribbles of {study} already on {args.support_to}")
                continue
            save_support(args.support_to, mapping[study], label, info["label_info"] if isinstance(info, dict) else info)
            print(f"support scribbles of {study} saved on {args.support_to} (series {mapping[study]}, tag scribbles)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
