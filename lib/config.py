"""Configuration: YAML defaults in ``configs/`` merged with string overrides (MONAI Label ``--conf``)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Mapping

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs"


def is_true(value: Any) -> bool:
    """A request flag as clients send it: ``True``, ``"true"``, ``"1"`` or ``"yes"`` (any case) is true."""
    return str(value).lower() in ("1", "true", "yes")


def load_yaml(name: str) -> dict[str, Any]:
    """Read ``configs/<name>`` (a mapping)."""
    with open(CONFIG_DIR / name) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{CONFIG_DIR / name} must hold a mapping")
    return data


def merge_overrides(defaults: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults updated with ``overrides``; string values are parsed as YAML (``"0.5"``, ``"true"``,
    ``"[1, 2]"``) and dotted keys reach into sections (``geos.iterations`` → ``{"geos": {"iterations"}}``).

    Keys not in the defaults are kept as given, so MONAI Label's own conf keys pass through.

    Raises:
        ValueError: for a dotted key whose section does not exist or is not a mapping.
    """
    merged: dict[str, Any] = copy.deepcopy(dict(defaults))
    for key, value in overrides.items():
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value) if value.strip() else value
            except yaml.YAMLError:
                pass
        *sections, leaf = str(key).split(".")
        target = merged
        for sec in sections:
            if not isinstance(target.get(sec), dict):
                raise ValueError(f"unknown configuration section '{sec}' in key '{key}'")
            target = target[sec]
        target[leaf] = value
    return merged


def app_config(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The app's configuration: ``configs/app.yaml`` with ``overrides`` applied."""
    return merge_overrides(load_yaml("app.yaml"), overrides or {})
