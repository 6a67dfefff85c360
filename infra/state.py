"""Where calls live: DynamoDB for the durable record, ElastiCache (Redis protocol) for the live call context.

The tables are built from the `create_table` definitions the code itself uses (switchboard.records,
booking, tool_actions, outbound), so a key or index renamed in the code is renamed here too.
"""

import json
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_elasticache as elasticache
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra.config import DeploymentConfig, RedisMode
from infra.network import Network
from switchboard import booking, outbound, records, tool_actions

if TYPE_CHECKING:
    from mypy_boto3_dynamodb.type_defs import CreateTableInputTypeDef

_ATTRIBUTE_TYPES = {
    "S": dynamodb.AttributeType.STRING,
    "N": dynamodb.AttributeType.NUMBER,
    "B": dynamodb.AttributeType.BINARY,
}
# ElastiCache serverless listens on 6379 only; a node-based group takes a non-default port, which keeps
# the scanners that knock on 6379 away from it.
SERVERLESS_PORT = 6379
CLUSTER_PORT = 6380
CACHE_USER = "switchboard"


def _key(
    definition: "CreateTableInputTypeDef", key_schema: Sequence[Mapping[str, Any]], kind: str
) -> dynamodb.Attribute | None:
    types = {attr["AttributeName"]: attr["AttributeType"] for attr in definition["AttributeDefinitions"]}
    for key in key_schema:
        if key["KeyType"] == kind:
            return dynamodb.Attribute(name=key["AttributeName"], type=_ATTRIBUTE_TYPES[types[key["AttributeName"]]])
    return None


def table_from_definition(
    scope: Construct,
    construct_id: str,
    definition: "CreateTableInputTypeDef",
    *,
    ttl_attribute: str | None,
    removal_policy: RemovalPolicy,
) -> dynamodb.Table:
    """A pay-per-request table with PITR and KMS encryption, keyed and indexed as `definition` says."""
    key_schema = definition["KeySchema"]
    partition_key = _key(definition, key_schema, "HASH")
    if partition_key is None:
        raise ValueError(f"{construct_id}: the definition has no partition key")
    table = dynamodb.Table(
        scope,
        construct_id,
        partition_key=partition_key,
        sort_key=_key(definition, key_schema, "RANGE"),
        billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
        encryption=dynamodb.TableEncryption.AWS_MANAGED,
        point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
            point_in_time_recovery_enabled=True
        ),
        time_to_live_attribute=ttl_attribute,
        removal_policy=removal_policy,
    )
    for index in definition.get("GlobalSecondaryIndexes", []):
        index_keys = index["KeySchema"]
        index_pk = _key(definition, index_keys, "HASH")
        if index_pk is None:
            raise ValueError(f"{construct_id}: index {index['IndexName']} has no partition key")
        table.add_global_secondary_index(
            index_name=index["IndexName"],
            partition_key=index_pk,
            sort_key=_key(definition, index_keys, "RANGE"),
            projection_type=dynamodb.ProjectionType(index["Projection"].get("ProjectionType", "ALL")),
        )
    return table


class Tables(Construct):
    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)
        # Call records and appointments are the business's data: kept when the stack goes.
        self.calls = table_from_definition(
            self,
            "Calls",
            records.table_definition("calls"),
            ttl_attribute=records.TTL_ATTRIBUTE,
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.appointments = table_from_definition(
            self,
            "Appointments",
            booking.appointments_table_definition("appointments"),
            ttl_attribute=booking.APPOINTMENTS_TTL_ATTRIBUTE,
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.do_not_call = table_from_definition(
            self,
            "DoNotCall",
            outbound.do_not_call_table_definition("do-not-call"),
            ttl_attribute=None,
            removal_policy=RemovalPolicy.RETAIN,
        )
        # Replays of tool results for a few hours: nothing worth keeping after the stack.
        self.idempotency = table_from_definition(
            self,
            "Idempotency",
            tool_actions.idempotency_table_definition("idempotency"),
            ttl_attribute=tool_actions.IDEMPOTENCY_TTL_ATTRIBUTE,
            removal_policy=RemovalPolicy.DESTROY,
        )


def _elasticache_id(stack: Stack, suffix: str) -> str:
    # User and group ids are unique per account and region, lowercase, starting with a letter, at most 40.
    base = re.sub(r"[^a-z0-9-]", "-", stack.stack_name.lower()).strip("-") or "switchboard"
    if not base[0].isalpha():
        base = f"s-{base}"
    return f"{base[: 39 - len(suffix)]}-{suffix}"


class CallCache(Construct):
    """The live call context: TLS in transit, a password user (AUTH), encrypted at rest, in isolated subnets.

    The service connects as CACHE_USER with a password Secrets Manager generated. The user's credentials
    are one secret, JSON {"username", "password"}, which the service reads at start with its task role
    (REDIS_AUTH_SECRET_ARN); the ElastiCache user takes its password from the same JSON key through a
    dynamic reference, so the template never holds it. The URL (`rediss://host:port`) carries no
    credentials and is plain configuration.
    """

    def __init__(self, scope: Construct, construct_id: str, *, config: DeploymentConfig, network: Network) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        engine = config.redis_engine.value
        self.security_group = ec2.SecurityGroup(
            self, "SecurityGroup", vpc=network.vpc, description="Call cache", allow_all_outbound=False
        )
        self.credentials = secretsmanager.Secret(
            self,
            "Credentials",
            description='The cache user the media service connects as, JSON {"username", "password"} (generated).',
            generate_secret_string=secretsmanager.SecretStringGenerator(
                secret_string_template=json.dumps({"username": CACHE_USER}),
                generate_string_key="password",
                exclude_punctuation=True,
                password_length=64,
            ),
        )
        # Every ElastiCache user group must hold a user named "default": here it can do nothing at all.
        default_user = elasticache.CfnUser(
            self,
            "DefaultUser",
            engine=engine,
            user_id=_elasticache_id(stack, "default"),
            user_name="default",
            access_string="off -@all",
            no_password_required=True,
        )
        service_user = elasticache.CfnUser(
            self,
            "ServiceUser",
            engine=engine,
            user_id=_elasticache_id(stack, "service"),
            user_name=CACHE_USER,
            access_string="on ~* &* +@all",
            passwords=[self.credentials.secret_value_from_json("password").unsafe_unwrap()],
        )
        users = elasticache.CfnUserGroup(
            self,
            "Users",
            engine=engine,
            user_group_id=_elasticache_id(stack, "users"),
            user_ids=[default_user.user_id, service_user.user_id],
        )
        users.node.add_dependency(default_user)
        users.node.add_dependency(service_user)
        subnet_ids = network.vpc.select_subnets(subnet_group_name=network.cache_subnets.subnet_group_name).subnet_ids
        host: str
        if config.redis_mode is RedisMode.SERVERLESS:
            self.port = SERVERLESS_PORT
            serverless = elasticache.CfnServerlessCache(
                self,
                "Serverless",
                engine=engine,
                serverless_cache_name=_elasticache_id(stack, "calls"),
                description="Switchboard live call context",
                security_group_ids=[self.security_group.security_group_id],
                subnet_ids=subnet_ids,
                user_group_id=users.user_group_id,
                # Serverless caches are always encrypted at rest (an AWS-owned key) and in transit.
            )
            serverless.node.add_dependency(users)
            host = serverless.attr_endpoint_address
            self.resource: elasticache.CfnServerlessCache | elasticache.CfnReplicationGroup = serverless
        else:
            self.port = CLUSTER_PORT
            subnet_group = elasticache.CfnSubnetGroup(
                self, "Subnets", description="Switchboard call cache", subnet_ids=subnet_ids
            )
            group = elasticache.CfnReplicationGroup(
                self,
                "ReplicationGroup",
                replication_group_description="Switchboard live call context",
                engine=engine,
                cache_node_type=config.redis_node_type,
                # A primary and a replica in another AZ: a node or AZ failure promotes the replica.
                num_cache_clusters=2,
                automatic_failover_enabled=True,
                multi_az_enabled=True,
                port=self.port,
                cache_subnet_group_name=subnet_group.ref,
                security_group_ids=[self.security_group.security_group_id],
                transit_encryption_enabled=True,
                at_rest_encryption_enabled=True,
                user_group_ids=[users.user_group_id],
                snapshot_retention_limit=1,
            )
            group.node.add_dependency(users)
            host = group.attr_primary_end_point_address
            self.resource = group
        # No credentials in it (they are in self.credentials): an environment variable like any other.
        self.url = f"rediss://{host}:{self.port}"

    def allow_from(self, peer: ec2.ISecurityGroup) -> None:
        self.security_group.add_ingress_rule(peer, ec2.Port.tcp(self.port), "media service to the call cache")
