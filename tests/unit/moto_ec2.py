"""EC2 in moto with only the image a test registers.

moto loads its catalogue of thousands of public AMIs into every new EC2 backend, and listing them
serializes all of them: seconds per test. Our tests launch one image of their own (as a launch
template names one), so the catalogue is turned off before the backend exists and the image is
registered instead.
"""

from __future__ import annotations

from typing import Any

import pytest


def emulated_account(monkeypatch: pytest.MonkeyPatch, region: str) -> None:
    """Dummy credentials and ``region`` for moto, and no public images (call before the mock starts)."""
    for variable, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": region,
    }.items():
        monkeypatch.setenv(variable, value)
    without_public_images(monkeypatch)


def without_public_images(monkeypatch: pytest.MonkeyPatch) -> None:
    """Call before the first EC2 call of a moto mock: its backend then starts with no AMIs."""
    monkeypatch.setenv("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")


def register_host_image(ec2: Any) -> str:
    """An image to launch etcd hosts from (what a launch template names)."""
    image = ec2.register_image(
        Name="etcd-host", Architecture="arm64", RootDeviceName="/dev/xvda", VirtualizationType="hvm"
    )
    return str(image["ImageId"])
