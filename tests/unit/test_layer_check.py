"""The built layer is byte-compiled for the runtime (tools/layer_check.py, run by bin/test after sam build)."""

from __future__ import annotations

import compileall
import py_compile
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tools"))
from layer_check import problems

RUNNING = f"{sys.version_info.major}.{sys.version_info.minor}"


def layer(tmp_path: Path, mode: py_compile.PycInvalidationMode | None) -> Path:
    package = tmp_path / "python" / "pkg"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "mod.py").write_text("VALUE = 1\n")
    if mode is not None:
        assert compileall.compile_dir(tmp_path / "python", quiet=1, invalidation_mode=mode)
    return tmp_path


def test_a_layer_compiled_as_the_makefile_does_passes(tmp_path: Path) -> None:
    assert problems(layer(tmp_path, py_compile.PycInvalidationMode.UNCHECKED_HASH), RUNNING) == (2, [])


def test_a_layer_without_pyc_or_with_timestamped_pyc_fails_by_module(tmp_path: Path) -> None:
    tag = "cpython-" + RUNNING.replace(".", "")
    assert problems(layer(tmp_path / "plain", None), RUNNING) == (
        2,
        [f"pkg/__init__.py: no __init__.{tag}.pyc", f"pkg/mod.py: no mod.{tag}.pyc"],
    )
    _, found = problems(layer(tmp_path / "stamped", py_compile.PycInvalidationMode.TIMESTAMP), RUNNING)
    assert found[-1] == f"pkg/__pycache__/mod.{tag}.pyc: not compiled with --invalidation-mode unchecked-hash"


def test_a_layer_compiled_for_another_runtime_fails(tmp_path: Path) -> None:
    _, found = problems(layer(tmp_path, py_compile.PycInvalidationMode.UNCHECKED_HASH), "3.9")
    assert found == ["pkg/__init__.py: no __init__.cpython-39.pyc", "pkg/mod.py: no mod.cpython-39.pyc"]


def test_no_build_says_so(tmp_path: Path) -> None:
    assert problems(tmp_path) == (0, [f"{tmp_path / 'python'}: no such directory (did sam build run?)"])


def test_a_layer_holding_or_importing_the_local_stack_fails_by_name(tmp_path: Path) -> None:
    # Given a compiled layer with the local-stack package beside etcdops, and an etcdops module importing it
    built = layer(tmp_path, None)
    (built / "python" / "etcdops_local").mkdir()
    (built / "python" / "etcdops_local" / "__init__.py").write_text("")
    package = built / "python" / "etcdops"
    package.mkdir()
    (package / "factory.py").write_text("from etcdops_local.compute import open_local\nimport moto\n")
    unchecked = py_compile.PycInvalidationMode.UNCHECKED_HASH
    assert compileall.compile_dir(built / "python", quiet=1, invalidation_mode=unchecked)

    # Then the check names each problem
    _, found = problems(built, RUNNING)
    assert found == [
        "etcdops_local: a local-only package in the layer",
        "etcdops/factory.py: imports etcdops_local.compute",
        "etcdops/factory.py: imports moto",
    ]
