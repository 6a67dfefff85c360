"""The VPC: subnets by role, gateway and interface endpoints, flow logs."""

import aws_cdk as cdk
from aws_cdk import aws_s3 as s3
from aws_cdk.assertions import Match, Template

from infra.bedrock import BedrockModel
from infra.config import DeploymentConfig
from infra.network import Network
from tests.infra.conftest import Synthesized


def _endpoint_services(deployment: Synthesized, kind: str) -> set[str]:
    services = set()
    for endpoint in deployment.resources("AWS::EC2::VPCEndpoint").values():
        props = endpoint["Properties"]
        if props.get("VpcEndpointType", "Gateway") != kind:
            continue
        name = props["ServiceName"]
        text = name if isinstance(name, str) else str(name)
        services.add(text)
    return services


def test_public_service_and_isolated_cache_subnets_in_two_zones(default_deployment: Synthesized) -> None:
    subnets = default_deployment.resources("AWS::EC2::Subnet")
    names = sorted(
        next(tag["Value"] for tag in subnet["Properties"]["Tags"] if tag["Key"] == "aws-cdk:subnet-name")
        for subnet in subnets.values()
    )
    assert names == ["cache", "cache", "public", "public", "service", "service"]
    isolated = [
        s for s in subnets.values() if {"Key": "aws-cdk:subnet-type", "Value": "Isolated"} in s["Properties"]["Tags"]
    ]
    assert len(isolated) == 2
    default_deployment.template.resource_count_is("AWS::EC2::NatGateway", 1)


def test_gateway_endpoints_for_s3_and_dynamodb(default_deployment: Synthesized) -> None:
    gateways = " ".join(_endpoint_services(default_deployment, "Gateway"))
    assert ".s3" in gateways
    assert ".dynamodb" in gateways


def test_interface_endpoints_carry_the_audio_images_and_logs(default_deployment: Synthesized) -> None:
    services = " ".join(_endpoint_services(default_deployment, "Interface"))
    for service in ("transcribestreaming", "polly", "ecr.api", "ecr.dkr", "logs"):
        assert f".{service}" in services, service
    assert "bedrock-runtime" not in services
    for endpoint in default_deployment.resources("AWS::EC2::VPCEndpoint").values():
        if endpoint["Properties"].get("VpcEndpointType") == "Interface":
            assert endpoint["Properties"]["PrivateDnsEnabled"] is True


def test_bedrock_endpoint_only_when_bedrock_models_are_configured(cluster_deployment: Synthesized) -> None:
    assert "bedrock-runtime" in " ".join(_endpoint_services(cluster_deployment, "Interface"))


def test_bedrock_endpoint_for_bedrock_agents_without_context(bedrock_agents_deployment: Synthesized) -> None:
    assert "bedrock-runtime" in " ".join(_endpoint_services(bedrock_agents_deployment, "Interface"))


def test_rejected_traffic_is_logged(default_deployment: Synthesized) -> None:
    default_deployment.template.has_resource_properties(
        "AWS::EC2::FlowLog", {"TrafficType": "REJECT", "LogDestinationType": "s3", "ResourceType": "VPC"}
    )
    default_deployment.template.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
            },
            "PublicAccessBlockConfiguration": Match.object_like(
                {"BlockPublicAcls": True, "RestrictPublicBuckets": True}
            ),
        },
    )


def test_interface_endpoints_can_be_left_out() -> None:
    stack = cdk.Stack(cdk.App(), "NetworkOnly", env=cdk.Environment(region="us-east-1"))
    config = DeploymentConfig(domain_name="media.example.com", interface_endpoints=False)
    Network(stack, "Network", config=config, bedrock_models=[BedrockModel("a.b")], logs_bucket=s3.Bucket(stack, "Logs"))
    template = Template.from_stack(stack)
    template.resource_properties_count_is("AWS::EC2::VPCEndpoint", {"VpcEndpointType": "Interface"}, 0)
    template.resource_count_is("AWS::EC2::VPCEndpoint", 2)
