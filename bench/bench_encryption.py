"""Benchmark backup encryption (frame lengths) and zstd compression.

Frame lengths (default mode): encrypts a generated stream (default 512 MiB, never held in memory)
with the local-key provider once per frame length, each in a fresh child process so that the
peak RSS (``resource.getrusage``) belongs to that run alone. ``--roundtrip`` also writes the ciphertext to
a temporary file and times ``decrypt_stream`` over it (peak RSS then covers both directions).

    python bench/bench_encryption.py [--size-mib 512] [--frames 4096,65536,1048576,4194304]
        [--roundtrip] [--repeat 3]

Compression (``zstd`` mode): compresses an etcd snapshot file (``--snapshot``) or a generated
bbolt-like stand-in (4 KiB pages partly filled with revision keys and protobuf-framed, JSON-ish
Kubernetes objects, ~10% random "secret" payloads) at a few zstd levels and reports ratio and
speed, plus encrypt-only vs. compress-then-encrypt time.

    python bench/bench_encryption.py zstd [--snapshot PATH] [--size-mib 256] [--levels 1,3,9]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from etcdops.adapters.backup.crypto import (
    KeyProvider,
    compress_stream,
    decompress_stream,
    decrypt_stream,
    encrypt_stream,
)
from etcdops.adapters.backup.keys import local_key_provider

MiB = 1024 * 1024
DEFAULT_FRAMES = (4 * 1024, 64 * 1024, 1024 * 1024, 4 * 1024 * 1024)
CONTEXT = {"cluster": "bench", "backup": "20261125T203000Z-000000"}


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def random_stream(size: int, chunk: int = MiB) -> Iterator[bytes]:
    """``size`` bytes of incompressible data from one reused random block (AES does not care)."""
    block = os.urandom(chunk)
    remaining = size
    while remaining > 0:
        piece = block if remaining >= chunk else block[:remaining]
        remaining -= len(piece)
        yield piece


def consume(chunks: Iterable[bytes]) -> int:
    total = 0
    for chunk in chunks:
        total += len(chunk)
    return total


def temp_key() -> KeyProvider:
    directory = Path(tempfile.mkdtemp(prefix="etcdops-bench-"))
    return local_key_provider(directory / "bench.key", create=True)


# ---- frame-length runs ------------------------------------------------------------------------


def run_one(frame_length: int, size: int, roundtrip: bool) -> dict[str, float]:
    key = temp_key()
    baseline = peak_rss_mib()
    start, cpu_start = time.perf_counter(), cpu_seconds()
    stored = consume(encrypt_stream(random_stream(size), key, CONTEXT, frame_length))
    encrypt_seconds = time.perf_counter() - start
    result = {
        "frame_length": frame_length,
        "encrypt_mb_s": size / encrypt_seconds / 1e6,
        "encrypt_cpu_mb_s": size / (cpu_seconds() - cpu_start) / 1e6,
        "overhead_bytes": stored - size,
        "baseline_rss_mib": baseline,
        "peak_rss_mib": peak_rss_mib(),
    }
    if roundtrip:
        with tempfile.TemporaryDirectory(prefix="etcdops-bench-") as directory:
            path = Path(directory) / "ciphertext"
            with path.open("wb") as handle:
                for piece in encrypt_stream(random_stream(size), key, CONTEXT, frame_length):
                    handle.write(piece)
            consume(file_stream(path))  # warm the page cache: measure decryption, not the disk
            start, cpu_start = time.perf_counter(), cpu_seconds()
            plain = consume(decrypt_stream(file_stream(path), key, CONTEXT))
            seconds = time.perf_counter() - start
            cpu = cpu_seconds() - cpu_start
        assert plain == size
        result["decrypt_mb_s"] = size / seconds / 1e6
        result["decrypt_cpu_mb_s"] = size / cpu / 1e6
        result["peak_rss_mib"] = peak_rss_mib()
    return result


def frames_main(args: argparse.Namespace) -> None:
    size = args.size_mib * MiB
    frames = [int(value) for value in args.frames.split(",")]
    print(
        f"encrypting {args.size_mib} MiB per run, best of {args.repeat} runs, local AES-256 key, "
        "default (signed, committing) suite"
    )
    print("MB/s = bytes / wall-clock time; 'per CPU-s' = bytes / (user+sys) CPU time (robust to a busy host)")
    header = f"{'frame':>9} {'enc MB/s':>9} {'per CPU-s':>10} {'peak RSS MiB':>13} {'overhead B':>11}"
    if args.roundtrip:
        header += f" {'dec MB/s':>9} {'per CPU-s':>10}"
    print(header)
    for frame in frames:
        command = [sys.executable, __file__, "_one", str(frame), str(size)]
        if args.roundtrip:
            command.append("--roundtrip")
        runs = []
        for _ in range(args.repeat):  # fresh process per run: peak RSS and allocator state are its own
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            runs.append(json.loads(output.strip().splitlines()[-1]))
        result = max(runs, key=lambda run: run["encrypt_mb_s"])
        result["encrypt_cpu_mb_s"] = max(run["encrypt_cpu_mb_s"] for run in runs)
        if args.roundtrip:
            result["decrypt_mb_s"] = max(run["decrypt_mb_s"] for run in runs)
            result["decrypt_cpu_mb_s"] = max(run["decrypt_cpu_mb_s"] for run in runs)
        line = (
            f"{_human(frame):>9} {result['encrypt_mb_s']:9.1f} {result['encrypt_cpu_mb_s']:10.1f} "
            f"{result['peak_rss_mib']:13.1f} "
            f"{int(result['overhead_bytes']):11d}"
        )
        if args.roundtrip:
            line += f" {result['decrypt_mb_s']:9.1f} {result['decrypt_cpu_mb_s']:10.1f}"
        print(line, flush=True)


def _human(size: int) -> str:
    return f"{size // MiB} MiB" if size >= MiB else f"{size // 1024} KiB"


# ---- compression runs ---------------------------------------------------------------------------

_RESOURCES = ("pods", "configmaps", "secrets", "services", "endpointslices", "leases", "events", "deployments")
_WORDS = ("alpha", "beta", "gamma", "web", "api", "worker", "cache", "db", "frontend", "backend", "batch")


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _k8s_object(rng: random.Random, resource_name: str, namespace: str, name: str, revision: int) -> bytes:
    uid = "-".join(f"{rng.getrandbits(bits * 4):0{bits}x}" for bits in (8, 4, 4, 4, 12))
    labels = {f"app.kubernetes.io/{rng.choice(('name', 'part-of', 'component'))}": rng.choice(_WORDS)}
    document: dict[str, object] = {
        "kind": resource_name[:-1].capitalize(),
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid,
            "resourceVersion": str(revision),
            "creationTimestamp": f"2026-11-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:00:00Z",
            "labels": labels,
            "managedFields": [{"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1"}],
        },
    }
    if resource_name == "secrets":
        document["data"] = {"token": rng.randbytes(rng.randint(256, 3072)).hex()}
    else:
        document["spec"] = {
            "containers": [
                {
                    "name": rng.choice(_WORDS),
                    "image": f"registry.example.com/{rng.choice(_WORDS)}:1.{rng.randint(0, 40)}",
                }
            ],
            "nodeName": f"ip-10-0-{rng.randint(0, 255)}-{rng.randint(0, 255)}.ec2.internal",
        }
        document["status"] = {
            "phase": rng.choice(("Running", "Pending", "Succeeded")),
            "podIP": f"10.1.{rng.randint(0, 255)}.{rng.randint(0, 255)}",
        }
    return b"k8s\x00" + json.dumps(document, separators=(",", ":")).encode()


def synthetic_snapshot(size: int, seed: int = 1) -> Iterator[bytes]:
    """A bbolt-like stand-in for an etcd snapshot: 4 KiB pages, 50-95% filled, mvcc KeyValues."""
    rng = random.Random(seed)
    produced = 0
    revision = 1_000_000
    page = bytearray()
    batch = bytearray()
    while produced < size:
        fill = int(4096 * rng.uniform(0.5, 0.95))
        page.clear()
        page += rng.randbytes(16)  # page header: id, flags, count, overflow
        while len(page) < fill:
            revision += 1
            resource_name = rng.choice(_RESOURCES)
            namespace = rng.choice(("default", "kube-system", "prod", "staging", "monitoring"))
            name = f"{rng.choice(_WORDS)}-{rng.getrandbits(40):010x}"
            key = f"/registry/{resource_name}/{namespace}/{name}".encode()
            value = _k8s_object(rng, resource_name, namespace, name, revision)
            record = _field(1, key) + _field(2, _varint(revision)) + _field(3, _varint(revision)) + _field(5, value)
            page += revision.to_bytes(8, "big") + b"_" + (0).to_bytes(8, "big") + record
        del page[4096:]
        page += bytes(4096 - len(page))
        batch += page
        if len(batch) >= MiB:
            produced += len(batch)
            yield bytes(batch)
            batch.clear()
    if batch:
        yield bytes(batch)


def file_stream(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(MiB):
            yield chunk


def zstd_main(args: argparse.Namespace) -> None:
    if args.snapshot:
        path = Path(args.snapshot)
        source_name, size = f"snapshot {path.name}", path.stat().st_size

        def source() -> Iterator[bytes]:
            return file_stream(path)
    else:
        size = args.size_mib * MiB
        source_name = "synthetic bbolt-like data"
        data_dir = Path(tempfile.mkdtemp(prefix="etcdops-bench-"))
        path = data_dir / "synthetic.db"
        with path.open("wb") as handle:
            for chunk in synthetic_snapshot(size):
                handle.write(chunk)
        size = path.stat().st_size

        def source() -> Iterator[bytes]:
            return file_stream(path)

    key = temp_key()
    consume(source())  # warm the page cache; times below are CPU seconds (user+sys) incl. reading
    print(f"{source_name}: {size / MiB:.1f} MiB; speeds are MB per CPU-second")

    def timed(chunks: Iterable[bytes]) -> tuple[int, float]:
        start = cpu_seconds()
        total = consume(chunks)
        return total, cpu_seconds() - start

    _, read_cpu = timed(source())
    encrypted, encrypt_cpu = timed(encrypt_stream(source(), key, CONTEXT))
    print(f"read only: {size / read_cpu / 1e6:.0f} MB/s")
    print(f"encrypt only: {encrypted / MiB:.1f} MiB stored, {size / encrypt_cpu / 1e6:.0f} MB/s")
    for level in (int(value) for value in args.levels.split(",")):
        compressed, compress_cpu = timed(compress_stream(source(), level))
        stored, both_cpu = timed(encrypt_stream(compress_stream(source(), level), key, CONTEXT))
        restored, restore_cpu = timed(
            decompress_stream(
                decrypt_stream(encrypt_stream(compress_stream(source(), level), key, CONTEXT), key, CONTEXT)
            )
        )
        assert restored == size
        print(
            f"zstd -{level}: ratio {size / compressed:.2f} ({compressed / MiB:.1f} MiB), "
            f"compress {size / compress_cpu / 1e6:.0f} MB/s, "
            f"compress+encrypt {size / both_cpu / 1e6:.0f} MB/s, stored {stored / MiB:.1f} MiB, "
            f"decompress+decrypt ~{size / max(restore_cpu - both_cpu, 1e-9) / 1e6:.0f} MB/s"
        )


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_one":
        frame, size = int(sys.argv[2]), int(sys.argv[3])
        print(json.dumps(run_one(frame, size, "--roundtrip" in sys.argv)))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", nargs="?", choices=("frames", "zstd"), default="frames")
    parser.add_argument("--size-mib", type=int, default=None)
    parser.add_argument("--frames", default=",".join(str(frame) for frame in DEFAULT_FRAMES))
    parser.add_argument("--roundtrip", action="store_true")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--snapshot", default=None)
    parser.add_argument("--levels", default="1,3,9")
    args = parser.parse_args()
    if args.mode == "zstd":
        args.size_mib = args.size_mib or 256
        zstd_main(args)
    else:
        args.size_mib = args.size_mib or 512
        frames_main(args)


if __name__ == "__main__":
    main()
