"""The manifest stored next to each backup object, and the naming of backups in a store.

Layout inside a store (whose URI supplies bucket/prefix or directory)::

    <id>.snapshot.enc      the (optionally zstd-compressed) snapshot, encrypted
    <id>.manifest.json     this manifest, written after the object

Backup ids are ``YYYYMMDDTHHMMSSZ-<6 hex>`` (UTC), so sorting ids sorts backups by time.
"""

from __future__ import annotations

import re
import secrets
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, Final, Literal, Self

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from etcdops.domain.backup.errors import ManifestInvalidError
from etcdops.domain.errors import UsageError

#: The manifest format this code writes; reading refuses other versions.
MANIFEST_FORMAT_VERSION: Final = 1
OBJECT_SUFFIX = ".snapshot.enc"
MANIFEST_SUFFIX = ".manifest.json"

_ID = re.compile(r"^(\d{8}T\d{6}Z)-([0-9a-f]{6})$")
_ID_TIME_FORMAT = "%Y%m%dT%H%M%SZ"
_HEX_ID = r"^[0-9a-f]{1,16}$"
_SHA256 = r"^[0-9a-f]{64}$"
_UINT64_MAX = 2**64 - 1


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc)]


# ---- ids and keys -------------------------------------------------------------------------------


def new_backup_id(now: datetime | None = None) -> str:
    """A fresh id for a backup taken at ``now`` (default: the current time); ``now`` must be aware."""
    moment = datetime.now(UTC) if now is None else now
    if moment.tzinfo is None:
        raise UsageError("backup ids need a timezone-aware time")
    return f"{moment.astimezone(UTC).strftime(_ID_TIME_FORMAT)}-{secrets.token_hex(3)}"


def check_backup_id(backup_id: str) -> str:
    """Return ``backup_id`` if it is well formed, else raise :class:`UsageError`."""
    match = _ID.match(backup_id) if isinstance(backup_id, str) else None
    if match is None:
        raise UsageError(f"{backup_id!r} is not a backup id (expected YYYYMMDDTHHMMSSZ-xxxxxx)")
    try:
        datetime.strptime(match.group(1), _ID_TIME_FORMAT)
    except ValueError as exc:
        raise UsageError(f"{backup_id!r} is not a backup id: {match.group(1)} is not a valid time") from exc
    return backup_id


def backup_id_time(backup_id: str) -> datetime:
    """The UTC time encoded in a backup id (second precision)."""
    check_backup_id(backup_id)
    return datetime.strptime(backup_id[:16], _ID_TIME_FORMAT).replace(tzinfo=UTC)


def object_key(backup_id: str) -> str:
    """Store key of the encrypted snapshot of ``backup_id``."""
    return check_backup_id(backup_id) + OBJECT_SUFFIX


def manifest_key(backup_id: str) -> str:
    """Store key of the manifest of ``backup_id``."""
    return check_backup_id(backup_id) + MANIFEST_SUFFIX


def backup_id_from_manifest_key(key: str) -> str | None:
    """The backup id of a manifest key (the last path part), or None if ``key`` is not one."""
    return _id_with_suffix(key, MANIFEST_SUFFIX)


def backup_id_from_object_key(key: str) -> str | None:
    """The backup id of a snapshot object key (the last path part), or None if ``key`` is not one."""
    return _id_with_suffix(key, OBJECT_SUFFIX)


def _id_with_suffix(key: str, suffix: str) -> str | None:
    name = key.rsplit("/", 1)[-1]
    if not name.endswith(suffix):
        return None
    candidate = name[: -len(suffix)]
    match = _ID.match(candidate)
    return candidate if match else None


def cluster_id_text(cluster_id: int | None) -> str | None:
    """A cluster id as manifests write it (hex, as ``etcdctl`` prints it), or None when unknown."""
    return f"{cluster_id:x}" if cluster_id else None


def backup_id_value(value: str) -> str:
    """A model field's check of a backup id: :func:`check_backup_id`, its error as the field's."""
    try:
        return check_backup_id(value)
    except UsageError as exc:
        raise ValueError(str(exc)) from None


class StoredDocument(BaseModel):
    """A document the backup store keeps as JSON (a manifest, a volume or drill record)."""

    what: ClassVar[str] = "document"  # how a parse error names it unless the caller says where it came from

    def to_json(self) -> bytes:
        """The document (UTF-8 JSON, indented for humans)."""
        return self.model_dump_json(indent=2).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes | str, source: str | None = None) -> Self:
        """Parse and validate; :class:`ManifestInvalidError` names the first bad field."""
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            raise _invalid(exc, source or cls.what) from None


# ---- the manifest -------------------------------------------------------------------------------


class ImportedFrom(BaseModel):
    """Where an imported backup came from: a snapshot file taken outside etcdops (``backup import``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    file: Annotated[str, Field(min_length=1)]  # the file's name, not its path
    file_modified_at: UtcDatetime
    # the cluster it was taken of, as the operator stated it (a snapshot file does not record it)
    source_cluster_id: Annotated[str, Field(pattern=_HEX_ID)] | None = None


#: the kinds of backup: ``full`` (an etcd snapshot streamed from a member) and ``volume`` (a
#: crash-consistent copy of one member's data taken while it was held still)
BackupKind = Literal["full", "volume"]
BACKUP_KINDS: Final[tuple[BackupKind, ...]] = ("full", "volume")


class VolumeSource(BaseModel):
    """How a volume backup was taken: from which provider's copy, at which observed revision.

    ``revision_observed`` is the revision the member answered a linearizable read with just before
    its data was forced to disk and copied: the copy holds every write acknowledged before that read.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    provider: Annotated[str, Field(min_length=1)]  # the compute provider that took it (local, ec2)
    revision_observed: Annotated[int, Field(ge=0)]
    paused_seconds: Annotated[float, Field(ge=0)] | None = None  # how long the member was held (local)
    snapshot_ids: tuple[str, ...] = ()  # the provider's snapshots (EC2: the EBS snapshot ids)


class Manifest(StoredDocument):
    """What a backup is: where it came from, where it is, and how to check and decrypt it."""

    what: ClassVar[str] = "manifest"
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    format_version: Literal[1] = MANIFEST_FORMAT_VERSION
    id: str
    uri: Annotated[str, Field(min_length=1)]
    cluster_id: Annotated[str, Field(pattern=_HEX_ID)]
    cluster_name: Annotated[str, Field(min_length=1)]
    member_id: Annotated[str, Field(pattern=_HEX_ID)]
    member_name: str | None = None  # the serving member's name (manifests written before it have none)
    etcd_version: Annotated[str, Field(min_length=1)]
    revision: Annotated[int, Field(ge=0)]
    snapshot_hash: Annotated[int, Field(ge=0, le=_UINT64_MAX)]
    total_keys: Annotated[int, Field(ge=0)]
    sha256: Annotated[str, Field(pattern=_SHA256)]
    size_plain: Annotated[int, Field(ge=0)]
    size_stored: Annotated[int, Field(ge=0)]
    created_at: UtcDatetime
    key_id: Annotated[str, Field(min_length=1)]
    compression: Literal["none", "zstd"]
    frame_length: Annotated[int, Field(ge=1)]
    verified: bool = False
    verified_at: UtcDatetime | None = None
    imported: ImportedFrom | None = None  # set for a snapshot file imported by `backup import`
    kind: BackupKind = "full"  # manifests written before volume backups are full ones
    volume: VolumeSource | None = None  # set exactly for kind volume

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        return backup_id_value(value)

    @field_validator("cluster_id", "member_id", "sha256", mode="before")
    @classmethod
    def _lower_hex(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _verified_consistent(self) -> Manifest:
        if self.verified != (self.verified_at is not None):
            raise ValueError("verified_at must be set exactly when verified is true")
        if (self.kind == "volume") != (self.volume is not None):
            raise ValueError("volume must be set exactly when kind is volume")
        return self

    @property
    def object_key(self) -> str:
        return object_key(self.id)

    @property
    def manifest_key(self) -> str:
        return manifest_key(self.id)

    def is_verified_backup_of(self, cluster_id: str | None) -> bool:
        """Whether this backup counts as verified (and may count as fresh) for the cluster incarnation
        ``cluster_id`` (invariant 11): a backup of an earlier cluster with the same name never does,
        and with the live id unknown none does."""
        return self.verified and bool(cluster_id) and self.cluster_id == (cluster_id or "").lower()

    def mark_verified(self, at: datetime) -> Manifest:
        """A copy of this manifest recording a successful verification at ``at``."""
        return Manifest.model_validate({**self.model_dump(), "verified": True, "verified_at": at})


# ---- volume snapshots a provider keeps -----------------------------------------------------------

#: where volume backups whose data the compute provider keeps (EBS snapshots) are recorded
VOLUME_PREFIX = "volumes/"


def volume_record_key(backup_id: str) -> str:
    """Store key of the record of the provider-kept volume backup ``backup_id``."""
    return f"{VOLUME_PREFIX}{check_backup_id(backup_id)}.json"


class VolumeSnapshotRecord(StoredDocument):
    """A volume backup whose data the compute provider keeps (EC2: EBS snapshots of the member's data
    volumes, taken together): what was copied, at which observed revision, and where it is. Its bytes
    never passed through etcdops, so it carries no hash of them and is not a verified backup."""

    what: ClassVar[str] = "volume record"
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    id: str
    kind: Literal["volume"] = "volume"
    cluster_name: Annotated[str, Field(min_length=1)]
    cluster_id: Annotated[str, Field(pattern=_HEX_ID)]
    member_id: Annotated[str, Field(pattern=_HEX_ID)]
    member_name: Annotated[str, Field(min_length=1)]
    etcd_version: Annotated[str, Field(min_length=1)]
    created_at: UtcDatetime
    volume: VolumeSource

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        return backup_id_value(value)

    @model_validator(mode="after")
    def _has_snapshots(self) -> VolumeSnapshotRecord:
        if not self.volume.snapshot_ids:
            raise ValueError("volume.snapshot_ids: a provider-kept volume backup names its snapshots")
        return self


# ---- restore drill records ----------------------------------------------------------------------

#: where restore drills record their results, below the catalogue's top level
DRILL_PREFIX = "drills/"


def drill_key(drill_id: str) -> str:
    """Store key of the record of drill ``drill_id`` (an id like a backup's: it sorts by time)."""
    return f"{DRILL_PREFIX}{check_backup_id(drill_id)}.json"


class DrillRecord(StoredDocument):
    """What one restore drill found: whether the backup restored into a scratch member, when, how long."""

    what: ClassVar[str] = "drill record"
    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    drill_id: str
    execution: Annotated[str, Field(min_length=1)]
    backup_id: str | None  # None: the drill found no backup to restore
    restorable: bool
    started_at: UtcDatetime
    finished_at: UtcDatetime
    seconds: Annotated[float, Field(ge=0)]
    revision: Annotated[int, Field(ge=0)] | None = None  # the scratch member's, when it answered
    keys: Annotated[int, Field(ge=0)] | None = None  # the scratch member's live keys, when it answered
    sampled: Annotated[int, Field(ge=0)] = 0  # keys whose values were compared with the backup's
    error: str | None = None  # why it is not restorable

    @field_validator("drill_id")
    @classmethod
    def _drill_id(cls, value: str) -> str:
        return backup_id_value(value)


def _invalid(exc: ValidationError, source: str) -> ManifestInvalidError:
    errors = exc.errors(include_url=False)
    if not errors:  # pragma: no cover - pydantic always reports at least one error
        return ManifestInvalidError(f"{source}: invalid manifest")
    first = errors[0]
    location = ".".join(str(part) for part in first["loc"]) or None
    message = first["msg"]
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    where = f"field {location!r}" if location else "document"
    return ManifestInvalidError(f"{source}: {where}: {message}{more}", field=location)
