"""Configuration: YAML defaults in ``configs/`` merged with string overrides (MONAI Label ``--conf``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs"


def load_yaml(name: str) -> dict[str, Any]:
    """Read ``configs/<name>`` (a mapping)."""
    with open(CONFIG_DIR / name) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{CONFIG_DIR / name} must hold a mapping")
    return data


def merge_overrides(defaults: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Defaults updated with ``overrides`` whose string values are parsed as YAML scalars/lists.

    ``--conf`` values arrive as strings (``"0.5"``, ``"true"``, ``"[1, 2]"``); keys not in the
    defaults are kept as given, so MONAI Label's own conf keys pass through.
    """
    merged = dict(defaults)
    for key, value in overrides.items():
        if isinstance(value, str):
            try:
                value = yaml.safe_load(value) if value.strip() else value
            except yaml.YAMLError:
                pass
        merged[key] = value
    return merged


def app_config(overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The app's configuration: ``configs/app.yaml`` with ``overrides`` applied."""
    return merge_overrides(load_yaml("app.yaml"), overrides or {})
