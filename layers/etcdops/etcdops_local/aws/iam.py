"""IAM in the local stack: every function acts with its own role, and AWS's answer is enforced.

moto authenticates a request (a known access key, a valid signature) but its authorization checks the
action against ``*`` for most services, knows few condition keys and none of AWS's implicit checks.
While a :class:`LocalAws` runs, this module takes over the authorization step of every request:

* **Who.** The harness acts as an administrator (an IAM user made for it). A function invocation acts
  with credentials of its own role, the role CloudFormation created from the transformed template
  (:mod:`etcdops_local.aws.sandbox` binds them to the invocation), and a state machine's own calls (its
  ``lambda:invoke`` tasks) act with the state machine's role. Requests with any other key fail as in
  AWS (``InvalidClientTokenId``).
* **Whom a role trusts.** Role credentials go only to whom the role's trust policy trusts
  (:mod:`etcdops_local.aws.iamtrust`): :meth:`Authorizer.role_credentials` to the service
  (``lambda.amazonaws.com``...) with the service's refusal otherwise, and an ``sts:AssumeRole`` request
  to a caller both its own policies and the role's trust policy allow (``sts:ExternalId`` included).
* **What.** :func:`~etcdops_local.aws.iam_services.request_calls` turns a request into the
  authorizations AWS makes for it: the
  action on the resource ARN it names, with the condition keys AWS would supply (resource tags,
  request tags, ``iam:PassedToService``), plus the implicit ones: an SSE-KMS object read needs
  ``kms:Decrypt`` on its key, a write ``kms:GenerateDataKey``; a SecureString parameter or a secret
  under a customer key needs ``kms:Decrypt``; publishing to an encrypted topic needs
  ``kms:GenerateDataKey`` and ``kms:Decrypt``; a launch with an instance profile needs
  ``iam:PassRole`` on its role, and tags on launch ``ec2:CreateTags``. A request this module cannot
  model is authorized against ``*`` and recorded as unmodelled, which the coverage check reports.
* **The answer.** Each authorization is decided by :func:`etcdops_local.aws.iampolicy.evaluate` under the
  role's policies as installed from the transformed template; any denial fails the request with
  AWS's error, so a missing permission fails the test exactly as it would fail in AWS.
* **The record.** Every decision of a stack principal is recorded (principal, action, resource,
  why, allowed, the statements that allowed it, a fingerprint of the policies it was decided under,
  and whether the test provoked the denial on purpose: :meth:`Authorizer.expect_denied`).
  :func:`~etcdops_local.aws.iam_coverage.check` compares the records of the e2e runs with the
  template in both directions: nothing
  denied, and every granted action used by some test or listed with a reason (``python -m
  etcdops_local.aws.iam_coverage check``; bin/test runs it through tools/iam_coverage.py). Records decided under
  other policies (a test's copy of the template with a statement taken away) are set aside.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from etcdops_local.aws.errors import LocalAwsError
from etcdops_local.aws.iam_records import Principal, Recorder
from etcdops_local.aws.iam_requests import Request, _backend
from etcdops_local.aws.iam_services import request_calls
from etcdops_local.aws.iampolicy import (
    Call,
    Decision,
    Policy,
    evaluate,
    fingerprint,
    read_policy,
)
from etcdops_local.aws.iamtrust import ASSUME_ROLE, Assumer, TrustDecision, assume_role_context, decide_trust, refusal
from etcdops_local.aws.sandbox import Credentials

log = logging.getLogger("etcdops_local.aws.iam")

ADMIN_USER = "etcdops-local-admin"
_SIGNING_NAME_TO_PREFIX = {"monitoring": "cloudwatch", "elasticloadbalancingv2": "elasticloadbalancing"}


# ---- the authorizer installed into moto ------------------------------------------------------------------


class Authorizer:
    """Identities (the admin, role sessions), the principals of built stacks, and the decision for each request."""

    def __init__(self, account_id: str, region: str) -> None:
        self.account_id = account_id
        self.region = region
        self.recorder = Recorder()
        self._principals: dict[str, Principal] = {}  # role name -> principal
        self._role_credentials: dict[str, Credentials] = {}
        self._lock = threading.Lock()
        self.admin: Credentials | None = None
        self.denials: list[tuple[str, Call, str]] = []  # (principal or role, call, reason), newest last
        self._expected: set[tuple[str, str]] = set()  # (logical id, action) a test denies on purpose

    # identities

    def create_admin(self) -> Credentials:
        """The harness's identity: an IAM user allowed everything (made while authorization is still off)."""
        iam = _backend("iam", self.account_id, "aws")
        iam.create_user(region_name=self.region, user_name=ADMIN_USER)
        policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
        iam.put_user_policy(ADMIN_USER, "everything", json.dumps(policy))
        key = iam.create_access_key(ADMIN_USER)
        self.admin = Credentials(key.access_key_id, key.secret_access_key)
        return self.admin

    def role_credentials(self, role_arn: str, session_name: str, service: str) -> Credentials:
        """Credentials of a session of ``role_arn`` as ``service`` (``lambda.amazonaws.com``...) gets them:
        only when the role's trust policy lets the service assume it, else :class:`LocalAwsError` with the
        service's refusal. One session per role, kept for the local AWS's life, as a warm Lambda sandbox
        keeps its own (the trust policy is asked every time)."""
        decision = self.trust(role_arn, Assumer.of_service(service))
        if not decision.allowed:
            self.deny(service, Call.of(ASSUME_ROLE, role_arn), decision.reason)
            raise LocalAwsError(f"{role_arn}: {refusal(service)} ({decision.reason})")
        with self._lock:
            cached = self._role_credentials.get(role_arn)
            if cached is not None:
                return cached
            sts = _backend("sts", self.account_id, "aws")
            assumed = sts.assume_role(
                region_name=self.region,
                role_session_name=session_name[:64],
                role_arn=role_arn,
                policy=None,
                duration=43200,
                external_id=None,
            )
            credentials = Credentials(assumed.access_key_id, assumed.secret_access_key, assumed.session_token)
            self._role_credentials[role_arn] = credentials
            return credentials

    def trust(self, role_arn: str, assumer: Assumer, context: dict[str, list[str]] | None = None) -> TrustDecision:
        """The trust policy of ``role_arn`` (in the account its ARN names) on ``assumer`` assuming it."""
        account = role_arn.split(":")[4] if role_arn.count(":") >= 5 else ""
        try:
            role = _backend("iam", account, "aws").get_role_by_arn(role_arn)
        except Exception:  # no such role (or not an ARN): STS refuses as it refuses an untrusting role
            return TrustDecision(False, "no such role")
        return decide_trust(role.name, role.assume_role_policy_document, assumer, context)

    def deny(self, who: str, call: Call, reason: str) -> None:
        """Keep a denial (newest last) and log it."""
        with self._lock:
            self.denials.append((who, call, reason))
        log.info("denied: %s: %s on %s: %s", who, call.action, call.resource, reason)

    def register(self, principal: Principal) -> None:
        with self._lock:
            self._principals[principal.role_name] = principal

    def principal(self, role_name: str) -> Principal | None:
        with self._lock:
            return self._principals.get(role_name)

    def expect_denied(self, logical_id: str, action: str) -> None:
        """A test provokes this denial on purpose (a host role outside the PassRole scope): its records
        say so, and the coverage check does not count them as permissions the template misses."""
        with self._lock:
            self._expected.add((logical_id, action.lower()))

    def _is_expected(self, principal: Principal, call: Call) -> bool:
        with self._lock:
            return (principal.logical_id, call.action.lower()) in self._expected

    def role_policies(self, role_name: str) -> list[Policy]:
        """The role's inline and attached policies as stored in the emulated IAM."""
        iam = _backend("iam", self.account_id, "aws")
        role = iam.get_role(role_name)
        # copies taken at once: a stack built meanwhile puts policies from another thread
        policies = [_policy(f"{name}", document) for name, document in list(role.policies.items())]
        for attached in list(role.managed_policies.values()):
            version = next(v for v in list(attached.versions) if v.is_default)
            policies.append(_policy(attached.name, version.document))
        return policies

    # the decision

    def decide(self, role_name: str, request: Request) -> tuple[Call, Decision] | None:
        """Decide every authorization ``request`` needs as ``role_name``; the first denied one, else None."""
        asked = request_calls(request)
        policies = self.role_policies(role_name)
        principal = self.principal(role_name)
        digest = fingerprint(policies) if principal is not None else ""
        denied: tuple[Call, Decision] | None = None
        for call in asked.calls:
            decision = evaluate(policies, call)
            if principal is not None:
                expected = not decision.allowed and self._is_expected(principal, call)
                self.recorder.add(principal, call, decision, asked.modelled, digest, expected)
            if not decision.allowed and denied is None:
                denied = (call, decision)
                self.deny(principal.logical_id if principal else role_name, call, decision.reason)
        return denied


def _policy(name: str, document: Any) -> Policy:
    if isinstance(document, str):
        document = json.loads(document)
    return read_policy(name, document)


_ACTIVE: Authorizer | None = None


def active() -> bool:
    """True while a local AWS authorizes every request here (moto's own access control is then not used)."""
    return _ACTIVE is not None


def install(authorizer: Authorizer) -> Any:
    """Make ``authorizer`` decide every request moto serves (in-process and server); returns the undo."""
    global _ACTIVE
    from moto import settings
    from moto.core.authorization import ActionAuthenticatorMixin

    original = ActionAuthenticatorMixin._authenticate_and_authorize_action
    saved_count = settings.INITIAL_NO_AUTH_ACTION_COUNT
    _ACTIVE = authorizer

    def authenticate_and_authorize(self: Any, iam_request_cls: type, resource: str = "*") -> None:
        active = _ACTIVE
        if active is None:
            original(self, iam_request_cls, resource)
            return
        _authorize(active, self, iam_request_cls, resource)

    ActionAuthenticatorMixin._authenticate_and_authorize_action = authenticate_and_authorize  # type: ignore[method-assign]
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 0  # moto's own switch: every request is authenticated

    def undo() -> None:
        global _ACTIVE
        _ACTIVE = None
        ActionAuthenticatorMixin._authenticate_and_authorize_action = original  # type: ignore[method-assign]
        settings.INITIAL_NO_AUTH_ACTION_COUNT = saved_count

    return undo


def _authorize(authorizer: Authorizer, response: Any, iam_request_cls: type, resource: str) -> None:
    from moto.core.authorization import ActionAuthenticatorMixin
    from moto.core.exceptions import AccessDeniedError
    from moto.iam.access_control import AssumedRoleAccessKey, S3IAMRequest

    headers = response.headers
    if headers.get("X-Amz-Target") in ActionAuthenticatorMixin.PUBLIC_OPERATIONS:
        return
    is_s3 = iam_request_cls is S3IAMRequest
    operation = response.data.get("Action") if is_s3 else response._get_action()
    if "Authorization" not in headers:  # unsigned or presigned: no local code of ours does either
        raise AccessDeniedError(user_arn="anonymous", action=f"{'s3' if is_s3 else '?'}:{operation}")
    path = response.raw_path
    query = response.uri.partition("?")[2]
    iam_request = iam_request_cls(
        account_id=response.current_account,
        method=response.method,
        path=path + ("?" + query if query else ""),
        data=response.data,
        body=response.raw_body,
        headers=headers,
        action=operation,
    )
    _check_signature(iam_request, response.raw_body)
    access_key = iam_request._access_key
    assume = not is_s3 and iam_request._service == "sts" and operation == "AssumeRole"
    if not isinstance(access_key, AssumedRoleAccessKey):
        user = getattr(access_key, "_owner_user_name", None)
        if user != ADMIN_USER:
            iam_request.check_action_permitted(resource)  # another IAM user: moto's own check
        if assume:
            caller = f"arn:aws:iam::{response.current_account}:user/{user}"
            _check_trust(authorizer, response, Assumer.of_arns(response.current_account, caller))
        return
    signing_name = iam_request._service
    request = Request(
        prefix=_SIGNING_NAME_TO_PREFIX.get(signing_name, signing_name),
        operation=str(operation),
        params={} if is_s3 else _params(response, str(operation)),
        account=response.current_account,
        region=iam_request._region,
        method=response.method,
        headers=dict(headers),
        query=_query(response),
    )
    if is_s3:
        bucket_and_key = resource.split(":::", 1)[-1] if resource != "*" else None
        if bucket_and_key:
            bucket, _, key = bucket_and_key.partition("/")
            request.bucket, request.key = bucket, (key if "/" in bucket_and_key else None)
    denied = authorizer.decide(access_key._owner_role_name, request)
    if denied is None:
        if assume:  # the caller's side allows it: now the role's side, its trust policy
            role = _backend("iam", access_key.account_id, "aws").get_role(access_key._owner_role_name).arn
            _check_trust(authorizer, response, Assumer.of_arns(request.account, role, access_key.arn))
        return
    if is_s3:
        iam_request._raise_access_denied()
    raise _refusal(request.prefix, bool(headers.get("X-Amz-Target")), access_key.arn, denied[0])


def _check_trust(authorizer: Authorizer, response: Any, assumer: Assumer) -> None:
    """An ``sts:AssumeRole`` the caller's policies allow is decided by the named role's trust policy, with
    the request's condition keys; refused as STS refuses it (``AccessDenied``, the same words as a caller
    whose own policies do not allow it)."""
    from moto.core.exceptions import AccessDeniedError

    params = _params(response, "AssumeRole")
    role_arn = str(params.get("RoleArn", ""))
    decision = authorizer.trust(role_arn, assumer, assume_role_context(assumer, params))
    if decision.allowed:
        return
    authorizer.deny(str(assumer), Call.of(ASSUME_ROLE, role_arn), decision.reason)
    raise AccessDeniedError(user_arn=str(assumer), action=f"{ASSUME_ROLE} on resource: {role_arn}")


def _refusal(prefix: str, json_protocol: bool, user_arn: str, call: Call) -> Exception:
    """The denial as the service says it: EC2's ``UnauthorizedOperation``, a JSON protocol service's (SSM,
    Secrets Manager, KMS...) ``AccessDeniedException`` in JSON, else the query protocols' ``AccessDenied``."""
    from moto.core.exceptions import AccessDeniedError, JsonRESTError

    because = f"because no identity-based policy allows the {call.action} action"
    if prefix == "ec2":
        return _ec2_refusal(
            f"You are not authorized to perform this operation. User: {user_arn} is not authorized to "
            f"perform: {call.action} on resource: {call.resource} {because}",
        )
    if json_protocol:
        return JsonRESTError(
            "AccessDeniedException",
            f"User: {user_arn} is not authorized to perform: {call.action} on resource: {call.resource} {because}",
        )
    return AccessDeniedError(user_arn=user_arn, action=f"{call.action} on resource: {call.resource}")


def _ec2_refusal(message: str) -> Exception:
    """EC2's ``UnauthorizedOperation`` as an HTTP error, which moto's request handling answers as EC2 does (a
    ServiceException raised while authorizing would reach the caller as a Python exception, not a ClientError)."""
    from moto.core.exceptions import _RESTError

    error = _RESTError("UnauthorizedOperation", message)
    error.code = 403
    return error


def _check_signature(iam_request: Any, body: bytes | None) -> None:
    """SigV4 over what was sent: the body, or for a form POST (whose body the server consumed into its
    form) the form re-encoded, as moto does; moto's own check also signs parsed data for a request with
    an empty body, so every GET of a REST service would fail it."""
    credentials = iam_request._access_key.create_credentials()
    auth = iam_request._create_auth(credentials)
    request = iam_request._create_aws_request()
    content_type = str(iam_request._headers.get("Content-Type", ""))
    if body or not content_type.startswith("application/x-www-form-urlencoded"):
        request.data = body or b""
    expected = auth.signature(auth.string_to_sign(request, auth.canonical_request(request)), request)
    sent = iam_request._get_string_between("Signature=", ",", iam_request._headers["Authorization"])
    if sent != expected:
        iam_request._raise_signature_does_not_match()


def _query(response: Any) -> dict[str, Any]:
    from urllib.parse import parse_qs

    return {k: v for k, v in parse_qs(response.uri.partition("?")[2], keep_blank_values=True).items()}


def _params(response: Any, operation: str) -> dict[str, Any]:
    """The request's parameters by the service's model (JSON bodies directly)."""
    if isinstance(response.body, dict):  # DynamoDB's responses parse the body before authorizing
        return dict(response.body)
    if response.headers.get("X-Amz-Target"):
        try:
            parsed = json.loads(response.body or "{}")
            return parsed if isinstance(parsed, dict) else {}
        except ValueError:
            return {}
    try:
        from moto.core.parse import PROTOCOL_PARSERS
        from moto.core.request import determine_request_protocol
        from moto.core.utils import get_service_model

        request = response.normalized_request
        model = get_service_model(response.boto3_service_name)
        protocol = determine_request_protocol(model, request.content_type)
        parser = PROTOCOL_PARSERS[protocol](model.operation_model(operation), map_type=dict)
        parsed = parser.parse(
            {
                "method": request.method,
                "values": request.values,
                "headers": request.headers,
                "body": request.data,
                "url_path": request.path,
                "url_params": getattr(response, "uri_match", None) or {},
            }
        )
        return dict(parsed)
    except Exception as exc:  # a request the model cannot parse is authorized on what we know
        log.debug("cannot parse %s parameters: %s", operation, exc)
        return {}
