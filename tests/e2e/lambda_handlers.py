"""Loading a function's handler as Lambda does (its app.py as a module), and a context for it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
ACCOUNT = "123456789012"


def load_handler(name: str) -> ModuleType:
    """``functions/<name>/app.py``, freshly imported (module-level state starts cold)."""
    spec = importlib.util.spec_from_file_location(f"function_{name}", ROOT / "functions" / name / "app.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # pydantic models in the module resolve their annotations through it
    spec.loader.exec_module(module)
    return module


def lambda_context(function_name: str = "etcdops-test", memory_mb: int = 512) -> Any:
    return SimpleNamespace(
        function_name=function_name,
        memory_limit_in_mb=memory_mb,
        invoked_function_arn=f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{function_name}",
        aws_request_id="req-1",
    )
