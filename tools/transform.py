"""Write template.yaml as CloudFormation receives it: the SAM transform applied, offline.

    python tools/transform.py [--template template.yaml] [--parameter NAME=VALUE ...] > template.cfn.json

The code locations become placeholder S3 objects and the state machine definitions are inlined (as
the local stack does); parameters without a default need a value (ClusterName). For checks that
read the deployed shape: checkov in bin/test, and anything else that wants the generated roles.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from etcdops.domain.errors import EtcdopsError
from etcdops_local.aws.stack import (
    DEFAULT_REGION,
    effective_parameters,
    prepare_for_translation,
    read_template,
    translate,
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--template", type=Path, default=Path(__file__).resolve().parents[1] / "template.yaml")
    parser.add_argument("--parameter", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--region", default=DEFAULT_REGION)
    args = parser.parse_args(argv)
    if any("=" not in item for item in args.parameter):
        parser.error("--parameter: expected NAME=VALUE")
    try:
        sam = read_template(args.template)
        values = effective_parameters(sam, dict(item.split("=", 1) for item in args.parameter))
        cfn = translate(prepare_for_translation(sam, args.template.resolve().parent), values, args.region)
    except EtcdopsError as exc:
        print(f"transform: {exc}", file=sys.stderr)
        return 1
    json.dump(cfn, sys.stdout, indent=1, sort_keys=True)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
