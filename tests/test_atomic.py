from __future__ import annotations

import pytest

from lib.atomic import atomic_copy, atomic_path, atomic_write_json


def test_interrupted_write_leaves_the_old_file_and_no_temporary(tmp_path):
    dest = tmp_path / "label.nii.gz"
    dest.write_bytes(b"old label")
    with pytest.raises(RuntimeError):
        with atomic_path(str(dest)) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"half a new lab")
            raise RuntimeError("killed mid-write")
    assert dest.read_bytes() == b"old label"
    assert [p.name for p in tmp_path.iterdir()] == ["label.nii.gz"]


def test_completed_writes_replace_the_file(tmp_path):
    src = tmp_path / "src"
    src.write_bytes(b"new label")
    dest = tmp_path / "label"
    dest.write_bytes(b"old")
    atomic_copy(str(src), str(dest))
    assert dest.read_bytes() == b"new label"
    atomic_write_json(str(tmp_path / "stats.json"), {"step": 3})
    assert (tmp_path / "stats.json").read_text().strip().endswith("}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["label", "src", "stats.json"]
