"""The media service: the streaming/ image on Fargate (ARM64) behind an HTTPS load balancer set for
long-lived WebSockets, scaled on CPU and on the live calls each task carries."""

from collections.abc import Sequence

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_certificatemanager as acm
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_events as events
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_route53 as route53
from aws_cdk import aws_route53_targets as route53_targets
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.bedrock import INVOKE_ACTIONS, BedrockModel
from infra.bundling import REPO_ROOT
from infra.config import DeploymentConfig
from infra.network import Network
from infra.observability import ONE_MINUTE, switchboard_metric
from infra.platform_secrets import PlatformSecrets
from infra.state import CallCache, Tables
from streaming.server import ACTIVE_CALLS_METRIC, HEALTH_PATH

PORT = 8080
# The service drains for DRAIN_SECONDS after SIGTERM, then hands its calls over; ECS allows at most 120 s
# between SIGTERM and SIGKILL.
DRAIN_SECONDS = 100
STOP_TIMEOUT = Duration.seconds(120)
# A task leaving the target group keeps its open WebSockets for this long before ECS stops it: a deploy
# lets most calls finish where they are, and the drain plus Twilio's <Connect action> resume the rest.
DEREGISTRATION_DELAY = Duration.seconds(120)
# Media frames flow every 20 ms both ways, so a socket idle this long is dead; well above any pause.
IDLE_TIMEOUT = Duration.seconds(300)


class MediaService(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeploymentConfig,
        bedrock_models: Sequence[BedrockModel],
        network: Network,
        tables: Tables,
        cache: CallCache,
        secrets: PlatformSecrets,
        bus: events.IEventBus,
        tools_api_url: str,
        tools_invoke_arn: str,
        logs_bucket: s3.IBucket,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        vpc = network.vpc
        self.cluster = ecs.Cluster(self, "Cluster", vpc=vpc, container_insights_v2=ecs.ContainerInsights.ENABLED)
        self.log_group = logs.LogGroup(
            self, "Logs", retention=config.log_retention, removal_policy=RemovalPolicy.DESTROY
        )
        self.task_definition = ecs.FargateTaskDefinition(
            self,
            "Task",
            cpu=config.task_cpu,
            memory_limit_mib=config.task_memory_mib,
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=ecs.CpuArchitecture.ARM64,
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
            ),
        )
        image = ecs.ContainerImage.from_asset(
            str(REPO_ROOT),
            file="streaming/Dockerfile",
            platform=ecr_assets.Platform.LINUX_ARM64,
        )
        environment = {
            "AWS_REGION": stack.region,
            "CALLS_TABLE": tables.calls.table_name,
            # The URL has no credentials: the service reads the cache user's from their secret with its task role.
            "REDIS_URL": cache.url,
            "REDIS_AUTH_SECRET_ARN": cache.credentials.secret_arn,
            "AGENTS_DIR": "/app/agents",
            "PUBLIC_STREAM_URL": config.public_stream_url,
            "TOOLS_API_URL": tools_api_url,
            "TWILIO_SECRET_ARN": secrets.twilio.secret_arn,
            "STREAM_TOKEN_SECRET_ARN": secrets.stream_token.secret_arn,
            "OPENAI_SECRET_ARN": secrets.openai.secret_arn,
            "EVENT_BUS_NAME": bus.event_bus_name,
            "PORT": str(PORT),
            "DRAIN_SECONDS": str(DRAIN_SECONDS),
            # Each agent's own providers (Transcribe, Polly, OpenAI or Bedrock), as its YAML says.
            "SWITCHBOARD_PROVIDERS": "agents",
            "POWERTOOLS_LOG_LEVEL": "INFO",
        }
        self.task_definition.add_container(
            "media",
            image=image,
            environment=environment,
            port_mappings=[ecs.PortMapping(container_port=PORT)],
            logging=ecs.LogDrivers.aws_logs(stream_prefix="media", log_group=self.log_group),
            stop_timeout=STOP_TIMEOUT,
        )
        self._grant(bedrock_models, tables, cache, secrets, bus, tools_invoke_arn)

        self.service = ecs.FargateService(
            self,
            "Service",
            cluster=self.cluster,
            task_definition=self.task_definition,
            desired_count=config.min_tasks,
            vpc_subnets=network.service_subnets,
            min_healthy_percent=100,
            max_healthy_percent=200,
            circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
            health_check_grace_period=Duration.seconds(60),
            enable_execute_command=False,
        )
        cache.allow_from(self.service.connections.security_groups[0])

        self.load_balancer = elbv2.ApplicationLoadBalancer(
            self,
            "LoadBalancer",
            vpc=vpc,
            internet_facing=True,
            idle_timeout=IDLE_TIMEOUT,
            drop_invalid_header_fields=True,
        )
        self.load_balancer.log_access_logs(logs_bucket, "media-alb")
        zone = self._zone(config)
        certificate = self._certificate(config, zone)
        listener = self.load_balancer.add_listener(
            "Https",
            port=443,
            protocol=elbv2.ApplicationProtocol.HTTPS,
            certificates=[elbv2.ListenerCertificate.from_arn(certificate)],
            ssl_policy=elbv2.SslPolicy.RECOMMENDED_TLS,
            open=True,
        )
        self.target_group = listener.add_targets(
            "Media",
            port=PORT,
            protocol=elbv2.ApplicationProtocol.HTTP,
            targets=[self.service],
            deregistration_delay=DEREGISTRATION_DELAY,
            health_check=elbv2.HealthCheck(
                path=HEALTH_PATH,
                healthy_http_codes="200",
                interval=Duration.seconds(10),
                timeout=Duration.seconds(5),
                healthy_threshold_count=2,
                unhealthy_threshold_count=2,
            ),
        )
        if zone is not None:
            route53.ARecord(
                self,
                "MediaHost",
                zone=zone,
                record_name=config.domain_name,
                target=route53.RecordTarget.from_alias(route53_targets.LoadBalancerTarget(self.load_balancer)),
            )
        self._autoscaling(config)

    def _certificate(self, config: DeploymentConfig, zone: route53.IHostedZone | None) -> str:
        if config.certificate_arn is not None:
            return config.certificate_arn
        # No certificate given: request one. With a hosted zone it validates itself; without, the deploy
        # waits until the CNAME that ACM shows (console, or describe-certificate) is added to the domain.
        certificate = acm.Certificate(
            self,
            "Certificate",
            domain_name=config.domain_name,
            validation=acm.CertificateValidation.from_dns(zone),
        )
        return certificate.certificate_arn

    def _zone(self, config: DeploymentConfig) -> route53.IHostedZone | None:
        if config.hosted_zone_id is None or config.hosted_zone_name is None:
            return None
        return route53.HostedZone.from_hosted_zone_attributes(
            self, "Zone", hosted_zone_id=config.hosted_zone_id, zone_name=config.hosted_zone_name
        )

    def _grant(
        self,
        bedrock_models: Sequence[BedrockModel],
        tables: Tables,
        cache: CallCache,
        secrets: PlatformSecrets,
        bus: events.IEventBus,
        tools_invoke_arn: str,
    ) -> None:
        stack = Stack.of(self)
        role = self.task_definition.task_role
        statements = [
            iam.PolicyStatement(
                actions=["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query"],
                resources=[tables.calls.table_arn],
            ),
            iam.PolicyStatement(actions=["events:PutEvents"], resources=[bus.event_bus_arn]),
            iam.PolicyStatement(actions=["execute-api:Invoke"], resources=[tools_invoke_arn]),
            # Read by the service itself at start (Powertools Parameters), so the task role, not the execution role.
            iam.PolicyStatement(
                actions=["secretsmanager:GetSecretValue"],
                resources=[
                    secrets.twilio.secret_arn,
                    secrets.stream_token.secret_arn,
                    secrets.openai.secret_arn,
                    cache.credentials.secret_arn,
                ],
            ),
            # Neither Transcribe streaming nor Polly's speech synthesis has a resource to scope to.
            iam.PolicyStatement(actions=["transcribe:StartStreamTranscription"], resources=["*"]),
            iam.PolicyStatement(actions=["polly:SynthesizeSpeech", "polly:DescribeVoices"], resources=["*"]),
        ]
        if bedrock_models:
            statements.append(
                iam.PolicyStatement(
                    actions=list(INVOKE_ACTIONS),
                    resources=[arn for model in bedrock_models for arn in model.resource_arns(stack)],
                )
            )
        for statement in statements:
            role.add_to_principal_policy(statement)

    def _autoscaling(self, config: DeploymentConfig) -> None:
        scaling = self.service.auto_scale_task_count(min_capacity=config.min_tasks, max_capacity=config.max_tasks)
        scaling.scale_on_cpu_utilization(
            "Cpu",
            target_utilization_percent=60,
            # Scale out fast, in slowly: a task taken away drains its calls to the others.
            scale_out_cooldown=Duration.seconds(60),
            scale_in_cooldown=Duration.minutes(10),
        )
        # Each task reports its calls every 60 s under the same dimensions: the Average is calls per task.
        scaling.scale_to_track_custom_metric(
            "ActiveCalls",
            metric=switchboard_metric(ACTIVE_CALLS_METRIC, "Average", ONE_MINUTE),
            target_value=config.calls_per_task,
            scale_out_cooldown=Duration.seconds(60),
            scale_in_cooldown=Duration.minutes(10),
        )
