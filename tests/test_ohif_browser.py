"""OHIF v3 (bundled with MONAI Label) in headless Chromium, served by our app over Orthanc.

A user's path: open a study in OHIF's MONAI Label mode, connect the panel (it defaults to our server),
see our models, choose *liver* under Point Prompts, click in the liver, Run: ``points_geos`` answers
and the segmentation is drawn. The screenshot is kept in ``test-artifacts/ohif/`` and its pixels
are checked: the overlay is on the clicked organ, not elsewhere. The label OHIF received is checked in 3D: it
follows the organ, never a crop box (no face of its bounding box inside the image is a flat cut).
"""

from __future__ import annotations

import email
import json
import os
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import REPO_ROOT, require_system_tool
from dicomweb_client import DICOMwebClient
from scipy import ndimage

from lib.dicomweb.upload import upload_study
from lib.io import read_volume

pytestmark = pytest.mark.e2e  # starts real servers

CHROMIUM = "/usr/bin/chromium"
# headless without a GPU: WebGL (cornerstone3D) through SwiftShader; no calls to Google's services
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--use-angle=swiftshader", "--enable-unsafe-swiftshader",
                 "--disable-quic", "--no-first-run", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
ARTIFACTS = Path(os.environ.get("TEST_ARTIFACTS", REPO_ROOT / "test-artifacts")) / "ohif"
LPS = np.diag([-1.0, -1.0, 1.0])


def _tint(rgb: np.ndarray) -> np.ndarray:
    """Red-orange tint of screenshot pixels (H, W, 3): the liver colour over grey CT is R ≫ B."""
    rgb = rgb.astype(np.int32)
    return rgb[..., 0] - rgb[..., 2]


def _disc(shape, centre, radius) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - centre[1]) ** 2 + (xx - centre[0]) ** 2 <= radius ** 2


def test_points_geos_in_ohif(orthanc, real_cohort, server_factory, tmp_path):
    require_system_tool(os.path.exists(CHROMIUM), "Chromium (apt-get install chromium)")
    from PIL import Image
    from playwright.sync_api import sync_playwright

    study = real_cohort / "studies" / "subject_a.nii.gz"
    client = DICOMwebClient(url=orthanc.url)
    series, _ = upload_study(client, study)
    study_uid = client.search_for_series(search_filters={"SeriesInstanceUID": series})[0]["0020000D"]["Value"][0]
    server = server_factory(orthanc.url, {"dicomweb.cache_path": str(tmp_path / "cache")})

    # the liver's largest axial slice, and a point deep inside it (voxels) → LPS world (mm)
    gt = nib.load(str(real_cohort / "ground_truth" / "subject_a.nii.gz"))
    truth = np.asarray(gt.dataobj).astype(np.int64)
    names = json.loads((real_cohort / "ground_truth" / "labels.json").read_text())
    k = int(np.argmax((truth == names["liver"]).sum(axis=(0, 1))))
    depth = ndimage.distance_transform_edt(truth[:, :, k] == names["liver"])
    i, j = np.unravel_index(np.argmax(depth), depth.shape)
    world = lambda ijk: (LPS @ (gt.affine @ np.array([*ijk, 1.0]))[:3]).tolist()  # noqa: E731
    # a far control point: outside the body at the same slice (must stay unpainted)
    far = (2, 2, k)

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    infer_requests, console = [], []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_context(viewport={"width": 1600, "height": 1000}).new_page()
            page.on("console", lambda m: console.append(m.text))
            page.on("request", lambda r: infer_requests.append(r) if "/infer/" in r.url else None)
            page.goto(f"{server.url}/ohif/monai-label?StudyInstanceUIDs={study_uid}", wait_until="networkidle",
                      timeout=120_000)
            page.get_by_text("Confirm and Hide").click()
            _wait_console(page, console, "displaySetsToAllImages")  # the volume is loaded
            # the panel defaults to the server that served the viewer; connect and list our models
            assert page.locator("#monailabelServerURL").input_value() == server.url + "/"
            page.locator(".monaiLabelPanel button.actionButton").first.click()
            page.get_by_text("Point Prompts").click()
            # the panel has made its segmentation (the organs get their colours) before we click
            page.wait_for_function(
                """() => [...document.querySelectorAll('.optionsTable tr')].some(r => r.innerText.trim() === 'liver'
                    && getComputedStyle(r.querySelector('.segColor')).backgroundColor !== 'rgb(0, 0, 0)')""",
                timeout=60_000)
            options = page.locator(".monaiLabelPanel select.selectBox option").all_inner_texts()
            assert "points_geos" in [o.strip() for o in options]
            assert {"prnet_prelabel", "segmentation"} <= {o.strip() for o in options}

            viewport = "() => cornerstone.getRenderingEngines()[0].getViewport('mpr-axial')"
            page.evaluate(f"(w) => {{ const v = ({viewport})(); v.jumpToWorld(w); v.render(); }}", world((i, j, k)))
            page.wait_for_timeout(1000)
            rect = page.evaluate(f"() => ({viewport})().canvas.getBoundingClientRect().toJSON()")

            def to_page(ijk) -> tuple[float, float]:
                x, y = page.evaluate(f"(w) => ({viewport})().worldToCanvas(w)", world(ijk))
                return rect["x"] + x, rect["y"] + y

            click, control = to_page((i, j, k)), to_page(far)
            page.locator(".optionsTable td", has_text="liver").first.click()
            page.mouse.click(*click)
            page.wait_for_timeout(500)
            before = np.asarray(Image.open(_shot(page, ARTIFACTS / "before.png")).convert("RGB"))

            with page.expect_response(lambda r: "/infer/points_geos" in r.url, timeout=180_000) as response:
                page.locator("button[title='Run PointPrompts']").click()
            assert response.value.status == 200
            answer = _label_from_response(response.value.headers.get("content-type", ""), response.value.body(), tmp_path)
            _wait_console(page, console, "updated the segmentation")
            page.wait_for_timeout(1500)
            after = np.asarray(Image.open(_shot(page, ARTIFACTS / "points_geos_liver.png")).convert("RGB"))
        finally:
            browser.close()

    # the request carried the click as a voxel index near the one we aimed at
    body = infer_requests[-1].post_data  # multipart: field "params" holds the JSON
    params = json.loads(body[body.index("{"): body.rindex("}") + 1])
    sent = np.asarray(params["foreground"][0], dtype=float)
    assert np.linalg.norm(sent - np.array([i, j, k])) <= 2.0, (sent, (i, j, k))

    # pixels: the overlay covers the click's neighbourhood and nothing at the far control point
    near, away = _disc(after.shape, click, 12), _disc(after.shape, control, 12)
    # (before the run only the click's marker is drawn there)
    painted = (_tint(after) > 30) & ~(_tint(before) > 30) & near
    assert painted.sum() > 0.3 * near.sum(), (painted.sum(), near.sum())
    assert ((_tint(after) > 30) & away).sum() == 0
    print(f"\nnewly painted pixels within 12 px of the click: {painted.sum()} / {near.sum()}; "
          f"screenshot {ARTIFACTS / 'points_geos_liver.png'}")

    # the segment OHIF painted follows the liver, not the click's crop box: where its bounding box ends
    # inside the image, its cross-section tapers off instead of ending on a plane
    label = answer.array > 0
    assert label.shape == truth.shape and label[i, j, k]
    cuts = flat_cuts(label)
    assert not cuts, f"the segment ends on a flat face (a crop box's) where the image goes on: {cuts}"
    overlap = (label & (truth == names["liver"])).sum() / label.sum()
    assert overlap > 0.6, overlap  # one click: 0.70 of the segment lies in the liver (docs/benchmarks.md)


def flat_cuts(label: np.ndarray, fraction: float = 0.5) -> list[str]:
    """The faces of ``label``'s bounding box that lie inside the image and on which it ends flat: its area in
    the last slice is at least ``fraction`` of its largest slice along that axis (an organ tapers off there,
    a crop box cuts it at full width)."""
    out = []
    for axis in range(3):
        area = label.sum(axis=tuple(a for a in range(3) if a != axis))
        present = np.flatnonzero(area)
        for end, index in (("low", present[0]), ("high", present[-1])):
            on_edge = index == 0 or index == label.shape[axis] - 1
            if not on_edge and area[index] >= fraction * area.max():
                out.append(f"axis {axis} {end} (slice {index}: {area[index]} of at most {area.max()} voxels)")
    return out


def _label_from_response(content_type: str, body: bytes, tmp_path: Path):
    """The label volume of a MONAI Label infer answer (multipart ``params`` + ``image``, or the file alone)."""
    data, name = body, "answer.nrrd"
    if "multipart" in content_type:
        message = email.message_from_bytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
        part = next(p for p in message.walk() if p.get_filename())
        data, name = part.get_payload(decode=True), part.get_filename()
    path = tmp_path / ("answer" + "".join(Path(name).suffixes))
    path.write_bytes(data)
    return read_volume(str(path))


def _wait_console(page, console: list, text: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not any(text in c for c in console):
        assert time.monotonic() < deadline, f"no '{text}' in the browser console within {timeout_s} s"
        page.wait_for_timeout(250)


def _shot(page, path: Path) -> Path:
    page.screenshot(path=str(path))
    return path
