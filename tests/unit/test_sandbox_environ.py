"""A Lambda sandbox's environment variables, for handlers that run as threads of one process: the
sandbox's threads see its function's variables over the process's, other threads the process's own,
and nothing is written to the process environment, so a thread walking it meanwhile (botocore does
for every client it makes) never meets a variable that vanished mid-walk (a ``KeyError`` that failed
Step Functions tasks with ``States.Runtime`` when invocations applied their variables to the process)."""

from __future__ import annotations

import os
import threading
import urllib.request
from collections.abc import Iterator

import pytest

from etcdops_local.aws import sandbox as localsandbox
from etcdops_local.aws.sandbox import Sandbox, bound


@pytest.fixture
def installed() -> Iterator[None]:
    undo = localsandbox.install()
    try:
        yield
    finally:
        undo()


def box(**variables: str) -> Sandbox:
    return Sandbox("etcdops-test", None, None, variables)


@pytest.mark.usefixtures("installed")
def test_a_sandbox_sees_its_variables_over_the_process_and_other_threads_do_not() -> None:
    before = dict(os.environ)
    outside: dict[str, object] = {}
    ask, answered = threading.Event(), threading.Event()

    def other_thread() -> None:  # started before the binding: not the sandbox's
        ask.wait(timeout=30)
        outside.update(variable=os.environ.get("ETCDOPS_TEST_ONLY"), home=os.environ.get("HOME"))
        answered.set()

    other = threading.Thread(target=other_thread)
    other.start()
    with bound(box(ETCDOPS_TEST_ONLY="1", HOME="/sandbox-home")):
        inside = {
            "get": os.environ.get("ETCDOPS_TEST_ONLY"),
            "item": os.environ["HOME"],
            "in": "ETCDOPS_TEST_ONLY" in os.environ,
            "copy": os.environ.copy()["ETCDOPS_TEST_ONLY"],
            "spread": {**os.environ}["HOME"],
            "items": ("ETCDOPS_TEST_ONLY", "1") in os.environ.items(),
            "len": len(os.environ) == len(before) + 1,
        }
        started: dict[str, str | None] = {}
        child = threading.Thread(target=lambda: started.update(variable=os.getenv("ETCDOPS_TEST_ONLY")))
        child.start()
        child.join(timeout=30)
        ask.set()
        answered.wait(timeout=30)
    other.join(timeout=30)

    assert inside == {"get": "1", "item": "/sandbox-home", "in": True, "copy": "1", "spread": "/sandbox-home",
                      "items": True, "len": True}  # fmt: skip
    assert started == {"variable": "1"}  # a thread the sandbox starts is the sandbox's
    assert outside == {"variable": None, "home": before.get("HOME")}
    assert dict(os.environ) == before and b"ETCDOPS_TEST_ONLY" not in os.environb  # the process's: untouched


@pytest.mark.usefixtures("installed")
def test_sandboxes_bound_in_many_threads_at_once_leave_a_walk_of_the_environment_whole() -> None:
    before = dict(os.environ)
    threads, binds = 8, 300
    start = threading.Barrier(threads + 1)
    wrong: list[str] = []
    walks: list[int] = []
    finished = threading.Event()

    def invocations(i: int) -> None:
        start.wait()
        for n in range(binds):
            with bound(box(**{f"ETCDOPS_TEST_{i}_{n % 3}": str(n), "ETCDOPS_TEST_SHARED": str(i)})):
                if os.environ.get(f"ETCDOPS_TEST_{i}_{n % 3}") != str(n) or os.environ["ETCDOPS_TEST_SHARED"] != str(i):
                    wrong.append(f"thread {i} bind {n}")

    def walker() -> None:
        start.wait()
        while not finished.is_set():
            try:
                urllib.request.getproxies()  # what botocore asks for every client it makes
                if dict(os.environ) != before:
                    wrong.append("the process environment changed")
            except Exception as exc:  # what the walk met, said by the assertion below
                wrong.append(f"{type(exc).__name__}: {exc}")
            walks.append(1)

    workers = [threading.Thread(target=invocations, args=(i,)) for i in range(threads)]
    walking = threading.Thread(target=walker)
    for thread in [*workers, walking]:
        thread.start()
    for thread in workers:
        thread.join(timeout=120)
    finished.set()
    walking.join(timeout=120)

    assert wrong == [] and walks
