"""The whole platform in one stack: `cdk deploy` and it answers calls."""

from aws_cdk import CfnOutput, Duration, RemovalPolicy, Stack
from aws_cdk import aws_s3 as s3
from constructs import Construct

from infra.api import Api
from infra.bedrock import deployment_models
from infra.config import DeploymentConfig
from infra.media_service import MediaService
from infra.nag import acknowledge_findings
from infra.network import Network
from infra.observability import Observability
from infra.platform_secrets import PlatformSecrets
from infra.scheduling import Scheduling
from infra.state import CallCache, Tables
from switchboard.agent import AgentDirectory


class SwitchboardStack(Stack):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeploymentConfig,
        agents: AgentDirectory,
        **kwargs: object,
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        # What the Bedrock agents (and the context) will invoke: the task role's grant and the VPC endpoint.
        self.bedrock_models = deployment_models(config, agents)
        # Load balancer access logs and VPC flow logs (rejected traffic). ALB logs need SSE-S3, not KMS.
        self.logs_bucket = s3.Bucket(
            self,
            "InfraLogs",
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(90))],
            removal_policy=RemovalPolicy.RETAIN,
        )
        self.network = Network(
            self, "Network", config=config, bedrock_models=self.bedrock_models, logs_bucket=self.logs_bucket
        )
        self.tables = Tables(self, "Tables")
        self.cache = CallCache(self, "CallCache", config=config, network=self.network)
        self.secrets = PlatformSecrets(self, "Secrets")
        self.scheduling = Scheduling(self, "Scheduling")
        self.api = Api(
            self,
            "Api",
            config=config,
            tables=self.tables,
            secrets=self.secrets,
            scheduling=self.scheduling,
        )
        self.media = MediaService(
            self,
            "Media",
            config=config,
            bedrock_models=self.bedrock_models,
            network=self.network,
            tables=self.tables,
            cache=self.cache,
            secrets=self.secrets,
            bus=self.scheduling.bus,
            tools_api_url=self.api.public_url,
            tools_invoke_arn=self.api.tools_invoke_arn(),
            logs_bucket=self.logs_bucket,
        )
        self.observability = Observability(
            self,
            "Observability",
            config=config,
            functions={
                "VoiceWebhook": self.api.voice_webhook,
                "StatusCallback": self.api.status_callback,
                "ToolActions": self.api.tool_actions,
                "Dialer": self.api.dialer,
            },
            api=self.api.api,
            service_log_group=self.media.log_group,
            cluster_name=self.media.cluster.cluster_name,
            service_name=self.media.service.service_name,
            target_group=self.media.target_group,
            load_balancer=self.media.load_balancer,
            dead_letters=self.scheduling.dead_letters,
        )
        outputs = {
            "TwilioVoiceWebhook": f"{self.api.public_url}/twilio/voice",
            "TwilioStatusCallback": f"{self.api.public_url}/twilio/status",
            "ApiUrl": self.api.public_url,
            "MediaStreamUrl": config.public_stream_url,
            "MediaLoadBalancerDns": self.media.load_balancer.load_balancer_dns_name,
            "TwilioSecretArn": self.secrets.twilio.secret_arn,
            "OpenAISecretArn": self.secrets.openai.secret_arn,
            "StreamTokenSecretArn": self.secrets.stream_token.secret_arn,
            # The media tasks read their secrets at start: `aws ecs update-service --force-new-deployment` on
            # these after a secret is set (docs/deploy.md).
            "MediaCluster": self.media.cluster.cluster_name,
            "MediaService": self.media.service.service_name,
            "CallsTable": self.tables.calls.table_name,
            "DoNotCallTable": self.tables.do_not_call.table_name,
            "AlarmTopicArn": self.observability.topic.topic_arn,
            "Dashboard": self.observability.dashboard.dashboard_name,
        }
        for name, value in outputs.items():
            CfnOutput(self, name, value=value)
        acknowledge_findings(self)
