from __future__ import annotations

import pytest

from lib.config import app_config, merge_overrides
from lib.geos import GeoSConfig


def test_app_defaults_build_a_geos_config():
    cfg = app_config()
    assert cfg["tracking"] is False
    assert GeoSConfig.from_dict(cfg["geos"]) == GeoSConfig()  # configs/app.yaml and the code agree


def test_conf_strings_are_parsed_and_dotted_keys_reach_sections():
    cfg = merge_overrides({"a": 1, "geos": {"lamb": 1.0, "iterations": 4}}, {"a": "2", "geos.iterations": "8", "x": "[1, 2]"})
    assert cfg == {"a": 2, "geos": {"lamb": 1.0, "iterations": 8}, "x": [1, 2]}
    with pytest.raises(ValueError, match="nope"):
        merge_overrides({"a": 1}, {"nope.b": "1"})


def test_prnet_section_builds_the_prnet_configs():
    from lib.prnet.propagate import PropagationConfig
    from lib.prnet.train import PRNetConfig

    p = app_config({"prnet.tau": "0.7", "prnet.patch_size": "[48, 32, 32]"})["prnet"]
    assert PropagationConfig.from_dict(p).tau == 0.7
    assert PRNetConfig.from_dict(p).patch_size == (48, 32, 32)


def test_segmentation_section_builds_the_oeem_setting():
    from lib.segmentation.config import SegConfig

    assert SegConfig.from_dict(app_config()["segmentation"]).oeem.per_class is True  # the default
    seg = app_config({"segmentation.oeem.per_class": "false"})["segmentation"]
    assert SegConfig.from_dict(seg).oeem.per_class is False
    assert SegConfig.from_dict({"oeem": {"per_class": "true"}}).oeem.per_class is True
    with pytest.raises(ValueError, match="true or false"):
        SegConfig.from_dict({"oeem": {"per_class": "maybe"}})
