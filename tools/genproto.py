"""Regenerate the etcd gRPC stubs from proto/ into the etcdops package.

    python tools/genproto.py            # write the stubs
    python tools/genproto.py --check    # exit 1 when the committed stubs differ

The stubs must be generated with the grpcio-tools version pinned in requirements-dev.txt:
generated code names the minimum grpcio/protobuf versions it runs with.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
PACKAGE_ROOT = ROOT / "layers" / "etcdops"
STUBS = "etcdops/adapters/etcd/pb"
PROTOS = [f"{STUBS}/etcd.proto"]
OUTPUTS = ["etcd_pb2.py", "etcd_pb2.pyi", "etcd_pb2_grpc.py"]


def generate(out_root: Path) -> None:
    from grpc_tools import protoc  # dev dependency, imported only here

    for proto in PROTOS:
        args = [
            "protoc",
            f"-I{PROTO_ROOT}",
            f"--python_out={out_root}",
            f"--pyi_out={out_root}",
            f"--grpc_python_out={out_root}",
            str(PROTO_ROOT / proto),
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed for {proto}")


def differing_files() -> list[str]:
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        differ = []
        for name in OUTPUTS:
            fresh = (Path(tmp) / STUBS / name).read_bytes()
            committed = PACKAGE_ROOT / STUBS / name
            if not committed.exists() or committed.read_bytes() != fresh:
                differ.append(str(committed.relative_to(ROOT)))
        return differ


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    args = parser.parse_args()
    if args.check:
        differ = differing_files()
        if differ:
            print("stale generated stubs (run python tools/genproto.py): " + ", ".join(differ), file=sys.stderr)
            return 1
        print("generated stubs are up to date")
        return 0
    generate(PACKAGE_ROOT)
    print("wrote " + ", ".join(f"{STUBS}/{n}" for n in OUTPUTS))
    return 0


if __name__ == "__main__":
    sys.exit(main())
