"""The committed gRPC stubs are exactly what the pinned grpcio-tools makes from proto/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_committed_stubs_match_fresh_ones() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "genproto.py"), "--check"], capture_output=True, text=True
    )

    assert result.returncode == 0, result.stderr
