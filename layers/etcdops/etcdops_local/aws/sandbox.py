"""What a Lambda sandbox gives the code in it, for handlers that run as threads of one process.

In Lambda each function runs in its own sandbox: its role's credentials and its variables in its
environment, its own ``/tmp`` of the configured ephemeral storage size. The local stack runs every
handler in threads of one process, so all three are kept per thread here instead of in process-wide state:

* :class:`Sandbox` is bound to the invoking thread for the length of an invocation (:func:`bound`),
  and every thread that thread starts inherits it (the handler's worker pools and readers), so the
  code a handler runs, wherever it runs, acts as the function.
* ``os.environ`` read in a sandbox shows the function's variables over the process's; other threads
  see the process's own. Nothing is written to the process environment per invocation: invocations
  run beside other threads (the Step Functions interpreter's, the timer's, other invocations'), and
  stdlib code that walks ``os.environ`` (``urllib.request.getproxies``, which botocore calls for every
  client it makes) fails with ``KeyError`` when another thread removes a variable mid-walk. A
  handler's own write to ``os.environ`` goes to the process environment (none of ours writes).
* boto3 sessions created without explicit keys get the bound sandbox's credentials: a credential
  provider that botocore asks first (:func:`install`). Outside a sandbox the ordinary chain applies.
* ``tempfile`` (``gettempdir``, ``mkstemp``, ``TemporaryDirectory``...) answers with the bound
  sandbox's temporary directory. The local stack mounts a tmpfs of the function's
  ``EphemeralStorage`` size there (:func:`mount_tmpfs`), so writing more fails with ENOSPC as in
  Lambda. Code that hard-codes ``/tmp`` would escape this; the package never does.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from etcdops.domain.errors import EtcdopsError

log = logging.getLogger("etcdops_local.aws.sandbox")


class SandboxError(EtcdopsError):
    """A sandbox limit cannot be enforced here (for example: no permission to mount a tmpfs)."""


@dataclass(frozen=True)
class Credentials:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None


@dataclass(frozen=True)
class Sandbox:
    """One function's sandbox: who it is, the credentials it acts with, and its temporary directory."""

    function: str  # the function's name
    credentials: Credentials | None
    tmp_dir: Path | None
    environment: Mapping[str, str] = field(default_factory=dict)  # the function's variables


_LOCAL = threading.local()


def current() -> Sandbox | None:
    """The sandbox bound to this thread (or inherited from the thread that started it)."""
    return getattr(_LOCAL, "sandbox", None)


@contextlib.contextmanager
def bound(sandbox: Sandbox) -> Iterator[Sandbox]:
    """Bind ``sandbox`` to this thread for the block (nested bindings restore the outer one)."""
    outer = current()
    _LOCAL.sandbox = sandbox
    try:
        yield sandbox
    finally:
        _LOCAL.sandbox = outer


# ---- installation: threads inherit, botocore asks us first, tempfile and os.environ answer per sandbox ---


_installed: list[Callable[[], None]] = []
_install_lock = threading.Lock()


def install() -> Callable[[], None]:
    """Patch threading, botocore and tempfile (idempotent); returns the undo."""
    with _install_lock:
        if _installed:
            return lambda: None
        _installed.extend([_patch_threads(), _patch_botocore(), _patch_tempfile(), _patch_environ()])

    def undo() -> None:
        with _install_lock:
            while _installed:
                _installed.pop()()

    return undo


def _patch_threads() -> Callable[[], None]:
    original_start = threading.Thread.start

    def start(self: threading.Thread) -> None:
        sandbox = current()
        if sandbox is not None and not getattr(self, "_etcdops_sandbox", None):
            self._etcdops_sandbox = sandbox  # type: ignore[attr-defined]
            run = self.run

            def run_in_sandbox() -> None:
                with bound(sandbox):
                    run()

            self.run = run_in_sandbox  # type: ignore[method-assign]
        original_start(self)

    threading.Thread.start = start  # type: ignore[method-assign]
    return lambda: setattr(threading.Thread, "start", original_start)


def _patch_botocore() -> Callable[[], None]:
    import botocore.credentials as botocore_credentials

    class SandboxProvider(botocore_credentials.CredentialProvider):
        """The bound sandbox's credentials, as Lambda puts the role's keys into the function's environment."""

        METHOD = "etcdops-local-sandbox"
        CANONICAL_NAME = "EtcdopsLocalSandbox"

        def load(self) -> Any:
            sandbox = current()
            if sandbox is None or sandbox.credentials is None:
                return None
            c = sandbox.credentials
            return botocore_credentials.Credentials(
                c.access_key_id, c.secret_access_key, c.session_token, method=self.METHOD
            )

    original = botocore_credentials.create_credential_resolver

    def create_credential_resolver(*args: Any, **kwargs: Any) -> Any:
        resolver = original(*args, **kwargs)
        resolver.providers.insert(0, SandboxProvider())
        return resolver

    botocore_credentials.create_credential_resolver = create_credential_resolver
    return lambda: setattr(botocore_credentials, "create_credential_resolver", original)


def _patch_tempfile() -> Callable[[], None]:
    original = tempfile._gettempdir  # type: ignore[attr-defined]

    def gettempdir() -> Any:
        sandbox = current()
        if sandbox is not None and sandbox.tmp_dir is not None:
            return str(sandbox.tmp_dir)
        return original()

    tempfile._gettempdir = gettempdir  # type: ignore[attr-defined]
    return lambda: setattr(tempfile, "_gettempdir", original)


def _patch_environ() -> Callable[[], None]:
    environ = os.environ
    original = type(environ)

    class SandboxEnviron(original):  # type: ignore[valid-type,misc]
        """``os.environ``: in a sandbox its function's variables over the process's (``get``, ``in``,
        ``items``, ``copy`` and ``**`` all go through these three)."""

        def __getitem__(self, key: str) -> str:
            sandbox = current()
            if sandbox is not None and key in sandbox.environment:
                return sandbox.environment[key]
            value: str = super().__getitem__(key)
            return value

        def __iter__(self) -> Iterator[str]:
            keys = list(super().__iter__())
            sandbox = current()
            if sandbox is not None:
                own = set(keys)
                keys.extend(k for k in sandbox.environment if k not in own)
            return iter(keys)

        def __len__(self) -> int:
            return sum(1 for _ in self)

        def copy(self) -> dict[str, str]:
            return dict(self)

    environ.__class__ = SandboxEnviron
    return lambda: setattr(environ, "__class__", original)


# ---- a sized /tmp ------------------------------------------------------------------------------------


def mount_tmpfs(directory: Path, size_mb: int) -> None:
    """Mount a tmpfs of ``size_mb`` MiB on ``directory`` (created), or raise :class:`SandboxError`."""
    directory.mkdir(parents=True, exist_ok=True)
    command = ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m,mode=1777", "tmpfs", str(directory)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SandboxError(f"cannot mount a {size_mb} MiB tmpfs on {directory}: {exc}") from None
    if done.returncode != 0:
        reason = (done.stderr or done.stdout).strip() or f"mount exited {done.returncode}"
        raise SandboxError(f"cannot mount a {size_mb} MiB tmpfs on {directory}: {reason}")


def unmount(directory: Path) -> None:
    """Unmount ``directory`` (lazily: a straggling thread may still hold a file there)."""
    done = subprocess.run(["umount", "-l", str(directory)], capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        log.warning("unmounting %s: %s", directory, (done.stderr or done.stdout).strip())


def can_mount() -> bool:
    """True when this process may mount a tmpfs (root, or CAP_SYS_ADMIN)."""
    return os.geteuid() == 0
