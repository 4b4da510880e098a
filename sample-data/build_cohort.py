#!/usr/bin/env python
"""Build the sample cohort (a MONAI Label studies folder) from real CT; idempotent and cached.

    python sample-data/build_cohort.py [--out sample-data/cohort] [--n-pseudo 8] [--seed S] [--force]

1. Downloads the ``totalsegmentator==2.18.0`` *source* archive from PyPI once (``pip download
   --no-binary :all:``) and extracts only subject A's CT, its label map and the LICENSE into
   ``sample-data/cache/`` (the archive itself is then deleted).
2. Writes ``<out>/studies`` (subject A + N deformed pseudo-subjects), ``<out>/ground_truth`` (kept
   outside the studies folder, evaluation only) and registers subject A's simulated scribbles in the
   MONAI Label datastore under label tag ``scribbles``.

The build goes to a temporary folder renamed into place when complete, so an interrupted run leaves
nothing half-written. A cohort built with the same settings is kept as it is (labels saved into it
survive); one built with other settings is replaced only with ``--force``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from lib.atomic import atomic_directory
from lib.config import from_section, load_yaml
from lib.data.cohort import CohortSpec, build_cohort
from lib.data.deform import DeformConfig
from lib.data.scribbles import ScribbleConfig

HERE = Path(__file__).resolve().parent

BUILDER_VERSION = 2  # bump when the output of the same settings changes


def fetch_source(cache: Path, source: dict) -> dict[str, Path]:
    """Subject A's files from the PyPI source archive, downloaded and extracted once into ``cache``."""
    package = source["package"]
    root = cache / package.replace("==", "-")
    wanted = {key: root / source[key] for key in ("image", "label", "license")}
    if all(p.exists() for p in wanted.values()):
        return wanted
    with tempfile.TemporaryDirectory(dir=cache.parent if cache.parent.exists() else None) as tmp:
        print(f"downloading the {package} source archive from PyPI ...", flush=True)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
             "--disable-pip-version-check", package, "-d", tmp],
            check=True,
        )
        archives = list(Path(tmp).glob("*.tar.gz"))
        if len(archives) != 1:
            raise RuntimeError(f"expected one source archive for {package}, got {archives}")
        with tarfile.open(archives[0]) as tar:
            members = {m.name.split("/", 1)[1]: m for m in tar.getmembers() if "/" in m.name}
            for key, rel in (("image", source["image"]), ("label", source["label"]), ("license", source["license"])):
                member = members.get(rel)
                if member is None or not member.isfile():
                    raise RuntimeError(f"{rel} is not in {archives[0].name}")
                wanted[key].parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(member) as src, open(wanted[key], "wb") as dst:
                    shutil.copyfileobj(src, dst)
    return wanted


def register_support(studies: Path, subject_id: str, scribble_file: Path, info: list[dict]) -> None:
    """Save the support scribbles through MONAI Label's datastore, tag ``scribbles``."""
    from monailabel.datastore.local import LocalDatastore

    ds = LocalDatastore(str(studies), extensions=["*.nii.gz", "*.nii"], auto_reload=False)
    ds.save_label(
        subject_id,
        str(scribble_file),
        "scribbles",
        {"label_info": info, "label_names": {d["name"]: d["id"] for d in info}, "source": "simulated"},
    )


def main(argv: list[str] | None = None) -> int:
    cfg = load_yaml("sample_cohort.yaml")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=HERE / "cohort")
    p.add_argument("--cache", type=Path, default=HERE / "cache")
    p.add_argument("--n-pseudo", type=int, default=cfg["n_pseudo"])
    p.add_argument("--seed", type=int, default=cfg["seed"])
    p.add_argument("--force", action="store_true", help="replace a cohort built with other settings")
    args = p.parse_args(argv)

    spec = CohortSpec(
        organs=dict(cfg["organs"]),
        subject_id=cfg["subject_a_id"],
        n_pseudo=args.n_pseudo,
        seed=args.seed,
        deform=DeformConfig.from_cohort_config(cfg["deformation"], cfg["intensity"]),
        scribbles=from_section(ScribbleConfig, cfg["scribbles"], "scribbles"),
    )
    settings = {"builder": BUILDER_VERSION, "source": cfg["source"], "spec": repr(spec)}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]

    out: Path = args.out.resolve()
    manifest = out / "manifest.json"
    if manifest.exists() and json.loads(manifest.read_text()).get("digest") == digest:
        print(f"sample cohort is up to date: {out / 'studies'}")
        return 0
    if out.exists() and not args.force:
        print(f"error: {out} exists but was built with other settings (or not by this script); "
              "pass --force to replace it (labels saved into it are lost) or choose another --out",
              file=sys.stderr)
        return 2

    t0 = time.time()
    args.cache.mkdir(parents=True, exist_ok=True)
    files = fetch_source(args.cache.resolve(), cfg["source"])
    with atomic_directory(out) as tmp:
        summary = build_cohort(files["image"], files["label"], tmp, spec, progress=lambda m: print(m, flush=True))
        info = json.loads((tmp / "scribbles" / "label_info.json").read_text())
        register_support(tmp / "studies", spec.subject_id, tmp / "scribbles" / f"{spec.subject_id}.nii.gz", info)
        shutil.copy(files["license"], tmp / "LICENSE-TotalSegmentator")
        (tmp / "manifest.json").write_text(json.dumps({"digest": digest, **settings, **summary}, indent=2))
    print(f"built {len(summary['studies'])} studies in {time.time() - t0:.1f} s: {out / 'studies'}")
    print(f"support scribbles (voxels): {summary['scribbles']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
