"""Cold import time of each Lambda handler, measured with ``python -X importtime``.

Each handler's ``app`` module is imported in a fresh interpreter (``--runs`` times; the best and
the median are reported, since a shared machine adds noise), with the layer on ``sys.path`` as
in Lambda. The budget is 500 ms per handler. ``--top N`` lists the heaviest imports of the best run.

    python bench/bench_imports.py [--runs 7] [--top 8] [FUNCTION ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUDGET_MS = 500.0


def import_profile(function: str) -> tuple[float, list[tuple[float, str]]]:
    """(cumulative ms of ``import app``, [(cumulative ms, module)] of every import) in a fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "layers" / "etcdops"), "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import app"],
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
    parser.add_argument("--top", type=int, default=0)
    args = parser.parse_args()
    functions = args.functions or sorted(p.name for p in (ROOT / "functions").iterdir() if (p / "app.py").exists())
    print(f"{'function':<20} {'best ms':>8} {'median ms':>10}  budget {BUDGET_MS:.0f} ms")
    worst = 0.0
    for function in functions:
        runs = [import_profile(function) for _ in range(args.runs)]
        totals = [total for total, _ in runs]
        best = min(totals)
        worst = max(worst, best)
        verdict = "ok" if best <= BUDGET_MS else "OVER"
        print(f"{function:<20} {best:>8.0f} {statistics.median(totals):>10.0f}  {verdict}")
        if args.top:
            _, modules = min(runs, key=lambda r: r[0])
            # the modules that ``app`` imports directly: indented one level below it
            direct = [m for m in modules if m[1].startswith("   ") and not m[1].startswith("    ")]
            heaviest = sorted(direct, reverse=True)[: args.top]
            for ms, name in heaviest:
                print(f"{'':<20} {ms:>8.0f}  {name.strip()}")
    return 0 if worst <= BUDGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
