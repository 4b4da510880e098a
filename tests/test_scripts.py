"""The benchmark and tool scripts still match the library they call (they are not run in CI: minutes each)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "scripts").glob("*.py"))


def lib_imports(path: Path) -> list[tuple[str, str]]:
    """Every ``from lib... import name`` of a script, at the top or inside a function: ``(module, name)``."""
    tree = ast.parse(path.read_text(), str(path))
    return [(node.module, alias.name) for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "lib"
            for alias in node.names]


@pytest.mark.parametrize("script", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_every_name_a_script_imports_from_lib_exists(script: Path):
    missing = [f"{module}.{name}" for module, name in lib_imports(script)
               if not hasattr(importlib.import_module(module), name)]
    assert not missing, f"{script.name} imports names lib no longer has: {missing}"


def test_the_check_sees_imports_inside_functions(tmp_path: Path):
    script = tmp_path / "s.py"
    script.write_text("def main():\n    from lib.prnet.checkpoint import load_prnet, not_there\n")
    assert lib_imports(script) == [("lib.prnet.checkpoint", "load_prnet"), ("lib.prnet.checkpoint", "not_there")]
    assert not hasattr(importlib.import_module("lib.prnet.checkpoint"), "not_there")
