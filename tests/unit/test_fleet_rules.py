"""The fleet brake and the fleet-wide repair cap (invariant 15): the pure rules, both stores, and the
health round's repairs held by them."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import cast

import pytest
from hypothesis import given
from hypothesis import strategies as st
from moto_dynamodb import state_table
from test_healthcheck import CONFIG, NOW, REPLACE

from etcdops.adapters.aws import MemoryNotifier
from etcdops.adapters.etcd.client import EtcdClient
from etcdops.adapters.fleet_state import DynamoFleetStore, FleetStore, InMemoryFleetStore
from etcdops.adapters.health_aws import ExecutionState, InstanceDirectory, RecordingReplaceStarter
from etcdops.adapters.healthmetrics import RecordingMetrics
from etcdops.adapters.state_memory import InMemoryStateStore
from etcdops.app.fleet import BRAKE_KIND, RELEASED_KIND, FleetGate
from etcdops.app.health_actions import act
from etcdops.app.healthcheck import HealthContext
from etcdops.domain.errors import UsageError
from etcdops.domain.fleet import FleetLimits, Report, decide_brake, decide_slot, release_slot
from etcdops.domain.repair import AttemptStatus

T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
names = st.lists(st.from_regex(r"c[0-9]{1,3}", fullmatch=True), min_size=1, max_size=30, unique=True)


# ---- the pure rules -----------------------------------------------------------------------------------


@given(
    fleet=names,
    data=st.data(),
    share=st.floats(min_value=0.05, max_value=0.95),
    minimum=st.integers(min_value=1, max_value=4),
)
def test_the_brake_is_engaged_exactly_when_enough_clusters_and_more_than_the_share_failed_recently(
    fleet: list[str], data: st.DataObject, share: float, minimum: int
) -> None:
    limits = FleetLimits(brake_share=share, min_failing=minimum, window_seconds=120)
    reports = [
        Report(
            name,
            data.draw(st.booleans(), label=f"{name} failing"),
            T0 - timedelta(seconds=data.draw(st.integers(min_value=0, max_value=300), label=f"{name} age")),
        )
        for name in [*fleet, "not-registered"]
    ]
    decision = decide_brake(reports, fleet, T0, limits)
    recent = {r.cluster for r in reports if r.failing and r.cluster in fleet and r.at >= T0 - timedelta(seconds=120)}
    assert set(decision.failing) == recent and decision.fleet_size == len(fleet)
    assert decision.engaged == (len(recent) >= minimum and len(recent) / len(fleet) > share)


@given(fleet=names)
def test_one_failing_cluster_never_brakes_the_fleet(fleet: list[str]) -> None:
    decision = decide_brake([Report(fleet[0], True, T0)], fleet, T0, FleetLimits(brake_share=0.05))
    assert not decision.engaged


def test_the_brake_says_why_with_numbers() -> None:
    fleet = ["c1", "c2", "c3", "c4", "c5"]
    reports = [Report(c, c in ("c1", "c2", "c3"), T0) for c in fleet]
    decision = decide_brake(reports, fleet, T0, FleetLimits(brake_share=0.4))
    assert decision.engaged and decision.failing == ("c1", "c2", "c3")
    assert decision.reason.startswith("3 of 5 clusters (60%) reported failures in the last 180 s, more than 40%")
    assert "invariant 15" in decision.reason


requests = st.lists(
    st.tuples(st.sampled_from(["take", "release"]), st.integers(min_value=0, max_value=9), st.integers(0, 600)),
    max_size=40,
)


@given(steps=requests, cap=st.integers(min_value=1, max_value=4))
def test_never_more_repairs_hold_a_slot_than_the_cap(steps: list[tuple[str, int, int]], cap: int) -> None:
    limits = FleetLimits(repair_cap=cap, slot_lease_seconds=900)
    holders: dict[str, datetime] = {}
    now = T0
    for what, number, later in steps:
        now += timedelta(seconds=later)
        execution = f"x{number}"
        if what == "release":
            holders = release_slot(holders, execution)
            continue
        decision = decide_slot(holders, execution, now, limits)
        live_before = {n for n, until in holders.items() if until > now}
        assert decision.granted == (execution in live_before or len(live_before) < cap)
        holders = decision.holders
        assert len([u for u in holders.values() if u > now]) <= cap


@pytest.mark.parametrize(
    ("limits", "message"),
    [
        ({"brake_share": 1.0}, "fleet brake share: must be between 0 and 1 (exclusive), got 1.0"),
        ({"repair_cap": 0}, "fleet repair cap: must be at least 1, got 0"),
        ({"min_failing": 0}, "fleet brake minimum: must be at least 1 cluster, got 0"),
    ],
)
def test_limits_that_make_no_sense_are_refused_in_one_line(limits: dict[str, float], message: str) -> None:
    with pytest.raises(UsageError) as refused:
        FleetLimits(**limits)  # type: ignore[arg-type]
    assert str(refused.value) == message


# ---- both stores --------------------------------------------------------------------------------------


@pytest.fixture(params=["memory", "dynamodb"])
def fleet_store(request: pytest.FixtureRequest) -> Iterator[FleetStore]:
    if request.param == "memory":
        yield InMemoryFleetStore()
        return
    with state_table("etcdops-state") as client:
        yield DynamoFleetStore("etcdops-state", client)


def test_each_brake_change_is_won_by_one_writer(fleet_store: FleetStore) -> None:
    assert not fleet_store.load_brake().engaged
    assert not fleet_store.set_brake(False, "nothing failing", T0)  # released already
    assert fleet_store.set_brake(True, "3 of 5", T0)
    assert not fleet_store.set_brake(True, "3 of 5, again", T0)
    brake = fleet_store.load_brake()
    assert (brake.engaged, brake.reason, brake.changed_at) == (True, "3 of 5", T0)
    assert fleet_store.set_brake(False, "0 of 5", T0 + timedelta(minutes=1))
    assert not fleet_store.set_brake(False, "0 of 5", T0 + timedelta(minutes=2))


def test_slots_are_saved_only_over_the_version_read(fleet_store: FleetStore) -> None:
    first = fleet_store.load_slots()
    assert (first.holders, first.version) == ({}, 0)
    assert fleet_store.save_slots({"x1": T0}, 0)
    assert not fleet_store.save_slots({"x2": T0}, 0)  # someone else saved since version 0 was read
    second = fleet_store.load_slots()
    assert (second.holders, second.version) == ({"x1": T0}, 1)
    assert fleet_store.save_slots({}, 1)


def test_reports_and_members_round_trip_per_cluster(fleet_store: FleetStore) -> None:
    assert fleet_store.load_members() is None
    fleet_store.save_members(["c2", "c1"], T0)
    fleet_store.report("c1", True, T0)
    fleet_store.report("c2", False, T0)
    fleet_store.report("c1", False, T0 + timedelta(seconds=10))  # replaces c1's report
    assert fleet_store.load_members() == ["c1", "c2"]
    assert sorted(fleet_store.load_reports(), key=lambda r: r.cluster) == [
        Report("c1", False, T0 + timedelta(seconds=10)),
        Report("c2", False, T0),
    ]


# ---- the health round's repairs, held by the brake and the cap -----------------------------------------


FLEET = ["c1", "c2", "c3", "c4", "c5"]


class Fleet:
    """Five clusters' rounds sharing one state table, one Step Functions and one topic."""

    def __init__(self, limits: FleetLimits) -> None:
        self.state, self.store = InMemoryStateStore(), InMemoryFleetStore()
        self.starter, self.notifier = RecordingReplaceStarter(), MemoryNotifier()
        self.store.save_members(FLEET, NOW)
        self.limits = limits

    def ended(self, execution: str) -> bool:
        state = self.starter.describe(execution)
        return state is not None and state.status.ended

    def repair(self, cluster: str, now: datetime) -> list[str]:
        config = CONFIG.model_copy(update={"name": cluster})
        gate = FleetGate(self.store, self.limits, self.notifier, self.ended)
        ctx = HealthContext(
            config=config,
            client=cast(EtcdClient, None),
            state=self.state,
            metrics=RecordingMetrics(),
            notifier=self.notifier,
            replace=self.starter,
            instances=InstanceDirectory(config),
            backups=None,
            fleet=gate,
        )
        decision = replace(REPLACE, cluster=cluster, incident_id=f"{cluster}-replace-ab-1")
        return act(ctx, decision, frozenset(), now)

    def round(self, cluster: str, failing: bool, now: datetime) -> list[str]:
        """What a round of ``cluster`` reports to the gate (the brake's side of it)."""
        return FleetGate(self.store, self.limits, self.notifier, self.ended).report(cluster, failing, now)

    def kinds(self) -> list[str]:
        return [attributes["kind"] for _, _, attributes in self.notifier.messages]


def test_three_of_five_failing_pause_every_repair_with_one_escalation_and_resume_by_themselves() -> None:
    fleet = Fleet(FleetLimits(brake_share=0.4))
    for cluster in ("c1", "c2", "c3"):
        fleet.store.report(cluster, True, NOW)
    for cluster in ("c4", "c5"):
        fleet.store.report(cluster, False, NOW)

    for later in (0, 30, 60):  # three rounds of every failing cluster
        for cluster in ("c1", "c2", "c3"):
            done = fleet.repair(cluster, NOW + timedelta(seconds=later))
            assert any("held: fleet brake engaged: 3 of 5 clusters (60%)" in line for line in done)
    assert fleet.starter.started == {}
    assert fleet.kinds() == [BRAKE_KIND]
    assert "Failing: c1, c2, c3" in fleet.notifier.messages[0][1]

    # they come back: the share falls to 1 of 5, the brake releases itself (said once) and c1's repair runs
    later = NOW + timedelta(seconds=90)
    for cluster in ("c2", "c3"):
        fleet.store.report(cluster, False, later)
    done = fleet.repair("c1", later)
    assert done[0] == "released the fleet brake" and "started ReplaceMember c1-replace-ab-1-a1" in done
    assert fleet.kinds() == [BRAKE_KIND, RELEASED_KIND, "replace"]


def test_the_brake_is_released_by_the_rounds_of_recovered_clusters_with_no_repair_waiting() -> None:
    fleet = Fleet(FleetLimits(brake_share=0.4))
    for cluster in ("c1", "c2", "c3"):
        assert fleet.round(cluster, True, NOW) == []
    fleet.repair("c1", NOW)
    assert fleet.kinds() == [BRAKE_KIND]

    # the killed members come back: no repair asks to start, the recovered clusters' rounds release it
    later = NOW + timedelta(seconds=20)
    assert fleet.round("c4", False, later) == []  # still 3 of 5
    assert fleet.round("c1", False, later) == ["released the fleet brake"]  # 2 of 5 is 40 %: not more
    assert [fleet.round(c, False, later) for c in ("c2", "c3", "c1")] == [[], [], []]
    assert fleet.kinds() == [BRAKE_KIND, RELEASED_KIND] and fleet.starter.started == {}
    assert not fleet.store.load_brake().engaged


def test_at_most_the_cap_of_repairs_run_across_the_fleet_and_a_finished_one_frees_its_slot() -> None:
    fleet = Fleet(FleetLimits(brake_share=0.9, repair_cap=3))  # 4 of 5 failing is 80 %: no brake
    for cluster in FLEET[:4]:
        fleet.store.report(cluster, True, NOW)
    for cluster in FLEET[:4]:
        fleet.repair(cluster, NOW)
    assert sorted(fleet.starter.started) == [f"{c}-replace-ab-1-a1" for c in ("c1", "c2", "c3")]
    held = fleet.repair("c4", NOW + timedelta(seconds=30))
    assert held == [
        "c4-replace-ab-1-a1 held: 3 repairs run across the fleet (c1-replace-ab-1-a1, c2-replace-ab-1-a1, "
        "c3-replace-ab-1-a1), the cap is 3 (invariant 15): this one waits for a free slot"
    ]

    fleet.starter.outcomes["c2-replace-ab-1-a1"] = ExecutionState(AttemptStatus.SUCCEEDED, NOW + timedelta(seconds=40))
    fleet.repair("c4", NOW + timedelta(seconds=60))
    assert "c4-replace-ab-1-a1" in fleet.starter.started
    assert sorted(fleet.store.load_slots().holders) == [f"{c}-replace-ab-1-a1" for c in ("c1", "c3", "c4")]
