"""One settings model per Lambda function (etcdops.entrypoints.settings): built from what template.yaml gives that
function, refusing a missing or malformed variable with one line that names it."""

from __future__ import annotations

import pytest
from template_model import Template

from etcdops.domain.errors import ConfigError
from etcdops.entrypoints.settings import (
    DEFAULT_APPROVAL_TTL_SECONDS,
    ApprovalApiSettings,
    DeltaJobSettings,
    EnvSettings,
    FailureNoticeSettings,
    HealthSettings,
    JobSettings,
    RequestApprovalSettings,
    RunbookSettings,
    ScheduledRunbookSettings,
)

MODEL_OF_FUNCTION: dict[str, type[EnvSettings]] = {
    "HealthCheckFunction": HealthSettings,
    "BackupFunction": JobSettings,
    "BackupVerifyFunction": JobSettings,
    "DeltaBackupFunction": DeltaJobSettings,
    "FailureNoticeFunction": FailureNoticeSettings,
    "RunbookStepFunction": RunbookSettings,
    "ScheduledRunbooksFunction": ScheduledRunbookSettings,
    "RequestApprovalFunction": RequestApprovalSettings,
    "ApprovalFunction": ApprovalApiSettings,
}


@pytest.fixture(scope="module")
def environments() -> dict[str, dict[str, str]]:
    functions = Template().functions
    return {lid: {k: str(v) for k, v in props["Environment"]["Variables"].items()} for lid, props in functions.items()}


def test_every_function_has_a_model_and_it_accepts_what_the_template_gives(
    environments: dict[str, dict[str, str]],
) -> None:
    assert set(environments) == set(MODEL_OF_FUNCTION)
    for function, model in MODEL_OF_FUNCTION.items():
        settings = model.from_env(environments[function])
        for name, field in model.model_fields.items():
            variable = field.alias or name
            # every variable the model reads is one the template sets for that function
            assert variable in environments[function], f"{function}: template.yaml does not set {variable}"
            assert getattr(settings, name) is not None
    approval = RequestApprovalSettings.from_env(environments["RequestApprovalFunction"])
    assert approval.base_url.startswith("https://") and approval.ttl_seconds > 0


def test_missing_variables_are_named_together_on_one_line() -> None:
    with pytest.raises(ConfigError) as refused:
        RunbookSettings.from_env({"TABLE_NAME": "t", "TOPIC_ARN": " "})
    assert str(refused.value) == (
        "CLUSTER_CONFIG_PARAMETER, TOPIC_ARN, STACK_NAME: not set in the function's environment"
    )
    with pytest.raises(ConfigError, match=r"^TOPIC_ARN: not set"):
        FailureNoticeSettings.from_env({"CLUSTER_CONFIG_PARAMETER": "/c"})
    assert JobSettings.from_env({"CLUSTER_CONFIG_PARAMETER": "/c"}).topic_arn is None


@pytest.mark.parametrize("ttl", ["0", "-5", "1h", "3.5"])
def test_a_malformed_value_is_named_with_what_is_wrong(ttl: str) -> None:
    env = {"TABLE_NAME": "t", "TOPIC_ARN": "a", "APPROVAL_SECRET_ARN": "s", "APPROVAL_BASE_URL": "https://x"}
    with pytest.raises(ConfigError) as refused:
        RequestApprovalSettings.from_env({**env, "APPROVAL_TTL_SECONDS": ttl})
    assert str(refused.value) == f"APPROVAL_TTL_SECONDS: must be a positive number of seconds, got {ttl!r}"
    assert "\n" not in str(refused.value)
    settings = RequestApprovalSettings.from_env({**env, "APPROVAL_TTL_SECONDS": " ", "UNRELATED": "x"})
    assert settings.ttl_seconds == DEFAULT_APPROVAL_TTL_SECONDS  # blank is not set; other variables ignored
    assert RequestApprovalSettings.from_env({**env, "APPROVAL_TTL_SECONDS": "90"}).ttl_seconds == 90


def test_settings_are_values() -> None:
    settings = JobSettings(config_parameter="/c", topic_arn=None)
    with pytest.raises(ValueError, match="frozen"):
        settings.config_parameter = "/other"  # type: ignore[misc]
    assert settings == JobSettings.from_env({"CLUSTER_CONFIG_PARAMETER": " /c "})
