"""How the commands print: text for people (aligned tables that fit the terminal) or exact JSON."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any


def emit(args: argparse.Namespace, data: Any, human: Callable[[], str]) -> None:
    if args.json:
        print(json.dumps(data, indent=2, default=str))
    else:
        text = human()
        if text:
            print(text)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], width: int | None = None) -> str:
    """Aligned columns; on a terminal (or within ``width``) the widest columns are cut to fit, marked ``~``."""
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    if width is None and sys.stdout.isatty():
        import shutil

        width = shutil.get_terminal_size().columns
    if width is not None:
        widths = fit_widths(widths, width - 2 * (len(widths) - 1))
    return "\n".join(
        "  ".join(cut(c, w).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def fit_widths(widths: list[int], room: int, narrowest: int = 8) -> list[int]:
    """Column widths that add up to at most ``room``: the widest column gives way first, down to ``narrowest``."""
    widths = list(widths)
    while sum(widths) > room:
        widest = max(range(len(widths)), key=lambda i: widths[i])
        if widths[widest] <= narrowest:
            break
        widths[widest] = max(narrowest, widths[widest] - (sum(widths) - room))
    return widths


def cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "~"


def human_bytes(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def command_seconds() -> float:
    """Seconds since this process started (interpreter start-up and imports included): what the
    person who typed the command waited. Read from the kernel's record of the process."""
    import os
    import time
    from pathlib import Path

    try:  # field 22 of stat, the start time in clock ticks after boot (fields 3.. follow the ")")
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return time.process_time()  # no /proc: the CPU time at least
    return max(0.0, uptime - ticks / os.sysconf("SC_CLK_TCK"))
