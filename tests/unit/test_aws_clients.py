"""The handlers' AWS clients: made on first use, once per container, shared by its threads."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, ClassVar

import pytest

from etcdops.entrypoints.aws_clients import ContainerClients

ROOT = Path(__file__).resolve().parents[2]


class CountingSession:
    """A session that counts the clients it makes (each an object of its own)."""

    sessions: ClassVar[list[CountingSession]] = []

    def __init__(self) -> None:
        self.made: list[str] = []
        CountingSession.sessions.append(self)

    def client(self, service: str) -> Any:
        self.made.append(service)
        return object()


@pytest.fixture
def sessions() -> list[CountingSession]:
    CountingSession.sessions = []
    return CountingSession.sessions


def test_nothing_is_made_before_a_client_is_asked_for(sessions: list[CountingSession]) -> None:
    clients = ContainerClients(CountingSession)
    assert sessions == [] and clients.made() == []


def test_each_client_is_made_once_and_reused(sessions: list[CountingSession]) -> None:
    clients = ContainerClients(CountingSession)
    ssm = clients.client("ssm")
    for _ in range(5):  # five invocations of one container
        assert clients.client("ssm") is ssm
        clients.client("dynamodb")
    assert len(sessions) == 1 and sessions[0].made == ["ssm", "dynamodb"]
    assert clients.made() == ["dynamodb", "ssm"]


def test_threads_asking_at_once_get_one_client(sessions: list[CountingSession]) -> None:
    clients = ContainerClients(CountingSession)
    start = threading.Barrier(8)
    got: list[Any] = []

    def ask() -> None:
        start.wait()
        got.append(clients.client("stepfunctions"))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(got) == 8 and len({id(c) for c in got}) == 1
    assert len(sessions) == 1 and sessions[0].made == ["stepfunctions"]


def test_two_containers_share_nothing(sessions: list[CountingSession]) -> None:
    first, second = ContainerClients(CountingSession), ContainerClients(CountingSession)
    assert first.client("sns") is not second.client("sns")
    assert len(sessions) == 2


def test_every_handler_keeps_its_clients_for_the_container() -> None:
    """No handler makes a boto3 session per invocation: each asks its module's ContainerClients."""
    handlers = sorted((ROOT / "functions").glob("*/app.py"))
    assert handlers
    for path in handlers:
        text = path.read_text()
        assert "boto3" not in text, path
        assert "aws_clients = ContainerClients()" in text, path
