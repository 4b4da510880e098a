"""Atomic file replacement: write to a temporary file beside the destination, then ``os.replace``.

A reader sees either the old file or the complete new one, never a partial write, also when the
writer is interrupted (the temporary file is removed on failure).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from typing import Any, Iterator


@contextmanager
def atomic_path(dest: str) -> Iterator[str]:
    """Yield a temporary path in ``dest``'s folder; on success it is fsynced and moved onto ``dest``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(dest)}.", dir=os.path.dirname(os.path.abspath(dest)))
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_copy(src: str, dest: str) -> None:
    with atomic_path(dest) as tmp:
        shutil.copyfile(src, tmp)


def atomic_write_text(dest: str, text: str) -> None:
    with atomic_path(dest) as tmp:
        with open(tmp, "w") as f:
            f.write(text)


def atomic_write_json(dest: str, obj: Any) -> None:
    atomic_write_text(dest, json.dumps(obj, indent=2))


def atomic_torch_save(obj: Any, dest: str) -> None:
    """``torch.save`` to ``dest`` atomically (a checkpoint is never half-written)."""
    import torch

    with atomic_path(dest) as tmp:
        torch.save(obj, tmp)


@contextmanager
def atomic_directory(dest) -> Iterator:
    """Yield a new temporary folder beside ``dest`` (a ``pathlib.Path``) to build into; on success it
    replaces ``dest`` (the old one removed, the new one renamed into place), on failure it is removed,
    so a reader never sees a half-built folder."""
    from pathlib import Path

    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-building-", dir=dest.parent))
    try:
        yield tmp
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
