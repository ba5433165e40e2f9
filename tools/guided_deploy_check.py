"""Ask the SAM CLI itself whether `sam deploy --guided` would stop at an authentication prompt.

    .tools/sam/bin/python tools/guided_deploy_check.py [--template template.yaml]

The guided deploy asks "<function> has no authentication. Is this okay? [y/N]" for every API route
without an authorizer it recognizes, and aborts on the default answer. This runs the SAM CLI's own
check (``samcli.commands.deploy.auth_utils.auth_per_resource``) over the template as the guided deploy
reads it, and exits 1 naming each function it would ask about. It needs the SAM CLI's venv (bin/setup).
"""

from __future__ import annotations

import argparse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def unauthenticated(template: Path, cluster_name: str = "example") -> list[str]:
    """The functions the guided deploy would ask about (empty: it asks nothing)."""
    from samcli.commands.deploy.auth_utils import auth_per_resource
    from samcli.lib.providers.sam_stack_provider import SamLocalStackProvider

    stacks, _ = SamLocalStackProvider.get_stacks(
        str(template),
        parameter_overrides={"ClusterName": cluster_name},
        global_parameter_overrides={"AWS::Region": "us-east-1"},
    )
    return [resource for resource, authorized in auth_per_resource(stacks) if not authorized]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--template", type=Path, default=ROOT / "template.yaml")
    args = parser.parse_args(argv)
    asked = unauthenticated(args.template)
    for resource in asked:
        print(f"sam deploy --guided: would ask '{resource} has no authentication. Is this okay?' (default: abort)")
    if not asked:
        print("sam deploy --guided: no authentication prompt (every route declares its authorizer)")
    return 1 if asked else 0


if __name__ == "__main__":
    raise SystemExit(main())
