"""Configuration: one loader, one policy (a key nothing reads is an error naming it and its section)."""

from __future__ import annotations

import pytest
from conftest import start_server, stop_server

from lib.config import ConfigError, app_config, from_section, merge_overrides
from lib.geos import GeoSConfig
from lib.settings import app_settings


def test_app_defaults_build_every_section():
    s = app_settings()
    assert s.tracking is False
    assert s.geos == GeoSConfig()  # configs/app.yaml and the code agree
    assert s.prnet.max_steps == 2000 and s.propagation.tau == 0.5 and s.prelabel.stride == 2
    assert s.segmentation.min_component_fraction == 0.25 and s.server.infer_workers == 2


def test_conf_strings_are_parsed_and_dotted_keys_reach_sections():
    cfg = merge_overrides({"a": 1, "geos": {"lamb": 1.0, "iterations": 4}}, {"a": "2", "geos.iterations": "8", "x": "[1, 2]"})
    assert cfg == {"a": 2, "geos": {"lamb": 1.0, "iterations": 8}, "x": [1, 2]}
    with pytest.raises(ValueError, match="nope"):
        merge_overrides({"a": 1}, {"nope.b": "1"})


def test_prnet_section_is_split_by_consumer():
    s = app_settings({"prnet.propagation.tau": "0.7", "prnet.train.patch_size": "[48, 32, 32]",
                      "prnet.prelabel.geos.opening_mm": "6"})
    assert s.propagation.tau == 0.7 and s.prnet.patch_size == (48, 32, 32)
    assert s.pseudo_mask_geos.opening_mm == 6.0 and s.geos.opening_mm == 0  # the pseudo masks' own GeoS
    # raster-scan passes per consumer: Slicer's scribbles 2, one OHIF click and the pseudo masks 4
    assert (s.geos.iterations, s.points.geos(s.geos).iterations, s.pseudo_mask_geos.iterations) == (2, 4, 4)


@pytest.mark.parametrize("key, section", [
    ("prnet.regularise", "'prnet'"),  # the old flat prnet section, misspelt: accepted and ignored before
    ("prnet.propagation.regularise", "'prnet.propagation'"),
    ("prnet.train.tau", "'prnet.train'"),  # a propagation key in the trainer's section
    ("geos.lamda", "'geos'"),
    ("prnet.prelabel.geos.lamda", "'prnet.prelabel.geos'"),
    ("points.radius", "'points'"),
    ("segmentation.plc.delta", "'segmentation.plc'"),
    ("segmentation.oeem.per_klass", "'segmentation.oeem'"),
    ("server.cors", "'server'"),
    ("dicomweb.ttl", "'dicomweb'"),
    ("trackin", "top level"),
])
def test_unknown_key_anywhere_is_an_error_naming_key_and_section(key, section):
    leaf = key.rsplit(".", 1)[-1]
    with pytest.raises(ConfigError, match=rf"unknown key '{leaf}' in .*{section}.*known: "):
        app_settings({key: "1"})


def test_bad_values_are_errors_that_say_what_to_fix():
    with pytest.raises(ConfigError, match="true or false"):
        app_settings({"segmentation.oeem.per_class": "maybe"})
    assert app_settings({"segmentation.oeem.per_class": "false"}).segmentation.oeem.per_class is False
    with pytest.raises(ConfigError, match="must be a number"):
        app_settings({"geos.iterations": "many"})
    with pytest.raises(ConfigError, match="regularize"):
        app_settings({"prnet.propagation.regularize": "rigid"})
    with pytest.raises(ConfigError, match="must be a section"):
        app_settings({"segmentation.plc": "3"})
    assert from_section(GeoSConfig, {"margin_mm": [10, 10, 20]}, "geos").margin_mm == (10, 10, 20)
    assert app_config()["prnet"]["train"]["max_steps"] == 2000  # the raw mapping is still there for tools


@pytest.mark.parametrize("bad", ["-1", "all", "1.5", "true"])
def test_job_threads_is_auto_or_a_count(bad):
    assert app_settings({}).job_threads == "auto"
    assert app_settings({"job_threads": "3"}).job_threads == 3
    with pytest.raises(ConfigError, match="job_threads must be 'auto', 0"):
        app_settings({"job_threads": bad})


@pytest.mark.e2e
def test_server_refuses_to_start_on_an_unknown_key(tmp_path):
    """Start-up: ``monailabel start_server ... --conf prnet.regularise none`` exits, naming the key and its section."""
    studies = tmp_path / "studies"
    studies.mkdir()
    with pytest.raises(RuntimeError, match="unknown key 'regularise' in 'prnet'"):
        server = start_server(studies, tmp_path, conf={"prnet.regularise": "none", "model_dir": str(tmp_path / "model")},
                              timeout=240)
        stop_server(server)
