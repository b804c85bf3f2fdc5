"""Provider credentials from AWS Secrets Manager (moto in server mode, IAM enforced) on the
local control plane: static keys from a watched Secret, a JSON key, throttling that keeps the
last good provider Secret, and rotated access keys picked up through the Secret watch."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from typing import Any

import pytest

from e2e.operator_proc import OperatorProcess
from tests.support.fault_proxy import FaultProxy
from tests.support.kube_helpers import condition_is, create_provider, put_secret, secret_value
from tests.support.moto_server import REGION, MotoServer
from tests.support.waiting import wait_for

READ = [{"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "*"}]


@pytest.fixture
def aws() -> Iterator[MotoServer]:
    with MotoServer(enforce_iam=True) as server:
        yield server


def test_aws_json_key_throttling_and_key_rotation(
    cluster: Any, crds: list[str], k8s: Any, namespace: str, aws: MotoServer
) -> None:
    value = f"sk-aws-{secrets.token_hex(6)}"
    sm = aws.client("secretsmanager")
    sm.create_secret(Name="llm/openai", SecretString=json.dumps({"apiKey": value}))
    first_keys = aws.user_with_policy("reader-1", READ)
    put_secret(k8s, namespace, "aws-keys", {"accessKeyId": first_keys[0], "secretAccessKey": first_keys[1]})
    with (
        FaultProxy(aws.url) as proxy,
        OperatorProcess(cluster.kubeconfig, [namespace], leader_election=False, log_format="text") as op,
    ):
        create_provider(
            k8s,
            namespace,
            "aws",
            {
                "type": "openai",
                "credentials": {
                    "awsSecretsManager": {
                        "region": REGION,
                        "secretId": "llm/openai",
                        "key": "apiKey",
                        "endpoint": proxy.url,
                        "auth": {"secretRef": {"name": "aws-keys"}},
                    },
                    "refreshInterval": "2s",
                },
            },
        )
        wait_for(lambda: secret_value(k8s, namespace, "sentient-provider-aws") == value, "provider Secret")

        # AWS throttles: reason Throttled, the provider Secret stays, recovery afterwards.
        proxy.mode = "respond"
        wait_for(
            lambda: condition_is(k8s, namespace, "aws", "CredentialsSynced", "False", "Throttled"),
            "Throttled",
        )
        assert secret_value(k8s, namespace, "sentient-provider-aws") == value
        proxy.mode = "pass"
        wait_for(
            lambda: condition_is(k8s, namespace, "aws", "CredentialsSynced", "True", "Synced"), "recovered"
        )

        # The access keys are revoked: PermissionDenied, last good value kept.
        aws.client("iam").delete_access_key(UserName="reader-1", AccessKeyId=first_keys[0])
        wait_for(
            lambda: condition_is(k8s, namespace, "aws", "CredentialsSynced", "False", "PermissionDenied"),
            "PermissionDenied",
        )
        assert secret_value(k8s, namespace, "sentient-provider-aws") == value

        # New keys in the watched Secret and a new value in the store: synced without waiting for backoff.
        second_keys = aws.user_with_policy("reader-2", READ)
        rotated = f"sk-aws-{secrets.token_hex(6)}"
        sm.put_secret_value(SecretId="llm/openai", SecretString=json.dumps({"apiKey": rotated}))
        put_secret(
            k8s, namespace, "aws-keys", {"accessKeyId": second_keys[0], "secretAccessKey": second_keys[1]}
        )
        wait_for(lambda: secret_value(k8s, namespace, "sentient-provider-aws") == rotated, "rotated value")
        wait_for(lambda: condition_is(k8s, namespace, "aws", "CredentialsSynced", "True", "Synced"), "synced")
        log = op.log_text()
        assert (
            value not in log and rotated not in log and first_keys[1] not in log and second_keys[1] not in log
        )
