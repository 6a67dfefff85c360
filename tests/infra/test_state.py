"""DynamoDB tables as the code defines them, and the call cache: encryption, AUTH, TLS, isolation."""

from typing import Any

import pytest
from aws_cdk.assertions import Match

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
    # The password is a dynamic reference to the generated secret, never a literal.
    assert "{{resolve:secretsmanager:" in dumps(service_user["Passwords"])
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


def test_cache_url_secret_is_composed_from_references_only(default_deployment: Synthesized) -> None:
    url = default_deployment.resources("AWS::SecretsManager::Secret")[
        default_deployment.logical_id(default_deployment.stack.cache.url)
    ]["Properties"]["SecretString"]
    parts = url["Fn::Join"][1]
    password = {"Ref": default_deployment.logical_id(default_deployment.stack.cache.password)}
    assert parts == [
        "rediss://switchboard:{{resolve:secretsmanager:",
        password,
        ":SecretString:::}}@",
        {"Fn::GetAtt": [parts[3]["Fn::GetAtt"][0], "Endpoint.Address"]},
        ":6379",
    ]
    serverless = default_deployment.stack.cache.resource
    assert parts[3]["Fn::GetAtt"][0] == default_deployment.stack.get_logical_id(serverless)
