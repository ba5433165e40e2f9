"""The live membership as the source of truth (invariant 10): endpoints after a change, and the stored
configuration rewritten where it lives, atomically and idempotently."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from moto import mock_aws

from etcdops.adapters.aws import SsmConfigParameter, load_cluster_config
from etcdops.adapters.etcd.membership import endpoints_after_change, merge_endpoints, record_membership
from etcdops.domain.config import ConfigFile, loads_config, rewrite_endpoints
from etcdops.domain.errors import ConfigError
from etcdops.domain.health import MemberHealth

OLD = ["https://10.0.1.10:2379", "https://10.0.2.10:2379", "https://10.0.3.10:2379"]
LIVE = ["https://10.0.1.10:2379", "https://10.0.3.10:2379", "https://10.0.2.77:2379"]
YAML_DOCUMENT = f"""\
name: prod
endpoints: {json.dumps(OLD)}
tls: {{ca: arn:aws:secretsmanager:us-east-1:123456789012:secret:etcdops/prod/ca}}
approval: always
health: {{failure_threshold: 4}}
"""


def test_the_live_members_replace_the_configured_endpoints_keeping_their_order() -> None:
    assert endpoints_after_change(OLD, LIVE) == ["https://10.0.1.10:2379", "https://10.0.3.10:2379", LIVE[2]]
    assert endpoints_after_change([], LIVE) == LIVE
    assert merge_endpoints(["a", "b"], ["b", "c"], ["a"]) == ["a", "b", "c"]


urls = st.lists(st.integers(1, 30).map(lambda n: f"https://10.0.0.{n}:2379"), max_size=8, unique=True)


@given(configured=urls, live=urls.filter(bool))
def test_after_a_change_exactly_the_live_members_are_stored_and_a_second_pass_changes_nothing(
    configured: list[str], live: list[str]
) -> None:
    after = endpoints_after_change(configured, live)
    assert sorted(after) == sorted(live)
    assert endpoints_after_change(after, live) == after


def test_only_the_endpoints_change_and_the_format_is_kept() -> None:
    rewritten, endpoints = rewrite_endpoints(YAML_DOCUMENT, lambda current: endpoints_after_change(current, LIVE))
    document = yaml.safe_load(rewritten)
    assert endpoints == document["endpoints"] == endpoints_after_change(OLD, LIVE)
    assert {k: v for k, v in document.items() if k != "endpoints"} == {
        k: v for k, v in yaml.safe_load(YAML_DOCUMENT).items() if k != "endpoints"
    }  # no defaults added, nothing else touched
    as_json = json.dumps(yaml.safe_load(YAML_DOCUMENT))
    rewritten_json, _ = rewrite_endpoints(as_json, lambda current: LIVE)
    assert json.loads(rewritten_json)["endpoints"] == LIVE and rewritten_json.lstrip().startswith("{")
    # nothing to change: the very same text comes back
    assert rewrite_endpoints(rewritten, lambda current: current)[0] == rewritten


def test_a_rewrite_that_would_make_the_document_invalid_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="endpoints"):
        rewrite_endpoints(YAML_DOCUMENT, lambda current: ["http://10.0.0.1:2379"])  # plain http without plaintext


class CountingStore:
    def __init__(self, text: str) -> None:
        self.text, self.writes = text, 0

    @property
    def where(self) -> str:
        return "memory"

    def read(self) -> str:
        return self.text

    def write(self, text: str) -> None:
        self.text, self.writes = text, self.writes + 1


def test_recording_the_membership_converges_when_retried() -> None:
    store = CountingStore(YAML_DOCUMENT)
    first = record_membership([store], LIVE)
    again = record_membership([store], LIVE)
    assert (first.updated, first.unchanged, again.updated, again.unchanged) == (["memory"], [], [], ["memory"])
    assert store.writes == 1 and loads_config(store.text).endpoints == first.endpoints
    with pytest.raises(ValueError, match="no live client URLs"):
        record_membership([store], [])


def test_a_config_file_is_replaced_atomically_and_keeps_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(YAML_DOCUMENT)
    path.chmod(0o640)
    record_membership([ConfigFile(path)], LIVE)
    assert loads_config(path.read_text()).endpoints == endpoints_after_change(OLD, LIVE)
    assert path.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cluster.yaml"]  # no temporary file left
    with pytest.raises(ConfigError, match="cannot read"):
        ConfigFile(tmp_path / "missing.yaml").read()


@pytest.fixture
def ssm(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[object, str]]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        key = boto3.client("kms", region_name="us-east-1").create_key()["KeyMetadata"]["KeyId"]
        yield boto3.client("ssm", region_name="us-east-1"), key


@pytest.mark.parametrize(("kind", "tier"), [("SecureString", "Advanced"), ("String", "Standard")])
def test_the_ssm_parameter_keeps_its_type_tier_and_key(ssm: tuple[object, str], kind: str, tier: str) -> None:
    client, key = ssm
    extra = {"KeyId": key} if kind == "SecureString" else {}
    client.put_parameter(Name="/etcdops/prod", Value=YAML_DOCUMENT, Type=kind, Tier=tier, **extra)  # type: ignore[attr-defined]

    recorded = record_membership([SsmConfigParameter(client, "/etcdops/prod")], LIVE)
    record_membership([SsmConfigParameter(client, "/etcdops/prod")], LIVE)

    assert recorded.updated == ["ssm:/etcdops/prod"]
    assert load_cluster_config(client, "/etcdops/prod").endpoints == recorded.endpoints
    [described] = client.describe_parameters()["Parameters"]  # type: ignore[attr-defined]
    assert (described["Type"], described["Tier"], described["Version"]) == (kind, tier, 2)  # written once
    if kind == "SecureString":
        assert described["KeyId"] == key


def test_a_missing_parameter_is_named(ssm: tuple[object, str]) -> None:
    client, _ = ssm
    with pytest.raises(ConfigError, match="/etcdops/none does not exist"):
        SsmConfigParameter(client, "/etcdops/none").read()


@pytest.mark.parametrize(
    ("member", "label"),
    [
        (MemberHealth(0x1A, "m1", ("https://a:2379",), ("https://a:2380",), False, True), "m1 (1a)"),
        (MemberHealth(0x1A, "", (), ("https://a:2380",), True, False), "not-yet-started member 1a, peer https://a:2380"),
        (MemberHealth(0, "", ("https://a:2379",), (), False, False), "the member at https://a:2379"),
        (MemberHealth(0, "", (), (), False, False), "an unknown member"),
    ],
)
def test_members_are_always_named_in_messages(member: MemberHealth, label: str) -> None:
    assert member.label == label and "unnamed" not in member.label
