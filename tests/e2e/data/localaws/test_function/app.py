"""A test-only Lambda handler for the local AWS stack's tests (never deployed).

Scheduled events (``source: aws.events``) are recorded, and held while ``<ATTEMPTS_DIR>/hold`` exists.
Other events pick a behaviour by ``mode``: ok, flaky (fails with FlakyError on the first attempt of an
execution), fatal (FatalError), broken (BrokenError); whoami (the caller's ARN, as STS sees it, from
the handler's thread and from a thread it starts), read-parameter (SSM ``name``), write-tmp (``mb``
MiB into a temporary file, ``keep`` to leave it there), respond (a result of ``bytes`` bytes), large
(a result of 300,000 bytes: more than a Step Functions state may carry).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import boto3


class FlakyError(Exception):
    pass


class FatalError(Exception):
    pass


class BrokenError(Exception):
    pass


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    attempts = Path(os.environ["ATTEMPTS_DIR"])
    if event.get("source") == "aws.events":
        while (attempts / "hold").exists():
            time.sleep(0.05)
        with (attempts / "scheduled.jsonl").open("a") as out:
            out.write(json.dumps(event) + "\n")
        return {"scheduled": event["time"]}
    mode = event.get("mode")
    if mode == "flaky":
        counter = attempts / f"{event['execution']}.count"
        count = int(counter.read_text()) + 1 if counter.exists() else 1
        counter.write_text(str(count))
        if count == 1:
            raise FlakyError(f"attempt {count} of {event['execution']} fails")
    elif mode == "fatal":
        raise FatalError("this cannot work")
    elif mode == "broken":
        raise BrokenError("nobody catches this")
    elif mode == "whoami":
        seen: dict[str, str] = {}

        def ask(where: str) -> None:
            seen[where] = boto3.session.Session().client("sts").get_caller_identity()["Arn"]

        ask("handler")
        worker = threading.Thread(target=ask, args=("thread",))
        worker.start()
        worker.join()
        return seen
    elif mode == "read-parameter":
        ssm = boto3.session.Session().client("ssm")
        return {"value": ssm.get_parameter(Name=event["name"])["Parameter"]["Value"]}
    elif mode == "write-tmp":
        block = b"x" * (1 << 20)
        with tempfile.NamedTemporaryFile(delete=not event.get("keep")) as out:
            for _ in range(int(event["mb"])):
                out.write(block)
            out.flush()
            os.fsync(out.fileno())
            return {"tmp": tempfile.gettempdir(), "file": out.name, "written_mb": int(event["mb"])}
    elif mode in ("respond", "large"):
        return {"data": "x" * int(event.get("bytes", 300_000))}
    return {
        "mode": mode,
        "execution": event.get("execution"),
        "greeting": event.get("greeting"),
        "function_name": context.function_name,
        "env": {k: os.environ.get(k) for k in ("CLUSTER_CONFIG_PARAMETER", "TOPIC_ARN", "ATTEMPTS_DIR", "AWS_REGION")},
    }
