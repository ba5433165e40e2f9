"""The runbooks' documents, typed: what an execution's input holds and what each step records in it.

A runbook execution carries one JSON document from state to state: the input (after the state
machine's defaults), extended by every step. The models here say which fields a runbook knows and of
which type; every step of that runbook checks the document against its model when it starts (see
``etcdops.app.runbook.dispatch``), so a malformed input is refused by field name in one line before
anything is done, and a step never works on a field of the wrong type.

The models describe the document; they do not reshape it. Checking is strict (no ``"1"`` for ``1``, no
``"yes"`` for ``true``) and keeps fields it does not know (what the state machine adds, e.g. the approval's
answer), and the step goes on with the document as it came, so the JSON every state passes on keeps its
shape. Every field is optional in the runbook's model, as what an earlier step must have recorded
depends on where the execution is; each model's ``STEP_NEEDS`` names the fields a step cannot do
without (and every step needs ``cluster`` and ``execution``), and :meth:`RunbookDocument.for_step` is
the model with those required: present, not null, not empty (:mod:`.runbook_checks`). A missing one
is refused in one line ("missing member_id") before the step does anything.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, field_validator

from etcdops.domain.runbook_checks import document_problem as document_problem  # checked here, named here
from etcdops.domain.runbook_checks import requiring

_HEX_ID = re.compile(r"[0-9a-fA-F]{1,16}")


class _Part(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")


class Preflight(_Part):
    passed_at: str


class HostRecord(_Part):
    """A host as a runbook records it (``Host`` without its state)."""

    name: str
    host_id: str | None = None
    peer_url: str | None = None
    client_url: str | None = None


class RunbookDocument(_Part):
    """What every runbook's document may hold."""

    cluster: str | None = None
    execution: str | None = None
    reason: str | None = None
    requires_approval: bool | None = None
    approval_timeout_seconds: int | None = None
    lock_owner: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    timings: dict[str, float] | None = None
    backup_id: str | None = None
    backup_revision: int | None = None
    preflight: Preflight | None = None
    stored_endpoints: list[str] | None = None
    error: dict[str, Any] | None = None  # the Catch path's {"Error", "Cause"}

    EVERY_STEP_NEEDS: ClassVar[tuple[str, ...]] = ("cluster", "execution")
    STEP_NEEDS: ClassVar[Mapping[str, tuple[str, ...]]] = {}  # step -> the fields it cannot do without

    @classmethod
    def for_step(cls, step: str) -> type[RunbookDocument]:
        """This model with the fields ``step`` needs required (present, not null, not empty)."""
        return requiring(cls, tuple(dict.fromkeys((*cls.EVERY_STEP_NEEDS, *cls.STEP_NEEDS.get(step, ())))))

    @field_validator("approval_timeout_seconds")
    @classmethod
    def _not_negative(cls, value: int | None) -> int | None:
        if value is not None and value < 0:
            raise ValueError(f"{value!r} is not a whole number of seconds")
        return value


class OldMember(_Part):
    name: str
    peer_urls: list[str] = []


class NewMember(HostRecord):
    id: str | None = None  # hex, once it is a member
    initial_cluster: str | None = None


class ReplaceDocument(RunbookDocument):
    """ReplaceMember: the member to replace (input), then the re-check, the removal, the new member."""

    member_id: str | None = None
    member_name: str | None = None
    member_label: str | None = None
    incident_id: str | None = None
    attempt: int | None = None  # an autopilot attempt (with incident_id), counted from 1
    max_attempts: int | None = None
    ec2_failed: bool | None = None
    recovered: bool | None = None
    original_voters: int | None = None
    removed: bool | None = None
    old_member: OldMember | None = None
    new_member: NewMember | None = None
    healthy_voters: int | None = None
    retired: str | None = None

    STEP_NEEDS: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "AcquireLock": ("member_id",),
        "CheckMemberStillFailed": ("member_id",),
        "Preflight": ("backup_id",),
        "RemoveFailedMember": ("member_id",),
    }

    @field_validator("member_id")
    @classmethod
    def _hex(cls, value: str | None) -> str | None:
        if value is not None and not _HEX_ID.fullmatch(value):
            raise ValueError(f"{value!r} is not a hex id")
        return value


RESTORE_MODES = ("in-place", "new-hosts")


class StagedSnapshot(_Part):
    key: str
    uri: str
    sha256: str


class RestoreVerified(_Part):
    revision: int
    keys: int
    revision_bumped: bool


class VolumeSource(_Part):
    """The EBS snapshot a restore reads (one member's data volume, as a volume backup recorded it)."""

    snapshot_id: str
    member: str | None = None


class RestoreDocument(RunbookDocument):
    """RestoreCluster: the backup and the mode (input), then what was checked, stopped, restored, started."""

    mode: str | None = None  # one of RESTORE_MODES; in-place when not given
    bump_revision: int | None = None  # when given: 0 (no bump) up to below 10^12
    lock_lease_seconds: int | None = None
    cluster_token: str | None = None
    old_data_suffix: str | None = None
    backup_created_at: str | None = None
    backup_total_keys: int | None = None
    backup_keys: int | None = None
    backup_etcd_version: str | None = None
    backup_cluster_id: str | None = None
    backup_imported_from: str | None = None
    live_cluster_id: str | None = None
    old_hosts: list[HostRecord] | None = None
    approval_summary: str | None = None
    apiservers_stopped: bool | None = None
    etcd_stopped: list[str] | None = None
    targets: list[HostRecord] | None = None
    launched: list[str] | None = None
    staged: StagedSnapshot | None = None
    restored: dict[str, str] | None = None  # host name -> when its data directory was restored
    members_started: list[str] | None = None
    verified: RestoreVerified | None = None
    repointed: bool | None = None
    apiservers_started: bool | None = None
    control_plane_restarted: bool | None = None
    staging_removed: list[str] | None = None
    cleanup_error: dict[str, Any] | None = None  # a failed removal of the staged snapshot, caught
    # a point-in-time restore (issue 16): one of these instead of backup_id, then what was planned and replayed
    to_revision: int | None = None
    to_time: str | None = None  # ISO 8601 with a time zone
    latest: bool | None = None
    pitr: dict[str, Any] | None = None
    replayed: dict[str, Any] | None = None
    # an EBS volume backup named as the backup (issue 17): its snapshot, restored through a volume per host
    volume_source: VolumeSource | None = None
    volumes_removed: list[str] | None = None

    STEP_NEEDS: ClassVar[Mapping[str, tuple[str, ...]]] = {"Preflight": ("backup_id",)}

    @field_validator("to_revision")
    @classmethod
    def _to_revision(cls, value: int | None) -> int | None:
        if value is not None and not 1 <= value < 2**63:
            raise ValueError(f"{value!r} is not a revision (a whole number from 1)")
        return value

    @field_validator("to_time")
    @classmethod
    def _to_time(cls, value: str | None) -> str | None:
        if value:
            try:
                moment = datetime.fromisoformat(value)
            except ValueError:
                raise ValueError(f"{value!r} is not an ISO 8601 time") from None
            if moment.tzinfo is None:
                raise ValueError(f"{value!r} has no time zone (add Z or +00:00)")
        return value

    @field_validator("mode")
    @classmethod
    def _mode(cls, value: str | None) -> str | None:
        if value not in (None, "", *RESTORE_MODES):
            raise ValueError(f"{value!r} is not one of {', '.join(RESTORE_MODES)}")
        return value

    @field_validator("bump_revision")
    @classmethod
    def _bump(cls, value: int | None) -> int | None:
        if value is None or not 0 <= value < 10**12:
            raise ValueError(f"{value!r} is not a whole number below 10^12")
        return value


class ScaleChange(_Part):
    """One membership change of ScaleCluster: under way (``current``) or finished (``changes``)."""

    kind: str  # add, remove, or done (the last pick)
    voters_after: int
    name: str | None = None
    id: str | None = None  # hex
    at: str | None = None


class ScaleMember(OldMember):
    id: str | None = None  # hex


class ScaleDocument(RunbookDocument):
    """ScaleCluster: the size asked (input), then the size before, each change and the size after."""

    size: int | None = None  # checked by etcdops.domain.scale.size_refusal (3, 5 or 7)
    voters_before: int | None = None
    members_before: list[str] | None = None
    nothing_to_do: bool | None = None
    approval_summary: str | None = None
    done: bool | None = None
    kind: str | None = None  # the next change's kind, for the state machine's choice
    current: ScaleChange | None = None
    changes: list[ScaleChange] | None = None
    new_member: NewMember | None = None
    old_member: ScaleMember | None = None
    healthy_voters: int | None = None
    retired: str | None = None
    voters_after: int | None = None
    members_after: list[str] | None = None

    STEP_NEEDS: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "AcquireLock": ("size",),
        "Preflight": ("backup_id",),
        "NotifySuccess": ("size",),
    }


class UpgradeMember(_Part):
    id: str  # hex
    before: str | None = None  # the version it ran before (None: it did not say)


class UpgradeCurrent(_Part):
    """The member being upgraded (or rolled back) now."""

    name: str
    id: str  # hex
    before: str | None = None
    was_leader: bool | None = None
    started_at: str | None = None
    stopped_at: str | None = None
    leadership_moved_to: str | None = None
    rolled_back_to: str | None = None
    seconds: float | None = None


class UpgradedMember(_Part):
    name: str
    id: str
    before: str | None = None
    after: str | None = None
    was_leader: bool | None = None
    leadership_moved_to: str | None = None
    seconds: float | None = None
    down_seconds: float | None = None
    cluster_version: str | None = None


class UpgradeDocument(RunbookDocument):
    """UpgradeCluster: the version (input; its form is checked by the path check, which names the
    versions it knows), then the path, the members' versions, the member in progress and the report."""

    version: str | None = None
    from_version: str | None = None
    path: str | None = None
    nothing_to_do: bool | None = None
    members: dict[str, UpgradeMember] | None = None  # by member name
    cluster_version_before: str | None = None
    cluster_version_after: str | None = None
    approval_summary: str | None = None
    done: bool | None = None
    current: UpgradeCurrent | None = None
    upgraded: list[UpgradedMember] | None = None

    STEP_NEEDS: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "AcquireLock": ("version",),
        "Preflight": ("backup_id", "members"),
        "NotifySuccess": ("version",),
    }


class MaintainMember(_Part):
    """The member being defragmented, and once done an entry of ``defragmented``."""

    name: str
    id: str  # hex
    endpoint: str | None = None
    was_leader: bool | None = None
    before: int | None = None  # db size, bytes
    in_use_before: int | None = None
    predicted: int | None = None  # what the rule expects back
    leadership_moved_to: str | None = None
    seconds: float | None = None
    defragmented_at: str | None = None
    after: int | None = None
    returned: int | None = None


class Compaction(_Part):
    revision: int | None = None  # None: not compacted (the outcome says why)
    at_revision: int | None = None
    external: bool | None = None
    outcome: str | None = None


class MaintainDocument(RunbookDocument):
    """MaintainCluster: routine, NOSPACE recovery or skipped (with reasons), the compaction, each member's
    defragmentation, and the alarm disarmed."""

    mode: str | None = None  # routine | nospace | skipped
    skipped: list[str] | None = None
    approval_summary: str | None = None
    predicted: dict[str, int] | None = None  # member name -> bytes the rule expects back
    pause_seconds: int | None = None
    compaction: Compaction | None = None
    done: bool | None = None
    first: bool | None = None
    current: MaintainMember | None = None
    defragmented: list[MaintainMember] | None = None
    disarmed: list[str] | None = None
    sizes_after: list[str] | None = None


class DrillExpected(_Part):
    """What the backup holds, for the scratch member to match."""

    revision: int
    keys: int
    sample: list[list[str]]  # [key in base64, digest of its value in hex]


class DrillObserved(_Part):
    revision: int
    keys: int
    sampled: int


class DrillDocument(RunbookDocument):
    """RestoreDrill: the backup (optional input), the scratch member it is restored into, what was expected
    and observed, and the record the drill leaves."""

    drill_id: str | None = None
    scratch_name: str | None = None
    cleaned_up: dict[str, Any] | None = None
    backup_created_at: str | None = None
    expected: DrillExpected | None = None
    scratch: HostRecord | None = None
    scratch_restored: str | None = None
    scratch_started: str | None = None
    observed: DrillObserved | None = None
    torn_down: dict[str, Any] | None = None
    teardown_error: dict[str, Any] | None = None  # a failed tear-down, caught
    result: dict[str, Any] | None = None  # the drill record


class RotateDocument(RunbookDocument):
    """RotateCertificates: what every runbook's document holds (its own records are read defensively)."""
