"""The VPC: public subnets for the load balancer and NAT, private ones for the media service, isolated ones
for the cache; endpoints for the AWS traffic that would otherwise pay the NAT per GB."""

from collections.abc import Sequence

from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.bedrock import BedrockModel
from infra.config import DeploymentConfig

SERVICE_SUBNETS = "service"
CACHE_SUBNETS = "cache"

# Per live call, the service streams the caller's audio to Transcribe (8 kHz 16-bit PCM, ~128 kbit/s) and
# receives every agent sentence from Polly: the bulk of the service's outbound bytes. Image pulls (ECR
# API, registry, and the layers from S3) come at every task start, CloudWatch Logs takes every log line and
# EMF metric. Secrets Manager and EventBridge carry a few KB per call and stay on the NAT: an interface
# endpoint costs more per month (per AZ) than their NAT bytes would.
_INTERFACE_ENDPOINTS = {
    "TranscribeStreaming": ec2.InterfaceVpcEndpointAwsService.TRANSCRIBE_STREAMING,
    "Polly": ec2.InterfaceVpcEndpointAwsService.POLLY,
    "EcrApi": ec2.InterfaceVpcEndpointAwsService.ECR,
    "EcrDocker": ec2.InterfaceVpcEndpointAwsService.ECR_DOCKER,
    "Logs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
}


class Network(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeploymentConfig,
        bedrock_models: Sequence[BedrockModel],
        logs_bucket: s3.IBucket,
    ) -> None:
        super().__init__(scope, construct_id)
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=2,
            nat_gateways=config.nat_gateways,
            subnet_configuration=[
                ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24),
                ec2.SubnetConfiguration(
                    name=SERVICE_SUBNETS, subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=22
                ),
                # The cache needs no way out at all.
                ec2.SubnetConfiguration(name=CACHE_SUBNETS, subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=26),
            ],
            gateway_endpoints={
                "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3),
                "DynamoDB": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.DYNAMODB),
            },
            flow_logs={
                "ToS3": ec2.FlowLogOptions(
                    destination=ec2.FlowLogDestination.to_s3(logs_bucket, "vpc-flow-logs/"),
                    traffic_type=ec2.FlowLogTrafficType.REJECT,
                )
            },
        )
        self.service_subnets = ec2.SubnetSelection(subnet_group_name=SERVICE_SUBNETS)
        self.cache_subnets = ec2.SubnetSelection(subnet_group_name=CACHE_SUBNETS)
        endpoints = dict(_INTERFACE_ENDPOINTS) if config.interface_endpoints else {}
        # Every reply of a Bedrock agent streams from bedrock-runtime: only then is its endpoint worth its hours.
        if config.interface_endpoints and bedrock_models:
            endpoints["BedrockRuntime"] = ec2.InterfaceVpcEndpointAwsService.BEDROCK_RUNTIME
        for name, service in endpoints.items():
            # The default security group of an endpoint admits the VPC's CIDR on 443: the service's tasks.
            self.vpc.add_interface_endpoint(
                name, service=service, subnets=self.service_subnets, private_dns_enabled=True
            )
