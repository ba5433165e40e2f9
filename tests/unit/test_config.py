"""Configuration documents: valid ones load, invalid ones are refused naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from etcdops.domain.config import dump_config, load_config, loads_config, parse_config
from etcdops.domain.errors import ConfigError

VALID = {
    "name": "prod-eu",
    "endpoints": ["https://10.0.0.1:2379", "https://10.0.0.2:2379"],
    "tls": {"ca": "/etc/etcd/ca.crt", "cert": "/etc/etcd/client.crt", "key": "/etc/etcd/client.key"},
    "backup": {"destination": "s3://bucket/etcd/prod", "encryption_key": "arn:aws:kms:eu-west-1:1:key/abc"},
    "approval": "always",
    "compute": {"provider": "ec2", "launch_template": "lt-123", "subnets": ["subnet-0123abcd"]},
}


def test_a_valid_document_loads_with_defaults() -> None:
    config = parse_config(VALID)

    assert config.name == "prod-eu"
    assert config.health.failure_threshold == 3 and config.health.failure_window_seconds == 60
    assert config.health.probe_deadline_seconds == 2.0
    assert config.backup is not None and config.backup.schedule == "rate(30 minutes)"
    assert config.compute is not None and config.compute.provider == "ec2"
    assert config.certificates.renew_days == 30


def test_member_instances_map_names_to_instance_ids() -> None:
    config = parse_config({**VALID, "health": {"member_instances": {"m1": "i-0123456789abcdef0", "m2": "i-0abcdef12"}}})

    assert config.health.member_instances == {"m1": "i-0123456789abcdef0", "m2": "i-0abcdef12"}
    assert parse_config(VALID).health.member_instances == {}


def test_yaml_and_json_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "cluster.yaml"
    path.write_text(dump_config(parse_config(VALID)))

    assert load_config(path) == parse_config(VALID)
    assert loads_config('{"name": "a", "endpoints": ["http://127.0.0.1:1"], "plaintext": true}').plaintext


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"name": "Prod_EU"}, "name"),
        ({"endpoints": ["10.0.0.1:2379"]}, "endpoints"),
        ({"endpoints": ["https://10.0.0.1"]}, "endpoints"),
        ({"endpoints": ["http://10.0.0.1:2379"]}, "endpoints"),
        ({"tls": None}, "tls"),
        ({"tls": {"ca": "/ca", "cert": "/c"}}, "tls"),
        ({"backup": {"destination": "ftp://x", "encryption_key": "file:///k"}}, "backup.destination"),
        ({"backup": {"destination": "file:///b", "encryption_key": "secret"}}, "backup.encryption_key"),
        (
            {"backup": {"destination": "file:///b", "encryption_key": "file:///k", "schedule": "every 5m"}},
            "backup.schedule",
        ),
        ({"approval": "sometimes"}, "approval"),
        ({"health": {"failure_threshold": 0}}, "health.failure_threshold"),
        ({"health": {"member_instances": {"m1": "vm-1"}}}, "health.member_instances"),
        (
            {"health": {"member_instances": {"m1": "i-0123456789abcdef0", "m2": "i-0123456789abcdef0"}}},
            "health.member_instances",
        ),
        ({"compute": {"provider": "gce"}}, "compute"),
        ({"compute": {"provider": "ec2", "launch_template": "lt", "subnets": []}}, "compute.subnets"),
        ({"compute": {"provider": "ec2", "launch_template": "lt", "subnets": ["subnet-1"]}}, "compute.subnets"),
        (
            {"compute": {"provider": "ec2", "launch_template": "lt", "subnets": ["subnet-0123abcd"] * 2}},
            "compute.subnets",
        ),
        (
            {
                "compute": {
                    "provider": "ec2",
                    "launch_template": "lt",
                    "subnets": ["subnet-0123abcd"],
                    "security_groups": ["x"],
                }
            },
            "compute.security_groups",
        ),
        ({"aws": {"role_arn": "arn:aws:iam::123:role/x"}}, "aws.role_arn"),  # not a 12-digit account
        ({"aws": {"role_arn": "arn:aws:iam::123456789012:user/x"}}, "aws.role_arn"),
        ({"aws": {"role_arn": "arn:aws:iam::123456789012:role/x", "external_id": "a b"}}, "aws.external_id"),
        ({"aws": {"role_arn": "arn:aws:iam::123456789012:role/x", "session": "y"}}, "aws.session"),
        ({"colour": "blue"}, "colour"),
        ({"certificates": {"renew_days": 0}}, "certificates.renew_days"),
        ({"certificates": {"renew_days": 365}}, "certificates.renew_days"),  # a new certificate would be due at once
        ({"certificates": {"renew_days": "soon"}}, "certificates.renew_days"),
    ],
)
def test_an_invalid_document_is_refused_naming_the_field(change: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse_config({**VALID, **change}, "cluster.yaml")

    message = str(error.value)
    assert message.startswith(f"cluster.yaml: {field}"), message
    assert "\n" not in message


def test_unreadable_or_malformed_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML/JSON"):
        load_config(bad)
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(listing)
