"""Attacks and bad inputs through the real server: nothing written outside the datastore, no 5xx.

The datastore lies in a *canary* folder (``jail/studies``); every attack aims at ``jail/`` or an absolute
path inside it. After each refused request, nothing under ``jail/`` may have changed and the datastore
listing must be the same. The corpus is the one of the reliability issue (151 bad inputs tried by hand).
"""

from __future__ import annotations

import gzip
import http.client
import io
import json
import os
import shutil
import tarfile
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest
import requests
from conftest import save_nifti, sphere_volume

from lib.workflow.server import start_server, stop_server


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    """``{relative path: (size, mtime_ns)}`` of every file and folder under ``root`` (the lock file aside)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            if name == ".lock":
                continue
            st = p.lstat()
            out[str(p.relative_to(root))] = (st.st_size if p.is_file() else -1, st.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def jail_server(tmp_path_factory):
    jail = tmp_path_factory.mktemp("jail")
    studies = jail / "studies"
    studies.mkdir()
    for i in range(2):
        image, _ = sphere_volume(seed=i)
        save_nifti(image, studies / f"case_{i}.nii.gz")
    work = tmp_path_factory.mktemp("work")
    server = start_server(studies, work, {"model_dir": str(work / "model")},
                          env={"MONAI_LABEL_SESSION_PATH": str(jail / "sessions")})
    try:
        yield server, jail
    finally:
        stop_server(server)


def nifti_bytes(array: np.ndarray, tmp: Path, name: str = "x.nii.gz", spacing=(1.5, 1.5, 2.0)) -> bytes:
    return save_nifti(array, tmp / name, spacing=spacing).read_bytes()


def raw(url: str, method: str, target: str, body: bytes = b"", headers: dict | None = None) -> int:
    """Send ``target`` exactly as written (no dot-segment normalisation, as an attacker would); the status."""
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    conn.request(method, target, body=body, headers=headers or {})
    status = conn.getresponse().status
    conn.close()
    return status


def test_attacks_and_bad_inputs_are_refused_and_write_nothing(jail_server, tmp_path):
    server, jail = jail_server
    url = server.url
    image, _ = sphere_volume(seed=0)
    good_image = nifti_bytes(image, tmp_path)
    good_label = nifti_bytes((image > 150).astype(np.uint8), tmp_path, "l.nii.gz")
    s = requests.Session()

    def put_image(image_id, content=good_image, filename="x.nii.gz", params="{}"):
        return s.put(f"{url}/datastore/image", params={"image": image_id} if image_id is not None else None,
                     files={"file": (filename, content)}, data={"params": params})

    def put_label(image_id, tag, content=good_label, filename="l.nii.gz", params="{}"):
        return s.put(f"{url}/datastore/label", params={"image": image_id, "tag": tag},
                     files={"label": (filename, content)}, data={"params": params})

    def infer(model, params, image_id="case_0", **kw):
        return s.post(f"{url}/infer/{model}", params={"image": image_id, **kw},
                      data={"params": params if isinstance(params, str) else json.dumps(params)})

    point = {"foreground": [[20, 20, 12]]}
    abs_target = str(jail / "ABS")
    nan_image = nifti_bytes(np.full((8, 8, 8), np.nan, np.float32), tmp_path, "nan.nii.gz")
    small_label = nifti_bytes(np.zeros((10, 10, 10), np.uint8), tmp_path, "small.nii.gz")
    shifted_label = nifti_bytes((image > 150).astype(np.uint8), tmp_path, "shift.nii.gz", spacing=(3.0, 1.5, 2.0))
    tar_buf = io.BytesIO()
    with tarfile.open(fileobj=tar_buf, mode="w") as tar:
        data = b"escaped"
        info = tarfile.TarInfo("../../../../escaped.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    cases = {
        # writes and deletes outside the datastore
        "image id ../": lambda: put_image("../../X"),
        "image id absolute": lambda: put_image(abs_target),
        "image id ..%2F": lambda: raw(url, "PUT", "/datastore/image?image=..%2F..%2FX"),
        "image id into labels/": lambda: put_image("labels/final/case_0"),
        "file type from the name": lambda: put_image("okname", filename="run.sh"),
        "no id, file name ../": lambda: put_image(None, filename="../../Y.nii.gz"),
        "label tag ../": lambda: put_label("case_0", "../../../D"),
        "label tag ..": lambda: put_label("case_0", ".."),
        "label tag hidden": lambda: put_label("case_0", ".datastore_v2.json"),
        "infer save_label tag ..": lambda: infer("points_geos", {**point, "save_label": True, "label_tag": ".."}),
        "infer save_label tag ../": lambda: infer("points_geos", {**point, "save_label": True, "label_tag": "../../D"}),
        "delete absolute id": lambda: s.delete(f"{url}/datastore/", params={"id": abs_target}),
        "delete ../ id": lambda: s.delete(f"{url}/datastore/image", params={"id": "../studies"}),
        "delete label ../ tag": lambda: s.delete(f"{url}/datastore/label", params={"id": "case_0", "tag": "../labels"}),
        "session tar ../ member": lambda: s.put(f"{url}/session/", params={"uncompress": "true"},
                                                files={"files": ("a.tar", tar_buf.getvalue())}),
        "session id ..": lambda: raw(url, "DELETE", "/session/.."),
        "infer any server path": lambda: infer("points_geos", point, image_id=str(jail / "studies" / "case_0.nii.gz")),
        "infer label param is a server path": lambda: infer("scribbles_geos", {"label": "/etc/passwd"}),
        "proxy ../ on a local datastore": lambda: raw(url, "GET", "/proxy/dicom/qido/../../X"),
        "proxy ..%2F": lambda: raw(url, "GET", "/proxy/dicom/qido/..%2F..%2FX"),
        "cross-site form POST": lambda: s.post(f"{url}/infer/points_geos", params={"image": "case_0"},
                                               data={"params": json.dumps({**point, "save_label": True, "label_tag": "final"})},
                                               headers={"Origin": "http://evil.example"}),
        "cross-site DELETE": lambda: s.delete(f"{url}/datastore/", params={"id": "case_0"}, headers={"Origin": "http://evil.example"}),
        "DNS rebinding host": lambda: s.get(f"{url}/info/", headers={"Host": "evil.example"}),
        "reload the app": lambda: s.post(f"{url}/reload"),
        # malformed params
        **{f"infer params {p!r}": (lambda p=p: infer("points_geos", p)) for p in ("{bad json", "null", '"str"', "123", "[1]")},
        **{f"label params {p!r}": (lambda p=p: put_label("case_0", "final", params=p)) for p in ("{bad json", "null", "123")},
        **{f"image info {p!r}": (lambda p=p: s.put(f"{url}/datastore/image/info", params={"image": "case_0"}, data={"info": p}))
           for p in ("{bad json", "null", '"str"')},
        "points Infinity": lambda: infer("points_geos", '{"foreground": [[Infinity, 1, 1]]}'),
        "points NaN": lambda: infer("points_geos", '{"foreground": [[NaN, 1, 1]]}'),
        "roi NaN": lambda: infer("points_geos", '{"foreground": [[20, 20, 12]], "roi": [0, 40, 0, 40, 0, NaN]}'),
        "radius NaN": lambda: infer("points_geos", '{"foreground": [[20, 20, 12]], "point_radius_mm": NaN}'),
        "radius 1e6": lambda: infer("points_geos", {**point, "point_radius_mm": 1e6}),
        "radius -5": lambda: infer("points_geos", {**point, "point_radius_mm": -5}),
        "iterations -3": lambda: infer("points_geos", {**point, "iterations": -3}),
        "iterations 100000": lambda: infer("points_geos", {**point, "iterations": 100000}),
        "lamb -1": lambda: infer("points_geos", {**point, "lamb": -1}),
        "intensity_weight NaN": lambda: infer("points_geos", '{"foreground": [[20, 20, 12]], "intensity_weight": NaN}'),
        "label_info id 1e400": lambda: infer("scribbles_geos", '{"label_info": [{"name": "a", "id": 1e400}]}'),
        "label_info id notint": lambda: infer("scribbles_geos", {"label_info": [{"name": "a", "id": "notint"}]}),
        "label_info id null": lambda: infer("scribbles_geos", {"label_info": [{"name": "a", "id": None}]}),
        "selected_label_name list": lambda: infer("scribbles_geos", {"label_info": [{"name": "a", "id": 1}], "selected_label_name": [1]}),
        "result_extension /../x": lambda: infer("points_geos", {**point, "result_extension": "/../x"}),
        "NUL in id": lambda: put_image("a\x00b"),
        "256-character id": lambda: put_image("a" * 256),
        "256-character tag": lambda: put_label("case_0", "t" * 256),
        # unknown names
        "delete unknown id": lambda: s.delete(f"{url}/datastore/", params={"id": "no_such"}),
        "unknown model": lambda: infer("no_such_model", point),
        "unknown strategy": lambda: s.post(f"{url}/activelearning/no_such", json={}),
        "unknown image info": lambda: s.get(f"{url}/datastore/image/info", params={"image": "no_such"}),
        "unknown label info": lambda: s.get(f"{url}/datastore/label/info", params={"label": "case_0", "tag": "no_such"}),
        "infer without image": lambda: s.post(f"{url}/infer/points_geos", data={"params": json.dumps(point)}),
        **({} if shutil.which("nvidia-smi") else {"gpu info without nvidia-smi": lambda: s.get(f"{url}/logs/gpu")}),
        "dataset without final labels": lambda: s.get(f"{url}/datastore/dataset"),
        "proxy on a local datastore": lambda: s.get(f"{url}/proxy/dicom/qido/studies"),
        "upload a model": lambda: s.put(f"{url}/model/segmentation", files={"file": ("m.pt", b"junk")}),
        "unknown scoring method": lambda: s.post(f"{url}/scoring/dice", json={}),
        "unknown trainer": lambda: s.post(f"{url}/train/no_such", json={}),
        "train max_steps -5": lambda: s.post(f"{url}/train/prnet", json={"max_steps": -5}),
        "train lr NaN": lambda: s.post(f"{url}/train/prnet", data='{"lr": NaN}', headers={"Content-Type": "application/json"}),
        "batch unknown model": lambda: s.post(f"{url}/batch/infer/no_such", json={}),
        "batch label_tag ..": lambda: s.post(f"{url}/batch/infer/points_geos", json={"label_tag": ".."}),
        # bad files
        "image not an image": lambda: put_image("bad1", content=b"#!/bin/sh\necho hi\n"),
        "image truncated": lambda: put_image("bad2", content=good_image[: len(good_image) // 2]),
        "image empty": lambda: put_image("bad3", content=b""),
        "image of NaNs": lambda: put_image("bad4", content=nan_image),
        "image gzip of junk": lambda: put_image("bad5", content=gzip.compress(b"junk" * 100)),
        "label not an image": lambda: put_label("case_0", "final", content=b"junk"),
        "label wrong shape": lambda: put_label("case_0", "final", content=small_label),
        "label other spacing": lambda: put_label("case_0", "scribbles", content=shifted_label),
        "label of NaNs": lambda: put_label("case_0", "final", content=nan_image),
    }
    listing = s.get(f"{url}/datastore/", params={"output": "all"}).json()
    before = snapshot(jail)
    failures = []
    for name, call in cases.items():
        r = call()
        status = r if isinstance(r, int) else r.status_code
        if not 400 <= status < 500:
            failures.append(f"{name}: {status} {'' if isinstance(r, int) else r.text[:200]}")
        after = snapshot(jail)
        if after != before:
            changed = sorted(set(after.items()) ^ set(before.items()))
            failures.append(f"{name}: changed files {changed[:4]}")
            before = after
    assert not failures, "\n".join(failures)
    assert s.get(f"{url}/datastore/", params={"output": "all"}).json() == listing
    assert not (jail / "escaped.txt").exists() and not (jail.parent / "escaped.txt").exists()
    # CORS is off: no page of another origin may read an answer
    r = s.get(f"{url}/info/", headers={"Origin": "http://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in {k.lower() for k in r.headers}


def test_valid_requests_still_work_and_a_deleted_label_leaves_the_listing(jail_server, tmp_path):
    server, jail = jail_server
    url = server.url
    image, mask = sphere_volume(seed=0)
    s = requests.Session()
    label = save_nifti(mask.astype(np.uint8), tmp_path / "l.nii.gz")
    # a new tag, created after the server started
    r = s.put(f"{url}/datastore/label", params={"image": "case_1", "tag": "review"},
              files={"label": ("l.nii.gz", label.read_bytes())}, data={"params": json.dumps({"label_names": {"lesion": 1}})})
    assert r.status_code == 200, r.text
    assert "review" in s.get(f"{url}/datastore/", params={"output": "all"}).json()["objects"]["case_1"]["labels"]
    assert s.delete(f"{url}/datastore/label", params={"id": "case_1", "tag": "review"}).status_code == 200
    assert "review" not in s.get(f"{url}/datastore/", params={"output": "all"}).json()["objects"]["case_1"]["labels"]
    assert not (jail / "studies" / "labels" / "review" / "case_1.nii.gz").exists()
    # a same-origin browser request (OHIF served by this server) is allowed
    r = s.post(f"{url}/infer/points_geos", params={"image": "case_1", "output": "json"},
               data={"params": json.dumps({"foreground": [[20, 20, 12]]})}, headers={"Origin": url})
    assert r.status_code == 200, r.text
    # a new image, then removed with its labels
    r = s.put(f"{url}/datastore/image", params={"image": "case_new"}, files={"file": ("x.nii.gz", save_nifti(image, tmp_path / "i.nii.gz").read_bytes())})
    assert r.status_code == 200, r.text
    assert (jail / "studies" / "case_new.nii.gz").exists()
    assert s.delete(f"{url}/datastore/image", params={"id": "case_new"}).status_code == 200
    assert not (jail / "studies" / "case_new.nii.gz").exists()
    assert "case_new" not in s.get(f"{url}/datastore/", params={"output": "all"}).json()["objects"]
    # the log names files, not the host's folders
    text = s.get(f"{url}/logs/", params={"lines": 2000}).text
    assert "case_1" in text and str(jail) not in text and str(Path.home()) + "/" not in text


def test_access_token_is_required_when_configured(tiny_studies, server_factory):
    server = server_factory(tiny_studies, {"server.auth_token": "s3cret-token"})
    s = requests.Session()
    assert s.get(f"{server.url}/info/").status_code == 401
    assert s.get(f"{server.url}/datastore/").status_code == 401
    assert s.get(f"{server.url}/info/", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert s.get(f"{server.url}/auth/").json()["enabled"] is True
    # Slicer's auth fields: any user name, the token as password
    client = server.client()
    token = client.auth_token("annotator", "s3cret-token")
    assert token["access_token"] == "s3cret-token"
    client.update_auth(token)
    assert client.info()["name"].startswith("One-shot")
    assert s.post(f"{server.url}/auth/token", data={"username": "x", "password": "wrong"}).status_code == 401
    assert "s3cret-token" not in s.get(f"{server.url}/logs/", params={"lines": 5000},
                                       headers={"Authorization": "Bearer s3cret-token"}).text
