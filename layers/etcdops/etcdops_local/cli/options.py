"""The options every ``etcdops`` command takes, wherever they stand, and what they resolve to.

A global option is honoured before or after the command (``etcdops --state-dir X local down`` is
``etcdops local down --state-dir X``): each subcommand's copy of the option has no default of its
own (``argparse.SUPPRESS``), so it can never overwrite the value given before the command, and the
defaults are filled in once, after parsing, by :func:`finish`.

Besides our own ``--config``, the etcdctl spellings work: ``--endpoints``, ``--cacert``, ``--cert``,
``--key``, ``-w json|table|simple``, and the ``ETCDCTL_*`` environment variables when no cluster
configuration is given at all.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from botocore.exceptions import BotoCoreError, ClientError, NoRegionError

from etcdops.domain.config import ClusterConfig, load_config, parse_config
from etcdops.domain.errors import ConfigError, EtcdopsError, UsageError

TESTED_ETCD_VERSIONS = ("3.5.30", "3.5.1", "3.4.23")
"""The etcd versions the test suite runs every integration test against (tests/etcd_versions.py)."""

WRITE_OUT = ("json", "table", "simple")

GLOBAL_DEFAULTS: dict[str, Any] = {
    "config": None,
    "state_dir": None,
    "json": False,
    "write_out": None,
    "endpoints": None,
    "cacert": None,
    "cert": None,
    "key": None,
    "debug": False,
    "stack_name": None,
    "cluster": None,
}
"""Every global option's destination and its value when it is not given anywhere."""


class Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line on stderr (exit status 2)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see: {self.prog} --help)\n")


def global_options() -> Parser:
    """The parent parser of every (sub)command: the global options, with no defaults of their own."""
    common = Parser(add_help=False)
    group = common.add_argument_group("global options (before or after the command)")
    add = group.add_argument
    flag: dict[str, Any] = {"action": "store_true", "default": argparse.SUPPRESS}
    text: dict[str, Any] = {"type": nonempty, "default": argparse.SUPPRESS}
    add("--config", metavar="PATH", **text, help="cluster configuration (default: the local stack's)")
    add("--state-dir", metavar="DIR", **text, help="local stack state directory (default: ./.etcdops)")
    add("--json", **flag, help="print exact JSON instead of text (= -w json)")
    add("-w", "--write-out", choices=WRITE_OUT, default=argparse.SUPPRESS, help="output format, as etcdctl's")
    add("--endpoints", metavar="URLS", **text, help="comma-separated client URLs (default: the config's)")
    add("--cacert", metavar="PATH", **text, help="CA bundle of the servers' certificates")
    add("--cert", metavar="PATH", **text, help="client certificate")
    add("--key", metavar="PATH", **text, help="client certificate's key")
    add("--stack-name", metavar="NAME", **text, help="a deployed etcdops stack (default: $ETCDOPS_STACK)")
    add("--cluster", metavar="NAME", **text, help="one cluster of the local fleet (local up --clusters N)")
    add("--debug", **flag, help="on an unexpected error, print the traceback too")
    return common


VALUED_OPTIONS = ("--config", "--state-dir", "-w", "--write-out", "--endpoints", "--cacert", "--cert", "--key",
                  "--stack-name", "--cluster")  # fmt: skip


def refuse_contradictions(argv: Sequence[str]) -> None:
    """A global option given twice with different values (``--state-dir A local down --state-dir B``)
    is refused: one of the two would be ignored."""
    seen: dict[str, str] = {}
    words = list(argv)
    for i, word in enumerate(words):
        if word == "--":
            break
        name, has_value, value = word.partition("=")
        if name not in VALUED_OPTIONS or (not has_value and i + 1 >= len(words)):
            continue
        value = value if has_value else words[i + 1]
        name = "--write-out" if name == "-w" else name
        if seen.setdefault(name, value) != value:
            raise UsageError(f"{name} given twice: {seen[name]} and {value}; give it once")


# which global options a command reads besides the output ones (--json, -w, --debug): a command sets
# ``uses`` with set_defaults; one that does not reads the cluster (resolve_config) and the AWS side
CLUSTER_OPTIONS = frozenset({"config", "state_dir", "endpoints", "cacert", "cert", "key", "stack_name", "cluster"})
AWS_OPTIONS = frozenset({"stack_name", "state_dir"})
LOCAL_OPTIONS = frozenset({"state_dir"})
FLEET_LOCAL_OPTIONS = frozenset({"state_dir", "cluster"})  # a local command that can act on one fleet cluster
NO_OPTIONS: frozenset[str] = frozenset()
OUTPUT_OPTIONS = frozenset({"json", "write_out", "debug"})


def finish(args: argparse.Namespace) -> argparse.Namespace:
    """Refuse the global options the command would ignore, fill in the defaults of those not given
    anywhere, and reconcile ``--json`` with ``-w``."""
    uses = getattr(args, "uses", CLUSTER_OPTIONS) | OUTPUT_OPTIONS
    ignored = sorted(name for name in GLOBAL_DEFAULTS if hasattr(args, name) and name not in uses)
    if ignored:
        names = ", ".join("--" + name.replace("_", "-") for name in ignored)
        raise UsageError(f"{names}: not used by this command (it would be ignored)")
    for name, value in GLOBAL_DEFAULTS.items():
        if not hasattr(args, name):
            setattr(args, name, value)
    if args.json and args.write_out not in (None, "json"):
        raise UsageError(f"--json and -w {args.write_out} contradict each other")
    args.json = args.json or args.write_out == "json"
    return args


def nonempty(text: str) -> str:
    """An argparse type: any text but an empty one (an empty value would silently mean the default)."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty value; leave the option out for its default")
    return text


def _number(text: str, kind: type[float] | type[int], what: str) -> float:
    """``text`` as a ``kind``, or the argparse error saying it is not ``what`` (ranges are the caller's)."""
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None


def member_count(text: str) -> int:
    """An argparse type: how many members a local cluster has, 1 to 9."""
    value = int(_number(text, int, "a whole number"))
    if not 1 <= value <= 9:
        raise argparse.ArgumentTypeError(f"{value}: a local cluster has 1 to 9 members (3 or 5 are usual)")
    return value


QUOTA_BYTES_RANGE = (64 * 1024, 8 * 1024**3)
"""What ``local up --quota-backend-bytes`` takes: a fresh backend already holds ~20-30 KiB, and etcd
warns that quotas above 8 GiB are not supported."""


def quota_bytes(text: str) -> int:
    """An argparse type: etcd's backend quota in bytes, 64 KiB to 8 GiB."""
    value = int(_number(text, int, "a whole number of bytes"))
    low, high = QUOTA_BYTES_RANGE
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{value}: give a quota of {low} bytes (64 KiB) to {high} bytes (8 GiB)")
    return value


def positive_seconds(text: str) -> float:
    """An argparse type: a finite number of seconds greater than zero, at most a day."""
    value = _number(text, float, "a number of seconds")
    if not math.isfinite(value) or value <= 0 or value > 86400:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of seconds above 0 and at most 86400")
    return value


def positive_days(text: str) -> float:
    """An argparse type: a finite number of days greater than zero (fractions allowed)."""
    value = _number(text, float, "a number of days")
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: give a number of days above 0, e.g. 7 or 0.5")
    return value


# ---- where the cluster is -------------------------------------------------------------------


def stack_state_dir(args: argparse.Namespace) -> Path:
    """The local stack's own state directory (where its emulated AWS runs), whichever cluster is chosen."""
    return Path(args.state_dir or os.environ.get("ETCDOPS_STATE_DIR") or ".etcdops")


def state_dir(args: argparse.Namespace) -> Path:
    """The local stack's state directory, or with ``--cluster NAME`` that fleet cluster's own (made by
    ``local up --clusters N`` or ``local cluster add NAME`` under ``clusters/NAME``; the default
    cluster's name means the stack's)."""
    base = stack_state_dir(args)
    name = getattr(args, "cluster", None)
    if not name:
        return base
    from etcdops.domain.config import check_cluster_name

    check_cluster_name(name)
    if (base / "clusters" / name).is_dir():
        return base / "clusters" / name
    if (base / "cluster.yaml").exists() and load_config(base / "cluster.yaml").name == name:
        return base
    raise ConfigError(
        f"--cluster {name}: the local stack in {base} has no such cluster (etcdops local up --clusters N makes c1..cN)"
    )


def _base_config(args: argparse.Namespace) -> ClusterConfig | None:
    if args.config:
        return load_config(Path(args.config))
    from etcdops_local.cli.stack import deployed_stack, stack_config

    stack = deployed_stack(args)
    if stack is not None:
        return stack_config(stack, getattr(args, "cluster", None))
    local = state_dir(args) / "cluster.yaml"
    if local.exists():
        return load_config(local)
    if os.environ.get("ETCDOPS_CONFIG"):
        return load_config(Path(os.environ["ETCDOPS_CONFIG"]))
    return None


def _flag_or_env(args: argparse.Namespace, name: str, use_env: bool) -> str | None:
    value: str | None = getattr(args, name)
    if value is None and use_env:
        value = os.environ.get(f"ETCDCTL_{name.upper()}") or None
    return value


def resolve_config(args: argparse.Namespace) -> ClusterConfig:
    """--config, else the deployed stack's (--stack-name), else the local stack's, else $ETCDOPS_CONFIG,
    else ``ETCDCTL_*``; then
    ``--endpoints/--cacert/--cert/--key`` override what that configuration says."""
    base = _base_config(args)
    use_env = base is None
    settings = {name: _flag_or_env(args, name, use_env) for name in ("endpoints", "cacert", "cert", "key")}
    if base is None and settings["endpoints"] is None:
        raise ConfigError(
            "no cluster configuration: pass --config PATH or --endpoints URLS, set ETCDOPS_CONFIG or "
            "ETCDCTL_ENDPOINTS, or start one with: etcdops local up"
        )
    if not any(settings.values()):
        assert base is not None
        return _with_tls_files(args, base)
    document: dict[str, Any] = (
        base.model_dump(mode="json", exclude_none=True) if base else {"name": "etcdctl", "endpoints": []}
    )
    source = "--endpoints/--cacert/--cert/--key" + ("" if base else " or ETCDCTL_*")
    given_tls = {field: settings[name] for field, name in (("ca", "cacert"), ("cert", "cert"), ("key", "key"))}
    given_tls = {field: str(Path(value).absolute()) for field, value in given_tls.items() if value is not None}
    if settings["endpoints"] is not None:
        # as etcdctl: an endpoint without a scheme is https when TLS files are given, else http
        scheme = "https://" if given_tls or document.get("tls") else "http://"
        urls = [e.strip() for e in settings["endpoints"].split(",") if e.strip()]
        if not urls:
            raise ConfigError("--endpoints: no URL given")
        document["endpoints"] = [url if "://" in url else scheme + url for url in urls]
        document["plaintext"] = all(e.startswith("http://") for e in document["endpoints"])
    if document.get("plaintext"):
        if given_tls:
            raise ConfigError(f"{source}: TLS files with http:// endpoints (use https://, or drop them)")
        document.pop("tls", None)
        return parse_config(document, source)
    tls = {**(document.get("tls") or {}), **given_tls}
    if "ca" not in tls:
        raise ConfigError(f"{source}: https endpoints need --cacert (the servers' CA)")
    document["tls"] = tls
    return _with_tls_files(args, parse_config(document, source))


def chosen_cluster(args: argparse.Namespace) -> str | None:
    """The cluster ``--cluster NAME`` chose, checked against the stack (a name it does not watch is one
    line); None when no cluster was named."""
    return resolve_config(args).name if getattr(args, "cluster", None) else None


def _with_tls_files(args: argparse.Namespace, config: ClusterConfig) -> ClusterConfig:
    """TLS entries that are Secrets Manager ARNs (as deployed) fetched for this command."""
    from etcdops_local.cli.stack import deployed_stack, fetch_tls_secrets

    deployed = deployed_stack(args)
    return fetch_tls_secrets(config, deployed.session if deployed else None)


# ---- files the commands write -----------------------------------------------------------------


def output_file(text: str) -> Path:
    """An argparse type for a file a command writes: its folder must exist and it must not be a folder."""
    if not text:
        raise argparse.ArgumentTypeError("empty file name")
    path = Path(text)
    if path.is_dir() or text.endswith("/"):
        raise argparse.ArgumentTypeError(f"{text} is a directory; give a file name, e.g. {path / 'snapshot.db'}")
    parent = path.absolute().parent
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"{text}: directory {parent} does not exist")
    if path.exists() and not path.is_file():  # a device or a pipe would be replaced by the renamed file
        raise argparse.ArgumentTypeError(f"{text} exists and is not a regular file")
    return path


def input_file(text: str) -> Path:
    """An argparse type for a file a command reads: it must exist and be a regular file."""
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory, not a file")
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text} is not a regular file")
    return path


def one_line(text: str) -> str:
    """A message squeezed onto one line (errors are one line on stderr)."""
    return " ".join(str(text).split()) or "(no message)"


def print_error(message: str) -> None:
    print(f"etcdops: {one_line(message)}", file=sys.stderr)


# ---- failures ------------------------------------------------------------------------------------

EXIT_CODES = {
    0: "success (status: the cluster has quorum)",
    1: "the command failed (status: no quorum; backup verify: a delta chain is broken); one line on stderr says why",
    2: "bad usage: an unknown option, a missing or malformed argument",
    3: "runbook start --wait / runbook show --follow: the execution FAILED (a rejection included)",
    4: "runbook start --wait / runbook show --follow: the execution TIMED_OUT",
    5: "runbook start --wait / runbook show --follow: the execution was ABORTED (stopped by someone)",
    70: "an unexpected internal error (one line; --debug prints the traceback)",
    130: "interrupted (Ctrl-C)",
    141: "the output was closed early (e.g. piped into head); nothing is printed",
}


def describe_failure(exc: Exception) -> tuple[int, str]:
    """The exit status and the one-line message for an exception that ended a command."""
    if isinstance(exc, UsageError):
        return 2, str(exc)
    if isinstance(exc, EtcdopsError):
        return 1, f"{type(exc).__name__}: {exc}"
    if isinstance(exc, NoRegionError):
        return 1, (
            "AWS: no region: no local stack here (run from the folder of `etcdops local up`, or pass "
            "--state-dir DIR), or set AWS_REGION for a deployed stack"
        )
    if isinstance(exc, (BotoCoreError, ClientError)):
        return 1, f"AWS: {exc}"
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        return 1, f"{where}{exc.strerror or exc}"
    return 70, f"unexpected {type(exc).__name__}: {one_line(str(exc))} (run with --debug for the traceback)"
