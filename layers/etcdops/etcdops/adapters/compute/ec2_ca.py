"""A CA rotation's secrets in Secrets Manager (the EC2 provider), phase by phase.

- ``etcdops/<cluster>/ca``: the CA that issues certificates (the old one until phase 2 begins, then the
  new); its JSON also holds ``"rotation": {"begun": n, "finished": m}`` while a rotation is under way (the
  record a new start resumes from: one secret, written in one request together with the promotion).
- ``etcdops/<cluster>/ca-next``: the new CA, created when phase 1 begins (kept until phase 3 ends).
- ``etcdops/<cluster>/ca-old``: the old CA, saved when phase 2 promotes the new one (until phase 3 ends).
- each member's secret ``ca`` field: what the member trusts (``ca.crt`` on the host): the bundle of
  both CAs in phases 1 and 2, the new CA alone from phase 3 on. Hosts fetch it (RenewCertificates)
  before their restart in phases 1 and 3.
- the functions' client TLS secrets ``etcdops/<cluster>/client/{ca,cert,key}`` (those that exist): ``ca``
  the same trust; ``cert``/``key`` reissued from the new CA in phase 2.
- the clients ``pki issue-client`` made, ``etcdops/<cluster>/clients/<name>``: ``ca`` the same trust; in
  phase 2 a certificate and key of the new CA with the same name.

Each function converges when called again after a crash at any point (invariant 7).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError

from etcdops.adapters import pki
from etcdops.adapters.awserrors import aws_error_code
from etcdops.adapters.pki_store import SecretsPki, follow_ca_rotation, parse_rotation
from etcdops.domain.compute.errors import ComputeApiError, ComputeConfigError
from etcdops.domain.errors import PkiError

if TYPE_CHECKING:
    from etcdops.adapters.compute.ec2 import Ec2ComputeProvider


def _api_error(what: str, exc: Exception) -> ComputeApiError:
    from etcdops.adapters.compute.ec2 import _api_error as make

    return make(what, exc)


# A rotation's own secrets (ca-next, ca-old) of a registered cluster are granted by their etcdops:fleet tag,
# so AWS refuses to read one that does not exist yet: for them a denial counts as missing, and the write
# that follows creates the secret tagged (or fails, naming the secret, when it exists and is not ours).
_ROTATION_SECRETS = ("/ca-next", "/ca-old")


def _read_text(provider: Ec2ComputeProvider, secret_id: str) -> str | None:
    """The secret's text; None when it does not exist (or is scheduled for deletion)."""
    try:
        return str(provider.secrets.get_secret_value(SecretId=secret_id)["SecretString"])
    except ClientError as exc:
        if aws_error_code(exc) in ("ResourceNotFoundException", "InvalidRequestException"):
            return None
        if secret_id.endswith(_ROTATION_SECRETS) and _denied(exc):
            return None
        raise _api_error(f"reading {secret_id}", exc) from exc
    except BotoCoreError as exc:
        raise _api_error(f"reading {secret_id}", exc) from exc


def _read(provider: Ec2ComputeProvider, secret_id: str) -> dict[str, Any] | None:
    """The secret's JSON object; None when it does not exist (or is scheduled for deletion)."""
    text = _read_text(provider, secret_id)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _put(provider: Ec2ComputeProvider, secret_id: str, data: dict[str, Any] | str, description: str) -> None:
    """Write ``data`` (JSON, or a text as it is) to the secret, creating it (or restoring one scheduled for
    deletion) when needed."""
    value = data if isinstance(data, str) else json.dumps(data)
    try:
        try:
            provider.secrets.put_secret_value(SecretId=secret_id, SecretString=value)
            return
        except ClientError as exc:
            code = aws_error_code(exc)
            if code == "InvalidRequestException":  # scheduled for deletion by an earlier rotation's end
                provider.secrets.restore_secret(SecretId=secret_id)
            elif code == "ResourceNotFoundException" or (secret_id.endswith(_ROTATION_SECRETS) and _denied(exc)):
                provider.secrets.create_secret(
                    Name=secret_id,
                    SecretString=value,
                    Description=description,
                    Tags=[{"Key": k, "Value": v} for k, v in provider.owner_tags.items()],
                )
                return
            else:
                raise
        provider.secrets.put_secret_value(SecretId=secret_id, SecretString=value)
    except (ClientError, BotoCoreError) as exc:
        raise _api_error(f"writing {secret_id}", exc) from exc


def _denied(exc: ClientError) -> bool:
    from etcdops.adapters.compute.ec2 import _DENIED_CODES

    return aws_error_code(exc) in _DENIED_CODES


def _id(provider: Ec2ComputeProvider, which: str) -> str:
    return f"etcdops/{provider.secrets_cluster}/{which}"


def _pair_json(pair: pki.KeyPair) -> dict[str, Any]:
    return {"certificate": pair.cert_pem.decode(), "private_key": pair.key_pem.decode()}


def _ca_data(provider: Ec2ComputeProvider) -> dict[str, Any]:
    provider.read_ca()  # checked: a clear error when missing or unusable
    data = _read(provider, provider.ca_secret_id)
    if data is None:  # one PEM text with both blocks: rewritten as JSON on the first record
        return _pair_json(provider.read_ca())
    return data


def recorded(provider: Ec2ComputeProvider) -> dict[str, int]:
    """``{"begun": n, "finished": m}`` from the CA secret; both 0 when no rotation is under way."""
    rotation = _ca_data(provider).get("rotation")
    record = parse_rotation(rotation)
    if record is None:
        raise ComputeConfigError(
            f"{provider.ca_secret_id}: unreadable CA rotation record {rotation!r}; fix or remove its rotation field"
        )
    return record


def _record(provider: Ec2ComputeProvider, begun: int, finished: int, pair: pki.KeyPair | None = None) -> None:
    data = _ca_data(provider) if pair is None else _pair_json(pair)
    data["rotation"] = {"begun": begun, "finished": finished}
    _put(provider, provider.ca_secret_id, data, f"etcd cluster CA of {provider.cluster} (etcdops)")
    provider._ca_pair = None  # issue from what the secret holds now


def _next_ca(provider: Ec2ComputeProvider) -> pki.KeyPair:
    data = _read(provider, _id(provider, "ca-next"))
    if data is not None:
        try:
            pair = pki.KeyPair(data["certificate"].encode(), data["private_key"].encode())
            pki.check_ca(pair)
            return pair
        except (KeyError, AttributeError, PkiError):
            pass  # unreadable: a new one (nothing trusts it before this phase's record)
    pair = pki.create_ca(f"{provider.cluster} etcd CA (rotated)")
    _put(provider, _id(provider, "ca-next"), _pair_json(pair), f"next etcd cluster CA of {provider.cluster}")
    return pair


def trusted(provider: Ec2ComputeProvider) -> str:
    """What members trust now (their secret's ``ca`` field): both CAs in phases 1 and 2, else the CA alone."""
    begun = recorded(provider)["begun"]
    ca = provider.read_ca().cert_pem.decode()
    if begun == 1:
        return ca + _next_ca(provider).cert_pem.decode()
    if begun == 2:
        old = _read(provider, _id(provider, "ca-old")) or {}
        return str(old.get("certificate", "")) + ca
    return ca


def _write_trust(provider: Ec2ComputeProvider, pem: str) -> None:
    """Every member's secret ``ca`` field set to ``pem`` (certificate and key unchanged)."""
    for host in provider.hosts():
        secret_id = provider.member_secret_id(host.name)
        data = _read(provider, secret_id)
        if data is None:
            raise ComputeConfigError(f"{secret_id}: member {host.name} has no readable secret; nothing trusts a new CA")
        if data.get("ca") != pem:
            _put(provider, secret_id, {**data, "ca": pem}, "")


def _client_tls(provider: Ec2ComputeProvider, phase: int, trust: str) -> None:
    """The functions' client TLS secrets where README "Deploying to AWS" puts them
    (``etcdops/<cluster>/client/ca``, ``cert``, ``key``, each a PEM text), those that exist: ``ca`` the
    members' trust; in phase 2 a new client certificate of the new CA (the key first: a function reading
    between the two writes gets a pair that does not fit and is retried; a new run converges)."""
    ca_id, cert_id, key_id = (_id(provider, f"client/{part}") for part in ("ca", "cert", "key"))
    if _read_text(provider, ca_id) not in (None, trust):
        _put(provider, ca_id, trust, "")
    cert, key = _read_text(provider, cert_id), _read_text(provider, key_id)
    if phase != 2 or cert is None or key is None:
        return
    ca = provider.read_ca()
    try:
        pki.verify_chain(ca, pki.KeyPair(cert.encode(), key.encode()))
        return  # already of the new CA, with its key
    except (PkiError, ValueError):
        pass
    pair = pki.issue_certificate(ca, "etcdops", kind="client")
    _put(provider, key_id, pair.key_pem.decode(), "")
    _put(provider, cert_id, pair.cert_pem.decode(), "")


def begin(provider: Ec2ComputeProvider, phase: int) -> None:
    """Phase 1: ``ca-next`` and the bundle in every member's secret; 2: the new CA promoted to ``ca`` (the old
    one kept as ``ca-old``); 3: the new CA alone in every member's secret. Recorded as begun."""
    if phase not in (1, 2, 3):
        raise ComputeConfigError(f"phase: {phase} is not a CA rotation phase (1, 2 or 3)")
    recorded(provider)  # an unreadable record is refused, not overwritten
    if phase == 1:
        _next_ca(provider)
        _record(provider, 1, 0)
    elif phase == 2:
        current, new = provider.read_ca(), _next_ca(provider)
        if current.cert_pem != new.cert_pem:
            _put(provider, _id(provider, "ca-old"), _pair_json(current), f"old etcd cluster CA of {provider.cluster}")
        _record(provider, 2, 1, new)  # the promotion and its record in one request
    else:
        _record(provider, 3, 2)
    trust = trusted(provider)
    _write_trust(provider, trust)
    _client_tls(provider, phase, trust)
    clients = SecretsPki(provider.secrets, provider.secrets_cluster)  # those `pki issue-client` made
    follow_ca_rotation(clients, provider.read_ca(), trust.encode(), reissue=phase == 2)


def finish(provider: Ec2ComputeProvider, phase: int) -> None:
    """``phase`` done on every member; after phase 3 ``ca-next``/``ca-old`` are deleted and the record removed."""
    if phase != 3:
        _record(provider, phase, phase)
        return
    for which in ("ca-next", "ca-old"):
        secret_id = _id(provider, which)
        try:
            provider.secrets.delete_secret(SecretId=secret_id, ForceDeleteWithoutRecovery=True)
        except ClientError as exc:
            if aws_error_code(exc) not in ("ResourceNotFoundException", "InvalidRequestException"):
                raise _api_error(f"deleting {secret_id}", exc) from exc
        except BotoCoreError as exc:
            raise _api_error(f"deleting {secret_id}", exc) from exc
    data = _ca_data(provider)
    if "rotation" in data:
        data.pop("rotation")
        _put(provider, provider.ca_secret_id, data, "")
