"""DynamoDB tables as the code defines them, and the call cache: encryption, AUTH, TLS, isolation."""

import json
from typing import Any

import pytest
from aws_cdk.assertions import Match

from infra.state import CACHE_USER
from streaming.__main__ import RedisAuth
from switchboard import booking, outbound, records, tool_actions
from tests.infra.conftest import Synthesized, dumps


def _table(deployment: Synthesized, construct: Any) -> dict[str, Any]:
    props: dict[str, Any] = deployment.resources("AWS::DynamoDB::Table")[deployment.logical_id(construct)]["Properties"]
    return props


def _tables(deployment: Synthesized) -> dict[str, tuple[Any, Any, str | None]]:
    tables = deployment.stack.tables
    return {
        "calls": (tables.calls, records.table_definition("x"), records.TTL_ATTRIBUTE),
        "appointments": (
            tables.appointments,
            booking.appointments_table_definition("x"),
            booking.APPOINTMENTS_TTL_ATTRIBUTE,
        ),
        "idempotency": (
            tables.idempotency,
            tool_actions.idempotency_table_definition("x"),
            tool_actions.IDEMPOTENCY_TTL_ATTRIBUTE,
        ),
        "do_not_call": (tables.do_not_call, outbound.do_not_call_table_definition("x"), None),
    }


@pytest.mark.parametrize("name", ["calls", "appointments", "idempotency", "do_not_call"])
def test_each_table_is_keyed_as_the_code_creates_it(default_deployment: Synthesized, name: str) -> None:
    construct, definition, ttl = _tables(default_deployment)[name]
    props = _table(default_deployment, construct)
    assert props["KeySchema"] == definition["KeySchema"]
    assert sorted(props["AttributeDefinitions"], key=dumps) == sorted(definition["AttributeDefinitions"], key=dumps)
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}
    assert props["SSESpecification"] == {"SSEEnabled": True}
    if ttl is None:
        assert "TimeToLiveSpecification" not in props
    else:
        assert props["TimeToLiveSpecification"] == {"AttributeName": ttl, "Enabled": True}


def test_calls_table_has_the_code_s_indexes(default_deployment: Synthesized) -> None:
    props = _table(default_deployment, default_deployment.stack.tables.calls)
    indexes = {index["IndexName"]: index for index in props["GlobalSecondaryIndexes"]}
    assert set(indexes) == {records.BY_AGENT_INDEX, records.BY_PHONE_INDEX}
    expected = {index["IndexName"]: index for index in records.table_definition("x")["GlobalSecondaryIndexes"]}
    for name, index in indexes.items():
        assert index["KeySchema"] == expected[name]["KeySchema"]
        assert index["Projection"] == {"ProjectionType": "ALL"}


def test_business_data_outlives_the_stack(default_deployment: Synthesized) -> None:
    tables = default_deployment.resources("AWS::DynamoDB::Table")
    stack_tables = default_deployment.stack.tables
    for construct in (stack_tables.calls, stack_tables.appointments, stack_tables.do_not_call):
        assert tables[default_deployment.logical_id(construct)]["DeletionPolicy"] == "Retain"


def test_serverless_cache_requires_a_password_user_in_isolated_subnets(default_deployment: Synthesized) -> None:
    template = default_deployment.template
    caches = default_deployment.resources("AWS::ElastiCache::ServerlessCache")
    assert len(caches) == 1
    props = next(iter(caches.values()))["Properties"]
    assert props["Engine"] == "valkey"
    assert "UserGroupId" in props
    cache_subnets = {
        logical_id
        for logical_id, subnet in default_deployment.resources("AWS::EC2::Subnet").items()
        if {"Key": "aws-cdk:subnet-name", "Value": "cache"} in subnet["Properties"]["Tags"]
    }
    assert {ref["Ref"] for ref in props["SubnetIds"]} == cache_subnets
    template.has_resource_properties(
        "AWS::ElastiCache::User",
        {"UserName": "default", "AccessString": "off -@all", "NoPasswordRequired": True},
    )
    users = [u["Properties"] for u in default_deployment.resources("AWS::ElastiCache::User").values()]
    service_user = next(u for u in users if u["UserName"] != "default")
    assert service_user["UserName"] == CACHE_USER
    # The password is a dynamic reference to the generated secret's "password" key, never a literal.
    credentials = {"Ref": default_deployment.logical_id(default_deployment.stack.cache.credentials)}
    assert service_user["Passwords"] == [
        {"Fn::Join": ["", ["{{resolve:secretsmanager:", credentials, ":SecretString:password::}}"]]}
    ]
    template.resource_count_is("AWS::ElastiCache::ReplicationGroup", 0)


def test_cache_accepts_only_the_media_service(default_deployment: Synthesized) -> None:
    cache_sg = default_deployment.logical_id(default_deployment.stack.cache.security_group)
    ingress = [
        rule["Properties"]
        for rule in default_deployment.resources("AWS::EC2::SecurityGroupIngress").values()
        if rule["Properties"]["GroupId"] == {"Fn::GetAtt": [cache_sg, "GroupId"]}
    ]
    assert len(ingress) == 1
    service_sg = default_deployment.stack.media.service.connections.security_groups[0]
    assert ingress[0]["SourceSecurityGroupId"] == {"Fn::GetAtt": [default_deployment.logical_id(service_sg), "GroupId"]}
    assert ingress[0]["FromPort"] == ingress[0]["ToPort"] == 6379


def test_replication_group_encrypts_and_authenticates(cluster_deployment: Synthesized) -> None:
    cluster_deployment.template.has_resource_properties(
        "AWS::ElastiCache::ReplicationGroup",
        {
            "TransitEncryptionEnabled": True,
            "AtRestEncryptionEnabled": True,
            "MultiAZEnabled": True,
            "AutomaticFailoverEnabled": True,
            "NumCacheClusters": 2,
            "Port": 6380,
            "UserGroupIds": Match.any_value(),
            "CacheNodeType": "cache.t4g.small",
        },
    )
    cluster_deployment.template.resource_count_is("AWS::ElastiCache::ServerlessCache", 0)


def test_cache_credentials_are_generated_in_the_shape_the_service_reads(default_deployment: Synthesized) -> None:
    secret = default_deployment.resources("AWS::SecretsManager::Secret")[
        default_deployment.logical_id(default_deployment.stack.cache.credentials)
    ]["Properties"]
    assert "SecretString" not in secret
    generated = secret["GenerateSecretString"]
    assert generated["GenerateStringKey"] == "password"
    assert generated["ExcludePunctuation"] is True
    assert generated["PasswordLength"] == 64
    template = json.loads(generated["SecretStringTemplate"])
    # What the media service validates at start (REDIS_AUTH_SECRET_ARN), as the user ElastiCache knows.
    auth = RedisAuth.model_validate({**template, "password": "x" * generated["PasswordLength"]})
    assert auth.username == CACHE_USER


@pytest.mark.parametrize("deployment_name", ["default_deployment", "cluster_deployment"])
def test_no_secret_holds_a_cache_url(request: pytest.FixtureRequest, deployment_name: str) -> None:
    # The URL has no credentials in it, so it is configuration; the only cache secret is the user's.
    deployment: Synthesized = request.getfixturevalue(deployment_name)
    stack = deployment.stack
    expected = (stack.secrets.twilio, stack.secrets.stream_token, stack.secrets.openai, stack.cache.credentials)
    assert set(deployment.resources("AWS::SecretsManager::Secret")) == {deployment.logical_id(s) for s in expected}
    assert "rediss://" not in dumps(deployment.resources("AWS::SecretsManager::Secret"))
