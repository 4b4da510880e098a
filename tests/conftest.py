"""Shared fixtures: a real MONAI Label server (subprocess, loopback, free port) and tiny studies."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterator

import nibabel as nib
import numpy as np
import pytest

from lib.workflow.server import Server, start_server, stop_server  # noqa: F401

REPO_ROOT = Path(__file__).resolve().parents[1]

#: fixtures that start a real server (MONAI Label, Orthanc): a test that uses one is end to end
E2E_FIXTURES = {"server_factory", "orthanc", "sphere_server", "jail_server"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark ``e2e`` every test that uses a server fixture (tests that start one themselves carry the mark)."""
    for item in items:
        if E2E_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.e2e)


def save_nifti(array: np.ndarray, path: Path, spacing=(1.5, 1.5, 2.0), dtype=None) -> Path:
    affine = np.diag([*spacing, 1.0])
    img = nib.Nifti1Image(np.asarray(array, dtype=dtype or array.dtype), affine)
    nib.save(img, str(path))
    return path


def sphere_volume(shape=(40, 40, 24), centre=None, radius=7.0, seed=0, spacing=(1.5, 1.5, 2.0)):
    """A bright sphere (~300 HU) in soft tissue (~0 HU) with noise; returns ``(image, mask)`` (I, J, K).

    ``radius`` is in mm; ``spacing`` in mm per axis.
    """
    rng = np.random.default_rng(seed)
    centre = np.array(centre if centre is not None else [s / 2 for s in shape], dtype=float)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), axis=-1).astype(float)
    dist_mm = np.linalg.norm((grid - centre) * np.asarray(spacing), axis=-1)
    mask = dist_mm <= radius
    image = np.where(mask, 300.0, 0.0) + rng.normal(0, 25, shape)
    return image.astype(np.int16), mask


def two_organ_phantom(shift: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A 44×40×36 body with a bright 'organ' (1) and a darker one (2), shifted by ``shift`` voxels along i;
    ``(image HU int16, label uint8)``."""
    rng = np.random.default_rng(seed)
    shape = (44, 40, 36)
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in shape], indexing="ij"), -1)
    label = np.zeros(shape, np.uint8)
    label[np.linalg.norm(grid - [14 + shift, 20, 18], axis=-1) < 6] = 1
    label[np.linalg.norm(grid - [30 + shift, 20, 18], axis=-1) < 5] = 2
    image = np.where(label == 1, 200.0, np.where(label == 2, 60.0, -20.0)) + rng.normal(0, 10, shape)
    return image.astype(np.int16), label


@pytest.fixture
def tiny_studies(tmp_path: Path) -> Path:
    """A studies folder with three small synthetic CT volumes (``case_0..2``)."""
    studies = tmp_path / "studies"
    studies.mkdir()
    for i in range(3):
        image, _ = sphere_volume(seed=i, centre=(18 + i, 20, 12))
        save_nifti(image, studies / f"case_{i}.nii.gz")
    return studies


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    servers: list[Server] = []

    def make(studies: Path, conf: dict[str, str] | None = None) -> Server:
        # every test server publishes its models in its own folder
        conf = {"model_dir": str(tmp_path / f"model-{len(servers)}"), **(conf or {})}
        s = start_server(studies, tmp_path, conf)
        servers.append(s)
        return s

    yield make
    for s in servers:
        stop_server(s)


@pytest.fixture(scope="session")
def real_cohort(tmp_path_factory) -> Path:
    """The sample cohort on the real CT (subject A + one deformed copy), built once per session."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_cohort", REPO_ROOT / "sample-data" / "build_cohort.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path_factory.mktemp("real-cohort") / "cohort"
    assert module.main(["--out", str(out), "--n-pseudo", "1"]) == 0
    return out


def require_system_tool(available: bool, what: str) -> None:
    """Skip when a system package is missing on a developer machine; fail in CI (CI=true), which installs it."""
    if available:
        return
    message = f"{what} is not installed (scripts/system-deps.sh installs it)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    """A real Orthanc (Debian packages) on a free loopback port with its own storage (``.url``: DICOMweb root)."""
    from lib.dicomweb import orthanc as orthanc_ctl
    from lib.workflow.server import free_port

    try:
        orthanc_ctl.orthanc_binary()
        installed = True
    except RuntimeError:
        installed = False
    require_system_tool(installed, "Orthanc with its DICOMweb plugin (apt-get install orthanc orthanc-dicomweb)")
    instance = orthanc_ctl.Orthanc(tmp_path_factory.mktemp("orthanc"), free_port()).start()
    try:
        yield instance
    finally:
        instance.stop()
