"""One rule for every name a client gives the server: image ids, label tags, session ids, model names.

A name is 1-128 characters of ``[A-Za-z0-9._-]``, not ``.`` or ``..`` and not starting with ``.``
(the datastore's hidden files: its index, lock and temporary files). DICOMweb ids (SeriesInstanceUIDs,
digits and dots) and MONAI Label's tags (``final``, ``original``) pass; a path (``../x``, ``/abs``,
``labels/final/x``), a NUL byte or an empty name do not.

Every file the server writes or deletes for a name goes through :func:`path_under`, which resolves the
path (symbolic links included) and refuses one that leaves its root.
"""

from __future__ import annotations

import os
import re

from lib.tasks.errors import ClientError

NAME_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
NAME_RULE = "1-128 characters of letters, digits, '.', '_' and '-', not starting with '.'"

# file types the datastore stores and the interactive tasks answer in (longest first)
VOLUME_EXTENSIONS = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".mha")


def check_name(value: object, what: str = "id") -> str:
    """``value`` if it is a valid name (see the module's docstring), else a ClientError (400) naming ``what``."""
    if not isinstance(value, str) or not NAME_RE.fullmatch(value):
        shown = repr(value)[:80] if isinstance(value, str) else type(value).__name__
        raise ClientError(f"invalid {what} {shown}: use {NAME_RULE}")
    return value


def path_under(root: str, *parts: str) -> str:
    """``root/parts...`` resolved; a ClientError (400) when it does not lie strictly inside ``root``."""
    base = os.path.realpath(root)
    path = os.path.realpath(os.path.join(base, *parts))
    if os.path.commonpath([base, path]) != base or path == base:
        raise ClientError(f"'{os.path.join(*parts)}' would leave the server's folder")
    return path


def volume_extension(filename: str | None, default: str = ".nii.gz", extra: tuple[str, ...] = ()) -> str:
    """The volume file type of an upload's ``filename`` (``.nii.gz``, ``.nrrd``, ...; ``default`` when it
    has none; ``extra``: more accepted suffixes); a ClientError (415) for any other type (``run.sh``)."""
    if not filename:
        return default
    name = os.path.basename(str(filename)).lower()
    for ext in (*VOLUME_EXTENSIONS, *extra):
        if name.endswith(ext):
            return ext
    if "." not in name:
        return default
    raise ClientError(
        f"file type of '{os.path.basename(str(filename))[:80]}' not accepted: send a volume ({', '.join(VOLUME_EXTENSIONS)})",
        status_code=415,
    )
