#!/usr/bin/env python
"""PRNet drafts under each pseudo-mask GeoS setting, in process: the development set's CT copies of subject A and
the sample cohort, the same propagated points for every setting.

    .venv/bin/python scripts/bench_pseudo_masks.py [--model prnet.pt | --train-on cohort|devset] [--train-steps 200]
        [--tau 0.5] [--sections geos dfd noise] [--out benchmarks-out]

Each study is propagated once with the app's ``prnet.propagation`` settings (support: subject A's scribbles, the
app's strides); its DFD-kept points (``--tau``) are then grown into a draft with each setting of ``SETTINGS``
(``prnet.prelabel.geos`` as configured, and the variants compared with it): section ``geos``. Section ``dfd``:
the configured GeoS from the points DFD keeps at each threshold of ``TAUS`` (and from every point inside the
study, DFD off), the same propagated points. Section ``agreement``: the drafts of copies of a_copy that share its
canonical grid against a_copy's draft, as run and with the kept points or the image swapped (which of the two makes
them differ). Section ``noise``: how much noise costs the drafts, and which
filter of ``NOISE_SETTINGS`` costs least, over several draws (the development set's noisy copy is one draw):
studies of ``NOISY`` with Gaussian noise of σ HU added to their canonical image (3 mm studies: the stored
voxels), grown from the clean study's kept points. Section ``slabs``: each sample-cohort study (a warp of subject A:
another anatomy) re-acquired as the development set's upper-abdomen contrast slab (``configs/devset.yaml``
``a_contrast_slab``: portal-venous contrast, L-A-S, 1 × 1 × 2 mm, 20 slices, noise), propagated once, drafted with
the support points that land within each ``FACES`` mm of a face placed on it (``prnet.propagation.face_mm``), and
the full study's draft seen on the slab. Scored on the study's own grid against its label map, per organ
in its field of view (TotalSegmentator's output, a silver standard; every study is subject A re-acquired or
warped, so the copies measure geometry, resolution, noise and contrast handling, not accuracy on another
patient). Without ``--model`` a PRNet is trained first with the app's trainer on the sample cohort's
studies, or (``--train-on devset``) on the development set's CT studies of subject A (``--train-steps``).
Minutes: ≈ 25 s a study to propagate on 2 cores, 3 s a study and row (≈ 30 min in all with the four sections).
Prints a Markdown table and writes it to ``<out>/bench_pseudo_masks.md``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lib.atomic import atomic_write_text  # noqa: E402
from lib.config import load_yaml  # noqa: E402
from lib.data.reacquire import reacquire  # noqa: E402
from lib.evaluation.metrics import dice, dice_per_organ  # noqa: E402
from lib.evaluation.tables import machine, md_table  # noqa: E402
from lib.data.studyset import StudySet  # noqa: E402
from lib.geos import GeoSConfig, noise_sd  # noqa: E402
from lib.intensity import normalize_intensity, study_window  # noqa: E402
from lib.io import image_like, read_volume, to_array  # noqa: E402
from lib.prnet.prelabel import Prelabel, prelabel, pseudo_mask  # noqa: E402
from lib.settings import app_settings  # noqa: E402

DEVSET = REPO / "sample-data" / "devset"
COHORT = REPO / "sample-data" / "cohort"
COPIES = ["a_copy", "a_lps", "a_08x08x5", "a_07x07x15", "a_slab20", "a_slab40", "a_noise", "a_clinical", "a_oblique",
          "a_contrast", "a_contrast_slab"]
COHORT_STUDIES = [f"pseudo_0{i}" for i in range(1, 9)]
# name -> GeoSConfig changes against the configured pseudo-mask settings
SETTINGS: dict[str, dict] = {
    "β 1.5, 9 mm median on every study": dict(intensity_weight=1.5, median_filter_mm=9.0, gaussian_sigma_mm=0.0,
                                               denoise_min_noise=0.0),
    "β 0, 9 mm median on every study": dict(median_filter_mm=9.0, gaussian_sigma_mm=0.0, denoise_min_noise=0.0),
    "β 0, no filter": dict(gaussian_sigma_mm=0.0),
    "β 0, 9 mm median on noisy studies (before)": dict(median_filter_mm=9.0, gaussian_sigma_mm=0.0),
    "β 0, Gaussian σ 1.5 mm on noisy studies": dict(gaussian_sigma_mm=1.5),
    "β 0, Gaussian σ 3 mm on noisy studies": dict(gaussian_sigma_mm=3.0),
    "configured (β 0, Gaussian σ 2 mm on noisy studies)": {},
}

# section noise: study -> (σ HU, seed) of each noisy draw; rows: pseudo-mask settings of a noisy study
NOISY: dict[str, list[tuple[float, int]]] = {"a_copy": [(25, 0), (25, 1), (40, 0), (40, 1), (60, 0), (60, 1)],
                                             **{f"pseudo_0{i}": [(40, 0)] for i in range(1, 5)}, "a_contrast": [(40, 0)]}
NOISE_SETTINGS: dict[str, dict] = {
    "no filter": dict(gaussian_sigma_mm=0.0),
    "Gaussian σ 1 mm": dict(gaussian_sigma_mm=1.0),
    "Gaussian σ 1.5 mm": dict(gaussian_sigma_mm=1.5),
    "configured (Gaussian σ 2 mm)": {},
    "Gaussian σ 2.5 mm": dict(gaussian_sigma_mm=2.5),
    "Gaussian σ 3 mm": dict(gaussian_sigma_mm=3.0),
    "9 mm median": dict(gaussian_sigma_mm=0.0, median_filter_mm=9.0),
}

# section agreement: copies of a_copy on its canonical grid (same voxels in world space), their drafts compared with its
AGREEMENT = ["a_lps", "a_07x07x15", "a_08x08x5", "a_noise", "a_contrast"]
TAUS: list[float | None] = [0.5, 0.3, 0.0, None]  # DFD thresholds of section dfd; None: every point inside the study
SLAB_COPY = "a_contrast_slab"  # section slabs: the development set's re-acquisition applied to each cohort study ...
FACES = [0.0, 5.0, 10.0, 15.0]  # ... drafted with the points within this many mm of a face placed on it
PARTIAL = ["a_slab20", "a_slab40", "a_clinical", "a_contrast_slab", "lung1"]  # and the development set's partial views

_STUDIES: dict = {}  # study -> its propagation, canonical image, intensity window and labels (propagate_all)


def propagate_all(model, settings, tau: float, cohort_only: bool = False) -> dict[str, dict]:
    """Every study's propagation (kept points at ``tau``), canonical image, intensity window, voxel noise and labels
    (``cohort_only``: the sample cohort's studies only)."""
    out = {}
    geos = settings.pseudo_mask_geos
    if model.window:
        geos = replace(geos, window_hu=model.window[0], window_out=model.window[1])
    propagation = replace(settings.propagation, tau=tau)
    for root, ids in ((DEVSET, [] if cohort_only else COPIES), (COHORT, COHORT_STUDIES)):
        data = StudySet.open(root)
        support = read_volume(str(data.image("subject_a")))
        scribble_path, info = data.scribbles("subject_a")
        scribbles = np.rint(read_volume(str(scribble_path)).array).astype(np.int64)
        names = {d["name"]: int(d["id"]) for d in info}
        encodings: dict = {}
        for study in ids:
            q = read_volume(str(data.image(study)))
            r = prelabel(model.localizer, support, scribbles, names, q, names["background"], geos, propagation,
                         model.config.spacing_mm, settings.prelabel.sampling, encodings=encodings)
            hu = r.view.image(q.array)
            window = study_window(hu, geos.window_hu, geos.window_out, None)[:2]
            out[study] = {"hu": hu, "view": r.view, "propagation": r.propagation, "names": names, "window": window,
                          "truth": np.rint(read_volume(str(data.truth(study))).array).astype(np.int64),
                          "noise": voxel_noise(hu, window)}
            print(f"propagated {study}", flush=True)
    return out


def draft(study: str, cfg: GeoSConfig, tau: float | None | str = "propagated", points: str | None = None) -> np.ndarray | None:
    """``study``'s draft on its canonical grid, grown with GeoS settings ``cfg`` from the points kept at propagation
    (``tau`` ``"propagated"``), at DFD threshold ``tau``, or every point inside the study (``tau`` None); the kept
    points of study ``points`` instead of its own when given (same canonical grid)."""
    s = _STUDIES[study]
    propagation = dict(_STUDIES[points or study]["propagation"])
    if tau != "propagated":
        propagation = {c: replace(p, keep=p.inside & (True if tau is None else p.sim > tau)) for c, p in propagation.items()}
    result = Prelabel(label=None, propagation=propagation)
    pseudo_mask(result, s["names"]["background"], s["hu"], s["view"].spacing, cfg, window=s["window"])
    return result.label


def score(study: str, cfg: GeoSConfig, tau: float | None | str = "propagated") -> float:
    """The mean Dice of ``study``'s draft (:func:`draft`) against its labels, over the organs in its field of view."""
    s = _STUDIES[study]
    label = draft(study, cfg, tau)
    organs = {n: i for n, i in s["names"].items() if n != "background"}
    label = None if label is None else s["view"].to_native(label)
    per_organ = dice_per_organ(label, s["truth"], organs, present_only=True)
    return float(np.mean(list(per_organ.values())))


def agreement(a: np.ndarray, b: np.ndarray, names: dict[str, int]) -> dict[str, float]:
    """Dice between two drafts on one grid, per organ drafted in either."""
    return {n: dice(a == i, b == i) for n, i in names.items() if n != "background" and ((a == i) | (b == i)).any()}


def voxel_noise(hu: np.ndarray, window) -> float:
    """A canonical image's voxel noise as GeoS's ``denoise_min_noise`` measures it ([0, 1] units)."""
    return noise_sd(normalize_intensity(hu, *window))


def noise_row(studies: list[str]) -> list:
    """The table row of each study's voxel noise in HU-equivalent (the CT window's soft-tissue slope)."""
    return ["voxel noise (HU-equivalent, 0.002 per HU)", *[f"{_STUDIES[s]['noise'] / 0.002:.0f}" for s in studies], "", "", ""]


def noisy_draws() -> dict[str, str]:
    """Adds each draw of ``NOISY`` to the propagated studies (``"<study>+<σ>#<seed>"``: the study's canonical HU
    plus Gaussian noise of σ HU, the same kept points); returns ``{draw: its clean study}``."""
    draws = {}
    for study, params in NOISY.items():
        for sd, seed in params:
            s = dict(_STUDIES[study])
            s["hu"] = (s["hu"] + np.random.default_rng(seed).normal(0.0, sd, s["hu"].shape)).astype(np.float32)
            s["noise"] = voxel_noise(s["hu"], s["window"])
            name = f"{study}+{sd:g}#{seed}"
            _STUDIES[name], draws[name] = s, study
    return draws


def slab_studies(work: Path) -> dict[str, tuple[Path, Path]]:
    """Each cohort study re-acquired as ``configs/devset.yaml``'s ``SLAB_COPY`` (its contrast offsets given to the
    cohort's organ ids through ``organs.ct``; the slab centred on ``slab_centre``'s organs): ``{study: (image,
    ground truth)}`` written under ``work``."""
    import SimpleITK as sitk

    cfg = load_yaml("devset.yaml")
    op = cfg["reacquire"]["subject_a"][SLAB_COPY]
    data = StudySet.open(COHORT)
    names = data.labels(COHORT_STUDIES[0])
    phase = cfg["enhancement"][op["contrast"]]
    offsets = {cid: phase[cfg["organs"]["ct"][n]] for n, cid in names.items() if cfg["organs"]["ct"].get(n) in phase}
    enhancement = {op["contrast"]: offsets, "sigma_vox": cfg["enhancement"]["sigma_vox"]}
    out = {}
    for n, study in enumerate(COHORT_STUDIES):
        image, label = sitk.ReadImage(str(data.image(study))), sitk.ReadImage(str(data.truth(study)))
        organs = np.isin(to_array(label), [names[o] for o in cfg["slab_centre"]])
        centre = image.TransformContinuousIndexToPhysicalPoint([float(x) for x in np.argwhere(organs).mean(axis=0)])
        img, lab = reacquire(image, label, op, np.asarray(centre), cfg["seed"] + n, label, enhancement)
        out[study] = (work / f"{study}_slab.nii.gz", work / f"{study}_slab_truth.nii.gz")
        sitk.WriteImage(img, str(out[study][0]), True)
        sitk.WriteImage(lab, str(out[study][1]), True)
    return out


def slab_rows(model, settings, tau: float, base: GeoSConfig) -> list[list]:
    """Section ``slabs``: per cohort study, the full study's draft (as configured) seen on its slab, the slab's draft and
    confidence with the points within each of ``FACES`` mm of a face placed on it, and its aorta's at 0 and 5 mm; then
    the same for the development set's studies of ``PARTIAL`` (no full study)."""
    import SimpleITK as sitk

    data, devset = StudySet.open(COHORT), StudySet.open(DEVSET)
    support = read_volume(str(data.image("subject_a")))
    scribble_path, info = data.scribbles("subject_a")
    scribbles = np.rint(read_volume(str(scribble_path)).array).astype(np.int64)
    names = {d["name"]: int(d["id"]) for d in info}
    organs = {n: i for n, i in names.items() if n != "background"}
    propagation = replace(settings.propagation, tau=tau, face_mm=max(FACES))
    encodings: dict = {}
    rows = []
    slabs = slab_studies(Path(tempfile.mkdtemp(prefix="bench_slabs_")))
    for study, (image, truth) in [*slabs.items(), *[(s, (devset.image(s), devset.truth(s))) for s in PARTIAL]]:
        q = read_volume(str(image))
        truth_slab = np.rint(read_volume(str(truth)).array).astype(np.int64)
        seen = {}
        if study in slabs:
            full = _STUDIES[study]["view"].to_native(draft(study, base))
            on_slab = sitk.Resample(image_like(full.astype(np.uint8), sitk.ReadImage(str(data.image(study)))),
                                    sitk.ReadImage(str(truth)), sitk.Transform(), sitk.sitkNearestNeighbor, 0)
            seen = dice_per_organ(to_array(on_slab), truth_slab, organs, present_only=True)
        r = prelabel(model.localizer, support, scribbles, names, q, names["background"], base, propagation,
                     model.config.spacing_mm, settings.prelabel.sampling, encodings=encodings)
        hu = r.view.image(q.array)
        window = study_window(hu, base.window_hu, base.window_out, None)[:2]
        means, confidences, aorta = [], [], []
        for f in FACES:
            within = {c: replace(p, inside=p.inside & (p.beyond_mm <= f), keep=p.keep & (p.beyond_mm <= f))
                      for c, p in r.propagation.items()}
            res = pseudo_mask(Prelabel(label=None, propagation=within), names["background"], hu, r.view.spacing, base,
                              window=window)
            per = dice_per_organ(None if res.label is None else r.view.to_native(res.label), truth_slab, organs,
                                 present_only=True)
            means.append(float(np.mean(list(per.values()))))
            confidences.append(res.stats(names)["confidence"])
            aorta.append(per.get("aorta", float("nan")))
        name = f"{study} (slab)" if study in slabs else study
        rows.append([name, float(np.mean(list(seen.values()))) if seen else "", *means, *confidences, aorta[0],
                     aorta[FACES.index(5.0)]])
        print(f"partial view {name}", flush=True)
    columns = np.array([r[1:] for r in rows[:len(slabs)]], float)
    rows[len(slabs):len(slabs)] = [["mean of the cohort's slabs", *columns.mean(axis=0)],
                                   ["lowest of the cohort's slabs", *columns.min(axis=0)]]
    return rows


def train_model(settings, train_on: str, steps: int):
    """A PRNet trained here with the app's trainer (``steps``) on the sample cohort's studies or on the development
    set's CT studies of subject A (itself and its re-acquired copies); returns ``(model, description)``."""
    from lib.prnet.checkpoint import load_prnet
    from lib.tasks.datastore import AtomicLocalDatastore
    from lib.tasks.models import ModelFiles
    from lib.tasks.train_prnet import PRNetTrain

    work = Path(tempfile.mkdtemp(prefix="bench_pseudo_masks_"))
    if train_on == "cohort":
        folder, what = COHORT / "studies", "the sample cohort's 9 studies"
    else:
        folder = work / "studies"
        folder.mkdir()
        manifest = json.loads((DEVSET / "manifest.json").read_text())["studies"]
        ids = [i for i, m in manifest.items() if i == "subject_a" or m.get("derived_from") == "subject_a"]
        for i in ids:
            shutil.copy(DEVSET / "studies" / manifest[i]["image"], folder / manifest[i]["image"])
        what = f"the development set's {len(ids)} CT studies of subject A"
    files = ModelFiles(str(work / "model"), "prnet")
    trainer = PRNetTrain(files, replace(settings.prnet, max_steps=steps, checkpoint_every=50), settings.window)
    trainer({"max_steps": steps}, AtomicLocalDatastore(str(folder), extensions=["*.nii.gz"], auto_reload=False))
    return load_prnet(files.published), f"trained here, {steps} steps on {what}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, help="a published prnet.pt (default: train one, see --train-on)")
    p.add_argument("--train-on", choices=["cohort", "devset"], default="cohort",
                   help="without --model: train on the sample cohort's studies or the development set's CT copies of subject A")
    p.add_argument("--train-steps", type=int, default=200)
    p.add_argument("--tau", type=float, default=0.5)
    p.add_argument("--sections", nargs="+", choices=["geos", "dfd", "noise", "agreement", "slabs"],
                   default=["geos", "dfd", "noise", "agreement"])
    p.add_argument("--out", type=Path, default=REPO / "benchmarks-out")
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    settings = app_settings()
    from lib.prnet.checkpoint import load_prnet

    if args.model:
        model, source = load_prnet(str(args.model)), f"{args.model}"
    else:
        model, source = train_model(settings, args.train_on, args.train_steps)
    _STUDIES.update(propagate_all(model, settings, args.tau, cohort_only=set(args.sections) == {"slabs"}))
    base = settings.pseudo_mask_geos
    if model.window:
        base = replace(base, window_hu=model.window[0], window_out=model.window[1])
    studies = list(_STUDIES)

    def row(name: str, res: dict[str, float]) -> list:
        drop = max(res["a_copy"] - res[s] for s in COPIES)
        return [name, *[res[s] for s in studies], float(np.mean([res[s] for s in COPIES])), drop,
                float(np.mean([res[s] for s in COHORT_STUDIES]))]

    header = ["setting", *studies, "mean, copies", "largest drop below a_copy", "mean, cohort"]
    parts = ["# Pseudo masks from PRNet's kept points", "",
             f"Machine: {machine()}. PRNet: {source}. The app's propagation settings; support subject A. "
             "Mean Dice over the organs in each study's field of view.", ""]
    if "geos" in args.sections:
        rows = []
        for name, change in SETTINGS.items():  # one process: GeoS runs its geodesics in threads
            rows.append(row(name, {s: score(s, replace(base, **change)) for s in studies}))
            print(name, flush=True)
        rows.append(noise_row(studies))
        parts += [f"## Per GeoS setting (DFD τ {args.tau})", "", md_table(header, rows), ""]
    if "dfd" in args.sections:
        rows = []
        for tau in TAUS:
            name = "every point inside (DFD off)" if tau is None else f"DFD τ {tau}"
            rows.append(row(name, {s: score(s, base, tau) for s in studies}))
            print(name, flush=True)
        parts += ["## Per DFD threshold (the configured GeoS)", "", md_table(header, rows), ""]
    if "noise" in args.sections:
        draws = noisy_draws()
        columns = [*draws, "a_noise"]  # the development set's stored noisy copy last
        clean = {s: score(s, base) for s in NOISY}
        rows = []
        for name, change in NOISE_SETTINGS.items():
            res = {d: score(d, replace(base, **change)) for d in columns}
            gaps = [clean[study] - res[d] for d, study in draws.items()]
            rows.append([name, *[res[d] for d in columns], float(np.mean(gaps)), float(np.median(gaps)), max(gaps)])
            print(name, flush=True)
        rows.append(noise_row(columns))
        parts += ["## Noise: the pseudo masks of noisy draws (the clean study's kept points)", "",
                  "Clean drafts: " + ", ".join(f"{d} {v:.3f}" for d, v in clean.items()), "",
                  md_table(["setting", *draws, "a_noise (stored copy)", "mean loss to the clean draft", "median loss",
                            "largest loss"], rows), ""]
    if "agreement" in args.sections:
        names = _STUDIES["a_copy"]["names"]
        organs = [n for n in names if n != "background"]
        own = draft("a_copy", base)
        rows = []
        for study in AGREEMENT:
            other = draft(study, base)
            for what, a, b in [("as run (each its image and kept points)", own, other),
                               ("a_copy's kept points on both images", own, draft(study, base, points="a_copy")),
                               ("a_copy's image from both point sets", own, draft("a_copy", base, points=study))]:
                agree = agreement(a, b, names)
                rows.append([study, what, float(np.mean(list(agree.values()))), *[agree.get(n, "") for n in organs]])
        parts += ["## Agreement of the copies' drafts with a_copy's (Dice between drafts, world space)", "",
                  md_table(["copy", "grown from", "mean", *organs], rows), ""]
    if "slabs" in args.sections:
        rows = slab_rows(model, settings, args.tau, base)
        faces = [f"{f:g} mm" for f in FACES]
        parts += [f"## Warped studies acquired as an upper-abdomen contrast slab ({SLAB_COPY}): points within f mm of a "
                  "face placed on it", "",
                  md_table(["study", "full study's draft on the slab", *[f"draft, {f}" for f in faces],
                            *[f"confidence, {f}" for f in faces], "aorta, 0 mm", "aorta, 5 mm"], rows), ""]
    text = "\n".join(parts)
    print(text)
    atomic_write_text(args.out / "bench_pseudo_masks.md", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
