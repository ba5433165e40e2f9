"""Delta backups: every change of revisions *first..last*, in one object, chained to the one before.

**The delta format** (what the encrypted object holds once decrypted): UTF-8 JSON lines, one line
per revision, in increasing order, every revision from ``first`` to ``last`` exactly once (etcd
gives every revision at least one event: a write that changes nothing makes none)::

    {"r":1042,"e":[["put","a2V5","dmFsdWU=",1040,3,0],["del","b3RoZXI=","",0,0,0]]}

An event is ``[kind, key (base64), value (base64), create_revision, version, lease]``, in the order
etcd reported them inside the revision (a transaction's events stay together, on one line, so a
delta never splits a transaction). Keys are written without separators' spaces and in a fixed field
order, so the same events always encode to the same bytes (the sha256 in the manifest is of them).

**The chain** (invariant 19): a chain starts at a full backup of revision *B* and its deltas cover
*B+1, B+2, ...* without a gap or an overlap: every delta's ``first`` is the previous one's ``last +
1``. The state store keeps each cluster's chain head and moves it only by a conditional write, so of
two runs that overlap exactly one stores a delta for a range. Anything that breaks the chain (the
start revision compacted, the head delta missing or unreadable, another cluster id) starts a new
chain from a fresh full backup and is reported: a gap is never silent.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from etcdops.domain.backup.errors import DeltaFormatError
from etcdops.domain.backup.manifest import UtcDatetime, backup_id_value, check_backup_id
from etcdops.domain.errors import UsageError

DELTA_PREFIX: Final = "deltas/"
DELTA_OBJECT_SUFFIX: Final = ".delta.enc"
DELTA_MANIFEST_SUFFIX: Final = ".delta.json"
DELTA_FORMAT_VERSION: Final = 1

EventKind = Literal["put", "del"]


@dataclass(frozen=True)
class DeltaEvent:
    """One change of one key at ``revision`` (a put or a delete), as etcd's watch reported it."""

    kind: EventKind
    key: bytes
    revision: int
    value: bytes = b""
    create_revision: int = 0
    version: int = 0
    lease: int = 0


# ---- encoding ---------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encode_revision(revision: int, events: Sequence[DeltaEvent]) -> bytes:
    """One line of the delta format: every event of ``revision``."""
    rows = [[e.kind, _b64(e.key), _b64(e.value), e.create_revision, e.version, e.lease] for e in events]
    return json.dumps({"r": revision, "e": rows}, separators=(",", ":")).encode() + b"\n"


def group_by_revision(events: Iterable[DeltaEvent]) -> list[tuple[int, list[DeltaEvent]]]:
    """The events in revision order, grouped by revision; raises if they are out of order."""
    groups: list[tuple[int, list[DeltaEvent]]] = []
    for event in events:
        if groups and event.revision == groups[-1][0]:
            groups[-1][1].append(event)
        elif not groups or event.revision > groups[-1][0]:
            groups.append((event.revision, [event]))
        else:
            raise DeltaFormatError(f"event of revision {event.revision} after revision {groups[-1][0]}")
    return groups


def encode_delta(events: Iterable[DeltaEvent]) -> bytes:
    """The delta format of ``events`` (whole revisions, in order)."""
    return b"".join(encode_revision(rev, group) for rev, group in group_by_revision(events))


def _decode_line(line: bytes, number: int) -> tuple[int, list[DeltaEvent]]:
    try:
        document = json.loads(line)
        revision = document["r"]
        rows = document["e"]
        if not isinstance(revision, int) or revision < 1 or not isinstance(rows, list) or not rows:
            raise ValueError("a revision needs a number >= 1 and at least one event")
        events = []
        for kind, key, value, create, version, lease in rows:
            if kind not in ("put", "del") or not all(isinstance(n, int) and n >= 0 for n in (create, version, lease)):
                raise ValueError(f"bad event {[kind, key, value, create, version, lease]!r}")
            events.append(
                DeltaEvent(
                    kind, base64.b64decode(key, validate=True), revision,
                    base64.b64decode(value, validate=True), create, version, lease,
                )
            )
    except (ValueError, KeyError, TypeError, binascii.Error) as exc:
        raise DeltaFormatError(f"delta line {number}: {exc}") from None
    return revision, events


def decode_delta(data: bytes, first: int, last: int) -> list[tuple[int, list[DeltaEvent]]]:
    """The revisions of a delta, checked: every revision from ``first`` to ``last`` exactly once, in order."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    decoded = [_decode_line(line, number) for number, line in enumerate(lines, 1)]
    revisions = [rev for rev, _ in decoded]
    if revisions != list(range(first, last + 1)):
        seen = f"{revisions[0]}..{revisions[-1]} ({len(revisions)} revisions)" if revisions else "no revision"
        raise DeltaFormatError(f"the delta should hold every revision {first}..{last} once, it holds {seen}")
    return decoded


# ---- ids and keys -------------------------------------------------------------------------------


def delta_object_key(delta_id: str) -> str:
    return f"{DELTA_PREFIX}{check_backup_id(delta_id)}{DELTA_OBJECT_SUFFIX}"


def delta_manifest_key(delta_id: str) -> str:
    return f"{DELTA_PREFIX}{check_backup_id(delta_id)}{DELTA_MANIFEST_SUFFIX}"


def delta_id_from_key(key: str, suffix: str) -> str | None:
    """The delta id of an object or manifest key directly under ``deltas/``, or None."""
    if not key.startswith(DELTA_PREFIX) or not key.endswith(suffix):
        return None
    candidate = key[len(DELTA_PREFIX) : -len(suffix)]
    try:
        return check_backup_id(candidate)
    except UsageError:
        return None


# ---- the manifest -------------------------------------------------------------------------------


class DeltaManifest(BaseModel):
    """What one delta is: which cluster, which revisions, which chain, how to check and decrypt it."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    format_version: Literal[1] = DELTA_FORMAT_VERSION
    id: str
    chain_id: str  # the id of the full backup the chain started from
    base_revision: Annotated[int, Field(ge=0)]  # that backup's revision: the chain covers base+1..
    previous: str | None  # the delta before this one in the chain (None: the first delta)
    cluster_id: Annotated[str, Field(pattern=r"^[0-9a-f]{1,16}$")]
    cluster_name: Annotated[str, Field(min_length=1)]
    first_revision: Annotated[int, Field(ge=1)]
    last_revision: Annotated[int, Field(ge=1)]
    events: Annotated[int, Field(ge=1)]
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]
    size_plain: Annotated[int, Field(ge=0)]
    size_stored: Annotated[int, Field(ge=0)]
    created_at: UtcDatetime  # when the run started: every revision up to last is older
    key_id: Annotated[str, Field(min_length=1)]
    compression: Literal["none", "zstd"]
    frame_length: Annotated[int, Field(ge=1)]
    leased_keys: Annotated[int, Field(ge=0)] = 0  # puts with a lease among the events

    @field_validator("id", "chain_id")
    @classmethod
    def _ids(cls, value: str) -> str:
        return backup_id_value(value)

    @model_validator(mode="after")
    def _range(self) -> DeltaManifest:
        if self.last_revision < self.first_revision:
            raise ValueError(f"last_revision {self.last_revision} < first_revision {self.first_revision}")
        return self

    @property
    def object_key(self) -> str:
        return delta_object_key(self.id)

    @property
    def manifest_key(self) -> str:
        return delta_manifest_key(self.id)

    def to_json(self) -> bytes:
        return self.model_dump_json(indent=2).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes | str, source: str = "delta manifest") -> DeltaManifest:
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            where = ".".join(str(part) for part in error["loc"]) or "document"
            raise DeltaFormatError(f"{source}: not a valid delta manifest ({where}: {error['msg']})") from None
