#!/usr/bin/env python
"""Build the development set: real, varied scans with label maps; idempotent and cached.

    python sample-data/build_devset.py [--out sample-data/devset] [--small] [--force]

From the PyPI source archives of ``totalsegmentator==2.18.0`` (subject A's CT and another subject's
abdominal MR) and ``pyradiomics==3.0.1`` (two chest CTs, two brain MRs), plus subject A and the MR
re-acquired as clinical scans differ (orientation, voxel size, slabs, noise; ``configs/devset.yaml``).
Writes ``<out>/studies/<id>`` (the images), ``<out>/ground_truth/<id>.nii.gz`` (evaluation only),
``<out>/scribbles/<id>.nii.gz`` (simulated support scribbles of ``subject_a`` and ``mr_b``, with
``label_info.json``) and ``<out>/manifest.json`` (per study: modality, region, orientation, spacing,
shape, labels, what it was derived from, licence). ``--small``: without the large copies (CI).
Provenance and licences: ``sample-data/README.md``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from lib.atomic import atomic_directory
from lib.config import from_section, load_yaml
from lib.data.labels import BACKGROUND, label_info, reduce_labels
from lib.data.reacquire import reacquire
from lib.data.scribbles import ScribbleConfig, simulate_scribbles
from lib.data.sdist import fetch_members
from lib.frame import axcodes, world_affine
from lib.io import image_like, to_array

HERE = Path(__file__).resolve().parent

BUILDER_VERSION = 1  # bump when the output of the same settings changes


def describe(img: sitk.Image, labels: dict, **extra) -> dict:
    affine = world_affine(img.GetOrigin(), img.GetSpacing(), img.GetDirection())
    return {"orientation": axcodes(affine), "spacing_mm": [round(s, 4) for s in img.GetSpacing()],
            "shape": list(img.GetSize()), "labels": labels, **extra}


def main(argv: list[str] | None = None) -> int:
    cfg = load_yaml("devset.yaml")
    scribble_cfg = from_section(ScribbleConfig, load_yaml("sample_cohort.yaml")["scribbles"], "scribbles")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=HERE / "devset")
    p.add_argument("--cache", type=Path, default=HERE / "cache")
    p.add_argument("--small", action="store_true", help="leave out the large copies (marked large: true)")
    p.add_argument("--force", action="store_true", help="replace a set built with other settings")
    args = p.parse_args(argv)

    settings = {"builder": BUILDER_VERSION, "config": cfg, "scribbles": repr(scribble_cfg), "small": args.small}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    out: Path = args.out.resolve()
    if (out / "manifest.json").exists() and json.loads((out / "manifest.json").read_text()).get("digest") == digest:
        print(f"development set is up to date: {out}")
        return 0
    if out.exists() and not args.force:
        print(f"error: {out} exists but was built with other settings; pass --force to replace it", file=sys.stderr)
        return 2

    t0 = time.time()
    ts, pr = cfg["sources"]["totalsegmentator"], cfg["sources"]["pyradiomics"]
    ts_files = fetch_members(args.cache, "totalsegmentator", ts["version"],
                             [ts["license"], *ts["subject_a"].values(), *ts["mr_b"].values()])
    pr_files = fetch_members(args.cache, "pyradiomics", pr["version"],
                             [pr["license"], *[f for c in pr["cases"].values() for f in (c["image"], c["label"])]])
    with atomic_directory(out) as tmp:
        studies, truth, scrib = tmp / "studies", tmp / "ground_truth", tmp / "scribbles"
        for d in (studies, truth, scrib):
            d.mkdir(parents=True)
        manifest: dict[str, dict] = {}
        ts_licence = f"Apache-2.0 (TotalSegmentator {ts['version']}, Wasserthal et al.)"
        pr_licence = f"BSD-3-Clause code (pyradiomics {pr['version']}); data provenance not stated"
        infos = {}
        for subject, organ_key, modality in (("subject_a", "ct", "CT"), ("mr_b", "mr", "MR")):
            src = ts[subject]
            image = sitk.ReadImage(str(ts_files[src["image"]]))
            seg = sitk.ReadImage(str(ts_files[src["label"]]))
            reduced, names = reduce_labels(to_array(seg), cfg["organs"][organ_key])
            label = image_like(reduced, image)
            background = len(names) + 1
            scribbles = simulate_scribbles(reduced, to_array(image).astype(np.float32), names, background, scribble_cfg)
            sitk.WriteImage(image_like(scribbles, image), str(scrib / f"{subject}.nii.gz"), True)
            infos[subject] = label_info({**names, BACKGROUND: background})
            sitk.WriteImage(image, str(studies / f"{subject}.nii.gz"), True)
            sitk.WriteImage(label, str(truth / f"{subject}.nii.gz"), True)
            common = {"modality": modality, "region": "abdomen", "source": f"totalsegmentator=={ts['version']}:{src['image']}",
                      "license": ts_licence, "silver_standard": True}
            manifest[subject] = describe(image, names, derived_from=None, operations={}, **common)
            mask = np.isin(reduced, [names[n] for n in cfg["slab_centre"] if n in names])
            centre = image.TransformContinuousIndexToPhysicalPoint([float(x) for x in np.argwhere(mask).mean(axis=0)])
            for n, (case_id, op) in enumerate(cfg["reacquire"].get(subject, {}).items()):
                if op.get("large") and args.small:
                    continue
                print(f"re-acquiring {subject} as {case_id} {op}", flush=True)
                img_c, lab_c = reacquire(image, label, op, np.asarray(centre), cfg["seed"] + n, seg, cfg.get("enhancement"),
                                         modality)
                sitk.WriteImage(img_c, str(studies / f"{case_id}.nii.gz"), True)
                sitk.WriteImage(lab_c, str(truth / f"{case_id}.nii.gz"), True)
                manifest[case_id] = describe(img_c, names, derived_from=subject,
                                             operations={k: v for k, v in op.items() if k != "large"}, **common)
        (scrib / "label_info.json").write_text(json.dumps(infos, indent=2))
        for case_id, case in pr["cases"].items():
            image = sitk.ReadImage(str(pr_files[case["image"]]))
            label = sitk.ReadImage(str(pr_files[case["label"]]))
            ext = "".join(Path(case["image"]).suffixes)
            sitk.WriteImage(image, str(studies / f"{case_id}{ext}"), True)
            mask = (to_array(label) > 0).astype(np.uint8)
            sitk.WriteImage(image_like(mask, image), str(truth / f"{case_id}.nii.gz"), True)
            manifest[case_id] = describe(image, {case["structure"]: 1}, derived_from=None, operations={},
                                         modality=case["modality"], region=case["region"],
                                         source=f"pyradiomics=={pr['version']}:{case['image']}", license=pr_licence,
                                         silver_standard=False)
        for case_id in manifest:
            manifest[case_id]["image"] = next(f.name for f in studies.iterdir() if f.name.split(".")[0] == case_id)
        shutil.copy(ts_files[ts["license"]], tmp / "LICENSE-TotalSegmentator")
        shutil.copy(pr_files[pr["license"]], tmp / "LICENSE-pyradiomics")
        (tmp / "manifest.json").write_text(json.dumps({"digest": digest, **settings, "studies": manifest}, indent=2))
    print(f"built {len(manifest)} studies in {time.time() - t0:.1f} s: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
