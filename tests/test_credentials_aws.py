"""AWS Secrets Manager source against moto in server mode (IAM enforced), reached by endpoint_url."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sentient_operator.api.v1alpha1 import AWSSecretsManagerSource
from sentient_operator.credentials.aws import AWSSecretsManagerCredentialSource
from sentient_operator.credentials.base import (
    KeyNotFound,
    Malformed,
    PermissionDenied,
    SecretNotFound,
    StoreUnreachable,
    Throttled,
)
from tests.support.credentials import Secrets
from tests.support.fault_proxy import FaultProxy
from tests.support.moto_server import REGION, MotoServer

NS = "team"


@pytest.fixture(scope="module")
def aws() -> Iterator[MotoServer]:
    with MotoServer(enforce_iam=True) as server:
        sm = server.client("secretsmanager")
        sm.create_secret(Name="llm/json", SecretString='{"apiKey": "sk-json", "other": "x", "n": 1}')
        sm.create_secret(Name="llm/plain", SecretString="sk-plain\n")
        sm.create_secret(Name="llm/broken", SecretString="{not json")
        sm.create_secret(Name="llm/list", SecretString='["a"]')
        yield server


@pytest.fixture(scope="module")
def reader_keys(aws: MotoServer) -> tuple[str, str]:
    return aws.user_with_policy(
        "llm-reader", [{"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "*"}]
    )


@pytest.fixture
def store(reader_keys: tuple[str, str]) -> Secrets:
    s = Secrets()
    s.put(NS, "aws-keys", accessKeyId=reader_keys[0], secretAccessKey=reader_keys[1])
    return s


def source(endpoint: str, store: Secrets, **fields: object) -> AWSSecretsManagerCredentialSource:
    spec: dict[str, object] = {
        "region": REGION,
        "secretId": "llm/json",
        "endpoint": endpoint,
        "auth": {"secretRef": {"name": "aws-keys"}},
    }
    spec.update(fields)
    return AWSSecretsManagerCredentialSource(AWSSecretsManagerSource.model_validate(spec), NS, store.reader)


def test_json_key_and_plain_string(aws: MotoServer, store: Secrets) -> None:
    got = source(aws.url, store, key="apiKey").fetch()
    assert got.value == "sk-json"
    assert got.version
    assert source(aws.url, store, secretId="llm/plain").fetch().value == "sk-plain"


def test_version_stage_and_rotation(aws: MotoServer, store: Secrets) -> None:
    sm = aws.client("secretsmanager")
    sm.create_secret(Name="llm/rotating", SecretString="sk-old")
    current = source(aws.url, store, secretId="llm/rotating")
    assert current.fetch().value == "sk-old"
    sm.put_secret_value(SecretId="llm/rotating", SecretString="sk-new")
    assert current.fetch().value == "sk-new"
    previous = source(aws.url, store, secretId="llm/rotating", versionStage="AWSPREVIOUS")
    assert previous.fetch().value == "sk-old"
    with pytest.raises(SecretNotFound):
        source(aws.url, store, secretId="llm/rotating", versionStage="NOSUCHSTAGE").fetch()


def test_ambient_credential_chain(
    aws: MotoServer, reader_keys: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", reader_keys[0])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", reader_keys[1])
    spec = AWSSecretsManagerSource.model_validate(
        {"region": REGION, "secretId": "llm/json", "key": "apiKey", "endpoint": aws.url}
    )
    assert AWSSecretsManagerCredentialSource(spec, NS, Secrets().reader).fetch().value == "sk-json"


def test_rotated_static_keys_are_picked_up(
    aws: MotoServer, store: Secrets, reader_keys: tuple[str, str]
) -> None:
    src = source(aws.url, store, key="apiKey")
    assert src.fetch().value == "sk-json"
    store.put(NS, "aws-keys", accessKeyId="AKIAWRONG0000000", secretAccessKey="wrong")
    with pytest.raises(PermissionDenied):
        src.fetch()
    store.put(NS, "aws-keys", accessKeyId=reader_keys[0], secretAccessKey=reader_keys[1])
    assert src.fetch().value == "sk-json"


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"secretId": "llm/missing"}, SecretNotFound),
        ({"key": "nope"}, KeyNotFound),
        ({"key": "n"}, Malformed),
        ({"secretId": "llm/broken", "key": "apiKey"}, Malformed),
        ({"secretId": "llm/list", "key": "apiKey"}, Malformed),
    ],
)
def test_content_faults(aws: MotoServer, store: Secrets, fields: dict[str, object], error: type) -> None:
    with pytest.raises(error) as err:
        source(aws.url, store, **fields).fetch()
    assert "sk-json" not in str(err.value) and "{not json" not in str(err.value)


def test_permission_denied_by_iam(aws: MotoServer, store: Secrets) -> None:
    keys = aws.user_with_policy("nobody", [{"Effect": "Allow", "Action": "iam:GetUser", "Resource": "*"}])
    store.put(NS, "weak-keys", accessKeyId=keys[0], secretAccessKey=keys[1])
    with pytest.raises(PermissionDenied) as err:
        source(aws.url, store, auth={"secretRef": {"name": "weak-keys"}}).fetch()
    assert keys[0] not in str(err.value)


def test_missing_keys_secret(aws: MotoServer) -> None:
    with pytest.raises(SecretNotFound):
        source(aws.url, Secrets()).fetch()


def test_throttling_unreachable_and_recovery(aws: MotoServer, store: Secrets) -> None:
    with FaultProxy(aws.url) as proxy:
        src = source(proxy.url, store, key="apiKey")
        assert src.fetch().value == "sk-json"
        proxy.mode = "respond"  # AWS's ThrottlingException answer
        with pytest.raises(Throttled):
            src.fetch()
        proxy.mode = "reset"
        with pytest.raises(StoreUnreachable):
            src.fetch()
        proxy.mode = "pass"
        assert src.fetch().value == "sk-json"
