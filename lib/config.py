"""Configuration: YAML defaults in ``configs/`` merged with string overrides (MONAI Label ``--conf``)."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any, Iterable, Mapping, TypeVar

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO_ROOT / "configs"
T = TypeVar("T")


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


class ConfigError(ValueError):
    """A configuration section holds a key no consumer reads, or a value its consumer refuses."""


def _coerce(value: Any, default: Any, key: str) -> Any:
    """``value`` (as YAML or a request gave it) in the type of the field's ``default``: lists become tuples,
    ``"2"`` an int and ``"0.5"`` or ``2`` a float where the default is one, ``"true"`` / ``"false"`` a bool.

    Raises:
        ConfigError: for a string that is not a number or a yes / no where the default is one.
    """
    if isinstance(value, list):
        return tuple(value)
    if isinstance(default, bool):
        if isinstance(value, str):
            if value.strip().lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ConfigError(f"'{key}' must be true or false, got {value!r}")
            return value.strip().lower() in ("true", "1", "yes")
        return bool(value)
    if isinstance(default, (int, float)) and isinstance(value, str):
        try:
            return type(default)(value)
        except ValueError:
            raise ConfigError(f"'{key}' must be a number, got {value!r}") from None
    if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _where(section: str) -> str:
    """``'geos'`` for a section's dotted name; a description (``the request to trainer 'prnet'``) as it is."""
    return section if " " in section else f"'{section}'"


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return f.default_factory()  # type: ignore[misc]
    return None


def split_section(d: Mapping[str, Any] | None, section: str, *consumers: type) -> tuple:
    """One configuration section read by the dataclasses that consume it: every key must be a field of one of
    ``consumers`` (the first that has it); a field whose default is a dataclass reads its sub-section the same
    way (``segmentation.plc``). Returns one instance per consumer, in order.

    Raises:
        ConfigError: for a key no consumer reads (naming the key, the section and the known keys), a
            sub-section that is not a mapping, or a value a consumer refuses.
    """
    d = dict(d or {})
    if not all(isinstance(k, str) for k in d):
        raise ConfigError(f"the keys of '{section}' must be names, got {sorted(map(repr, d))}")
    by_consumer: list[dict[str, Any]] = [{} for _ in consumers]
    for key, value in d.items():
        owner = next((n for n, c in enumerate(consumers) if key in {f.name for f in dataclasses.fields(c)}), None)
        if owner is None:
            known = sorted({f.name for c in consumers for f in dataclasses.fields(c)})
            raise ConfigError(f"unknown key '{key}' in {_where(section)}; known: {', '.join(known)}")
        f = next(f for f in dataclasses.fields(consumers[owner]) if f.name == key)
        default = _field_default(f)
        if dataclasses.is_dataclass(default) and not isinstance(value, type(default)):
            if not isinstance(value, Mapping):
                raise ConfigError(f"'{section}.{key}' must be a section (a mapping), got {value!r}")
            value = split_section(value, f"{section}.{key}", type(default))[0]
        by_consumer[owner][key] = _coerce(value, default, f"{section}.{key}")
    out = []
    for cls, kw in zip(consumers, by_consumer):
        try:
            out.append(cls(**kw))
        except (TypeError, ValueError) as e:
            raise ConfigError(f"'{section}': {e}") from None
    return tuple(out)


def from_section(cls: type[T], d: Mapping[str, Any] | None, section: str) -> T:
    """The dataclass ``cls`` from one configuration section (:func:`split_section` with one consumer)."""
    return split_section(d, section, cls)[0]


def check_keys(d: Mapping[str, Any], known: Iterable[str], section: str) -> None:
    """ConfigError naming the first key of ``d`` not in ``known`` (a section read as a plain mapping)."""
    known = set(known)
    for key in d:
        if key not in known:
            raise ConfigError(f"unknown key '{key}' in {_where(section)}; known: {', '.join(sorted(known))}")
