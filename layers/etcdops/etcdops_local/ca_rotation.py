"""A CA rotation's files in the local stack's PKI directory (``pki/``), phase by phase.

- ``ca.crt``/``ca.key``: the CA that issues certificates (the old one until phase 2 begins, then the new).
- ``ca-next.crt``/``.key``: the new CA, created when phase 1 begins, until phase 2 makes it the issuing one.
- ``ca-old.crt``/``.key``: the old CA, beside the new one from phase 2 on (removed when phase 3 ends).
- ``trusted-ca.crt``: what members (``--trusted-ca-file``, ``--peer-trusted-ca-file``) and the operator's
  clients trust: the old and the new CA in phases 1 and 2, the new one alone from phase 3 on.
- ``ca-rotation.json``: the last phase begun and the last finished, so a new start resumes there.
- ``clients/<name>.crt``/``.key`` (``pki issue-client``): reissued from the new CA in phase 2, same name.

Each function converges when called again after a crash at any point (invariant 7).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from etcdops.adapters import pki
from etcdops.adapters.pki.files import atomic_write
from etcdops.adapters.pki_store import ROTATION_RECORD, FilePki, follow_ca_rotation
from etcdops.domain.errors import PkiError

RECORD = ROTATION_RECORD


def recorded(pki_dir: Path) -> dict[str, int]:
    """``{"begun": n, "finished": m}`` of the rotation under way; both 0 when none is."""
    return FilePki(pki_dir, []).rotation()


def _record(pki_dir: Path, begun: int, finished: int) -> None:
    data = json.dumps({"begun": begun, "finished": finished, "at": datetime.now(UTC).isoformat()}).encode()
    atomic_write(pki_dir / RECORD, data, 0o644)


def _copy(pki_dir: Path, source: str, target: str) -> None:
    pair = pki.load_pem(pki_dir / f"{source}.crt", pki_dir / f"{source}.key")
    pki.write_pem(pair, pki_dir / f"{target}.crt", pki_dir / f"{target}.key")


def begin(pki_dir: Path, phase: int) -> None:
    """The files of ``phase`` (1: a new CA and the old+new bundle trusted; 2: the new CA issues, the operator's
    client certificate and the issued clients' are reissued from it; 3: only the new CA trusted); recorded as
    begun."""
    if not (pki_dir / "trusted-ca.crt").exists():
        raise PkiError(
            f"{pki_dir}: this local stack's members trust ca.crt itself (it predates CA rotation); "
            "recreate the stack (etcdops local down --purge; local up) to rotate its CA"
        )
    if phase == 1:
        if not (pki_dir / "ca-next.crt").exists():
            stamp = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
            pki.write_pem(pki.create_ca(f"etcdops local CA {stamp}"), pki_dir / "ca-next.crt", pki_dir / "ca-next.key")
        old, new = (
            pki.load_pem(pki_dir / "ca.crt", pki_dir / "ca.key"),
            pki.load_pem(pki_dir / "ca-next.crt", pki_dir / "ca-next.key"),
        )
        pki.write_trusted(pki_dir / "trusted-ca.crt", [old.cert_pem, new.cert_pem])
    elif phase == 2:
        _promote(pki_dir)
        ca = pki.load_pem(pki_dir / "ca.crt", pki_dir / "ca.key")
        client = pki.issue_certificate(ca, "etcdops", kind="client")
        pki.write_pem(client, pki_dir / "client.crt", pki_dir / "client.key")
        # and the clients `pki issue-client` made, in place (they trust trusted-ca.crt, the bundle now)
        follow_ca_rotation(FilePki(pki_dir, []), ca, (pki_dir / "trusted-ca.crt").read_bytes(), reissue=True)
    elif phase == 3:
        pki.write_trusted(pki_dir / "trusted-ca.crt", [pki.load_pem(pki_dir / "ca.crt", pki_dir / "ca.key").cert_pem])
    else:
        raise PkiError(f"phase: {phase} is not a CA rotation phase (1, 2 or 3)")
    _record(pki_dir, phase, phase - 1)


def _promote(pki_dir: Path) -> None:
    """The new CA becomes the issuing one, the old one kept as ``ca-old``; done once (a second call finds
    no ``ca-next`` any more; after a crash halfway, ``ca.crt`` already equal to ``ca-next.crt`` says the old
    one is saved already)."""
    if not (pki_dir / "ca-next.crt").exists():
        return
    if (pki_dir / "ca.crt").read_bytes() != (pki_dir / "ca-next.crt").read_bytes():
        _copy(pki_dir, "ca", "ca-old")
    _copy(pki_dir, "ca-next", "ca")
    for name in ("ca-next.key", "ca-next.crt"):
        (pki_dir / name).unlink(missing_ok=True)


def finish(pki_dir: Path, phase: int) -> None:
    """``phase`` done on every member; after phase 3 the old CA's files and the record are removed."""
    if phase == 3:
        for name in ("ca-old.key", "ca-old.crt", RECORD):
            (pki_dir / name).unlink(missing_ok=True)
        return
    _record(pki_dir, phase, phase)
