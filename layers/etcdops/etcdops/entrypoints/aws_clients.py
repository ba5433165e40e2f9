"""AWS clients made once per Lambda container and reused by every invocation it serves.

Making a botocore client loads and parses its service model; a new ``boto3`` session per invocation
re-reads every model it is asked for. HealthCheck runs every minute per cluster (every second on the
local stack) and asked for ~9 clients a round, so the handlers keep one :class:`ContainerClients` at
module level: the session and each client are made on first use (inside an invocation, with that
invocation's environment and credentials) and kept for the container's life, as AWS advises for
Lambda. A handler module is loaded once per container (per sandbox on the local stack), so two
functions never share clients or credentials.

It answers ``client(service)`` as a boto3 session does, so the entrypoints and factories that take
a session take it unchanged, and tests still pass their own session, clients or fakes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import boto3

__all__ = ["ContainerClients"]


class ContainerClients:
    """One session and one client per service, made lazily, thread-safe (clients are thread-safe
    once made; making them through one session is not)."""

    def __init__(self, session_factory: Callable[[], Any] | None = None) -> None:
        self._session_factory = session_factory  # None: boto3's default session, looked up when first needed
        self._session: Any = None
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def client(self, service: str) -> Any:
        """The container's client for ``service`` (made on the first call)."""
        with self._lock:
            made = self._clients.get(service)
            if made is None:
                if self._session is None:
                    factory = self._session_factory or boto3.session.Session
                    self._session = factory()
                made = self._clients[service] = self._session.client(service)
            return made

    def made(self) -> list[str]:
        """The services whose clients exist (for tests and benchmarks)."""
        with self._lock:
            return sorted(self._clients)
