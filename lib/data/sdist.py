"""Files from a package's source archive on PyPI, downloaded once and cached (the only download the
sample data needs).

The archive is found through PyPI's simple index (JSON, PEP 691), checked against the SHA-256 the
index lists, and only the wanted members are extracted; the archive itself is not kept.
``pip download --no-binary`` is not used: it builds the package's metadata, and an old sdist such as
``pyradiomics==3.0.1`` does not build on Python 3.11.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tarfile
import tempfile
import urllib.request
from pathlib import Path
from typing import Sequence

INDEX = os.environ.get("ONESHOT_PYPI_SIMPLE", "https://pypi.org/simple")


def _sdist_url(package: str, version: str) -> tuple[str, str, str]:
    """``(url, filename, sha256)`` of ``package==version``'s source archive."""
    req = urllib.request.Request(f"{INDEX.rstrip('/')}/{package}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        files = json.load(r)["files"]
    wanted = f"{package}-{version}.tar.gz".lower()
    for f in files:
        if f["filename"].lower() in (wanted, wanted.replace("-", "_", 1)):
            return f["url"], f["filename"], f["hashes"]["sha256"]
    raise RuntimeError(f"PyPI lists no source archive {wanted}")


def fetch_members(cache: Path, package: str, version: str, members: Sequence[str]) -> dict[str, Path]:
    """``{member: local path}`` for ``members`` (paths inside the archive's top folder, e.g.
    ``"data/lung1_image.nrrd"``), extracted into ``cache/<package>-<version>/``; downloaded only when
    one is missing."""
    root = Path(cache) / f"{package}-{version}"
    out = {m: root / m for m in members}
    missing = [m for m, p in out.items() if not p.exists()]
    if not missing:
        return out
    url, filename, sha256 = _sdist_url(package, version)
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        archive = Path(tmp) / filename
        print(f"downloading {filename} from PyPI ...", flush=True)
        digest = hashlib.sha256()
        with urllib.request.urlopen(url, timeout=300) as r, open(archive, "wb") as f:
            for chunk in iter(lambda: r.read(1 << 20), b""):
                digest.update(chunk)
                f.write(chunk)
        if digest.hexdigest() != sha256:
            raise RuntimeError(f"{filename}: SHA-256 {digest.hexdigest()} differs from PyPI's {sha256}")
        with tarfile.open(archive) as tar:
            by_name = {m.name.split("/", 1)[1]: m for m in tar.getmembers() if "/" in m.name}
            for name in missing:
                member = by_name.get(name)
                if member is None or not member.isfile():
                    raise RuntimeError(f"{name} is not in {filename}")
                out[name].parent.mkdir(parents=True, exist_ok=True)
                part = out[name].with_name(out[name].name + ".part")
                with tar.extractfile(member) as src, open(part, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                part.replace(out[name])
    return out
