"""The Lambda functions' logging: one Powertools Logger per function, and every ``etcdops.*`` log line
written through it, so the health decision and its reason, a released lock or a skipped trigger are
structured JSON in CloudWatch (with the invocation's request id, cold start and the function's
service), not lines the Lambda runtime drops.

The package logs through the standard library (``logging.getLogger("etcdops.<module>")``, with the
fields that matter in ``extra``), so the same code logs plainly in the CLI, the local stack and tests.
:func:`function_logger` hands the ``etcdops`` logger tree to the function's Powertools Logger only in
AWS Lambda itself (``AWS_EXECUTION_ENV``): the local stack and the tests run the same handlers inside
their own process, whose logging they own (a log file, pytest's capture).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.utils import copy_config_to_registered_loggers
from aws_lambda_powertools.metrics import EphemeralMetrics

PACKAGE_LOGGER = "etcdops"


def in_aws_lambda(env: Mapping[str, str] = os.environ) -> bool:
    """True inside an AWS Lambda execution environment (the runtime sets ``AWS_EXECUTION_ENV``)."""
    return env.get("AWS_EXECUTION_ENV", "").startswith("AWS_Lambda_")


def route_package_logs(logger: Logger) -> None:
    """Write every ``etcdops.*`` log record through ``logger``'s handler and JSON formatter, at its level."""
    logging.getLogger(PACKAGE_LOGGER)  # registered, so the copy below finds it
    copy_config_to_registered_loggers(source_logger=logger, include={PACKAGE_LOGGER})


def function_logger(service: str, env: Mapping[str, str] = os.environ) -> Logger:
    """The Powertools Logger of the function ``service``; in AWS Lambda the package logs through it."""
    logger = Logger(service=service)
    if in_aws_lambda(env):
        route_package_logs(logger)
    return logger


METRICS_NAMESPACE = "etcdops"


def function_metrics() -> EphemeralMetrics:
    """The function's EMF metrics: an object of its own, flushed by ``@metrics.log_metrics``.

    Not Powertools ``Metrics``: every ``Metrics`` object in a process shares one metric set and one set of
    dimensions (class attributes). Where several invocations run in one process at once (the local stack
    runs each sandbox as a thread: the fan-out's rounds for several clusters at a time), one cluster's
    ``add_dimension("cluster", ...)`` replaced another's (Powertools warned "Dimension 'cluster' has already
    been added") and one flush published both clusters' values under one cluster. ``EphemeralMetrics``
    keeps them per object, and a sandbox serves one invocation at a time, as a Lambda execution environment
    does. No service dimension: the metrics' only dimension is cluster (plus member), which the alarms match
    exactly."""
    return EphemeralMetrics(namespace=METRICS_NAMESPACE)
