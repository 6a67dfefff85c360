"""The REST API and its functions: Twilio's webhooks (public, signature-checked in the code), the tool
actions and the dialer (IAM-authorized). One role per function, holding only what that function calls."""

from dataclasses import dataclass

from aws_cdk import ArnFormat, Duration, Stack
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra.bundling import AGENTS_DIR_IN_LAMBDA, function_code, shared_layer_code
from infra.config import DeploymentConfig
from infra.platform_secrets import PlatformSecrets
from infra.scheduling import Scheduling
from infra.state import Tables

STAGE = "prod"
# Twilio waits 15 s for a webhook answer; the publication claim goes stale after 2 minutes.
WEBHOOK_TIMEOUT = Duration.seconds(10)
# A campaign list of 100 numbers takes ~1.3 s each with pacing (functions/README.md).
DIALER_TIMEOUT = Duration.minutes(5)
TOOLS_TIMEOUT = Duration.seconds(20)


@dataclass(frozen=True)
class _Access:
    """What a function may do to a table. No function reads the calls table's indexes (listings are for
    the business's own tools), so none is granted them."""

    table: dynamodb.Table
    actions: tuple[str, ...]


_RECORD_WRITER = ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query")


class Api(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeploymentConfig,
        tables: Tables,
        secrets: PlatformSecrets,
        scheduling: Scheduling,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self._config = config
        self._bus = bus = scheduling.bus
        self.layer = lambda_.LayerVersion(
            self,
            "SharedLayer",
            code=shared_layer_code(),
            compatible_runtimes=[lambda_.Runtime.PYTHON_3_12],
            compatible_architectures=[lambda_.Architecture.ARM_64],
            description="switchboard shared package, its locked dependencies, and the agents",
        )
        self.api = apigateway.RestApi(
            self,
            "RestApi",
            rest_api_name=f"{stack.stack_name}-api",
            description="Switchboard: Twilio webhooks, outbound calls and schedules, tool actions",
            endpoint_types=[apigateway.EndpointType.REGIONAL],
            # The stack sets the account's API Gateway logging role: execution logs need it.
            cloud_watch_role=True,
            deploy_options=apigateway.StageOptions(
                stage_name=STAGE,
                access_log_destination=apigateway.LogGroupLogDestination(
                    logs.LogGroup(self, "AccessLogs", retention=config.log_retention)
                ),
                access_log_format=apigateway.AccessLogFormat.json_with_standard_fields(
                    caller=True,
                    http_method=True,
                    ip=True,
                    protocol=True,
                    request_time=True,
                    resource_path=True,
                    response_length=True,
                    status=True,
                    user=True,
                ),
                logging_level=apigateway.MethodLoggingLevel.ERROR,
                # Never INFO with data trace: request bodies carry phone numbers.
                data_trace_enabled=False,
                tracing_enabled=True,
                throttling_rate_limit=config.api_rate_limit,
                throttling_burst_limit=config.api_burst_limit,
                metrics_enabled=True,
            ),
        )
        # Built from the API's id, not from `api.url`, so the functions that need it do not wait on the
        # deployment (which waits on their methods).
        self.public_url = f"https://{self.api.rest_api_id}.execute-api.{stack.region}.{stack.url_suffix}/{STAGE}"
        public_stream_url = config.public_stream_url

        self.voice_webhook = self._function(
            "VoiceWebhook",
            "voice_webhook",
            timeout=WEBHOOK_TIMEOUT,
            environment={
                "CALLS_TABLE": tables.calls.table_name,
                "PUBLIC_API_URL": self.public_url,
                "PUBLIC_STREAM_URL": public_stream_url,
                "TWILIO_SECRET_ARN": secrets.twilio.secret_arn,
                "STREAM_TOKEN_SECRET_ARN": secrets.stream_token.secret_arn,
                "EVENT_BUS_NAME": bus.event_bus_name,
            },
            tables=[_Access(tables.calls, _RECORD_WRITER)],
            secrets=[secrets.twilio, secrets.stream_token],
        )
        self.status_callback = self._function(
            "StatusCallback",
            "status_callback",
            timeout=WEBHOOK_TIMEOUT,
            environment={
                "CALLS_TABLE": tables.calls.table_name,
                "PUBLIC_API_URL": self.public_url,
                "TWILIO_SECRET_ARN": secrets.twilio.secret_arn,
                "EVENT_BUS_NAME": bus.event_bus_name,
            },
            tables=[_Access(tables.calls, _RECORD_WRITER)],
            secrets=[secrets.twilio],
        )
        self.tool_actions = self._function(
            "ToolActions",
            "tool_actions",
            timeout=TOOLS_TIMEOUT,
            environment={
                "CALLS_TABLE": tables.calls.table_name,
                "APPOINTMENTS_TABLE": tables.appointments.table_name,
                "IDEMPOTENCY_TABLE": tables.idempotency.table_name,
                "TWILIO_SECRET_ARN": secrets.twilio.secret_arn,
                "EVENT_BUS_NAME": bus.event_bus_name,
            },
            tables=[
                _Access(tables.calls, _RECORD_WRITER),
                # Bookings are transactions: each Put / Delete in one is authorized as PutItem / DeleteItem.
                _Access(
                    tables.appointments,
                    ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:DeleteItem", "dynamodb:Query"),
                ),
                # Powertools Idempotency: claim, complete, and delete a failed attempt's record.
                _Access(
                    tables.idempotency,
                    ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"),
                ),
            ],
            secrets=[secrets.twilio],
        )
        dialer_name = f"{stack.stack_name}-dialer"
        dialer_arn = stack.format_arn(
            service="lambda",
            resource="function",
            resource_name=dialer_name,
            arn_format=ArnFormat.COLON_RESOURCE_NAME,
        )
        self.dialer = self._function(
            "Dialer",
            "dialer",
            function_name=dialer_name,
            timeout=DIALER_TIMEOUT,
            environment={
                "CALLS_TABLE": tables.calls.table_name,
                "DO_NOT_CALL_TABLE": tables.do_not_call.table_name,
                "PUBLIC_API_URL": self.public_url,
                "TWILIO_SECRET_ARN": secrets.twilio.secret_arn,
                "SCHEDULE_GROUP": scheduling.group.schedule_group_name,
                "SCHEDULER_ROLE_ARN": scheduling.role.role_arn,
                # Its own ARN, built from its name: a reference to the function would be a cycle.
                "DIALER_FUNCTION_ARN": dialer_arn,
                "SCHEDULE_DEAD_LETTER_ARN": scheduling.dead_letters.queue_arn,
            },
            tables=[
                _Access(tables.calls, _RECORD_WRITER),
                _Access(tables.do_not_call, ("dynamodb:GetItem",)),
            ],
            secrets=[secrets.twilio],
            may_publish=False,
        )
        self.dialer.add_to_role_policy(
            iam.PolicyStatement(
                actions=["scheduler:CreateSchedule"],
                # Schedule names are made at run time (a campaign's name, retry-<CallSid>, defer-<hash>).
                resources=[scheduling.schedule_arns()],
            )
        )
        self.dialer.add_to_role_policy(
            iam.PolicyStatement(
                actions=["iam:PassRole"],
                resources=[scheduling.role.role_arn],
                conditions={"StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}},
            )
        )
        scheduling.allow_invoking(dialer_arn)
        scheduling.retry_unanswered_calls(self.dialer)

        self._routes()

    def _function(
        self,
        construct_id: str,
        folder: str,
        *,
        timeout: Duration,
        environment: dict[str, str],
        tables: list[_Access],
        secrets: list[secretsmanager.ISecret],
        function_name: str | None = None,
        may_publish: bool = True,
    ) -> lambda_.Function:
        log_group = logs.LogGroup(self, f"{construct_id}Logs", retention=self._config.log_retention)
        role = iam.Role(
            self,
            f"{construct_id}Role",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description=f"Switchboard {folder} function",
        )
        function = lambda_.Function(
            self,
            construct_id,
            function_name=function_name,
            runtime=lambda_.Runtime.PYTHON_3_12,
            architecture=lambda_.Architecture.ARM_64,
            handler="handler.lambda_handler",
            code=function_code(folder),
            layers=[self.layer],
            role=role,
            memory_size=512,
            timeout=timeout,
            tracing=lambda_.Tracing.ACTIVE,
            log_group=log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            environment={
                "AGENTS_DIR": AGENTS_DIR_IN_LAMBDA,
                "POWERTOOLS_LOG_LEVEL": "INFO",
                **environment,
            },
        )
        # Only its own log group: no AWSLambdaBasicExecutionRole, which writes to any.
        log_group.grant_write(role)
        for access in tables:
            role.add_to_principal_policy(
                iam.PolicyStatement(
                    actions=list(access.actions),
                    resources=[access.table.table_arn],
                )
            )
        role.add_to_principal_policy(
            iam.PolicyStatement(
                actions=["secretsmanager:GetSecretValue"], resources=[secret.secret_arn for secret in secrets]
            )
        )
        if may_publish:
            role.add_to_principal_policy(
                iam.PolicyStatement(actions=["events:PutEvents"], resources=[self._bus.event_bus_arn])
            )
        return function

    def _routes(self) -> None:
        api = self.api.root
        twilio = api.add_resource("twilio")
        webhook = apigateway.LambdaIntegration(self.voice_webhook)
        # Public: Twilio cannot sign with SigV4. Each webhook checks X-Twilio-Signature before anything.
        for path in ("voice", "stream-ended", "amd"):
            twilio.add_resource(path).add_method("POST", webhook, authorization_type=apigateway.AuthorizationType.NONE)
        twilio.add_resource("status").add_method(
            "POST",
            apigateway.LambdaIntegration(self.status_callback),
            authorization_type=apigateway.AuthorizationType.NONE,
        )
        iam_auth = apigateway.AuthorizationType.IAM
        tools = apigateway.LambdaIntegration(self.tool_actions)
        api.add_resource("tools").add_resource("{name}").add_method("POST", tools, authorization_type=iam_auth)
        dialer = apigateway.LambdaIntegration(self.dialer)
        calls = api.add_resource("calls")
        calls.add_method("POST", dialer, authorization_type=iam_auth)
        calls.add_resource("{sid}").add_method("GET", dialer, authorization_type=iam_auth)
        api.add_resource("schedules").add_method("POST", dialer, authorization_type=iam_auth)

    def tools_invoke_arn(self) -> str:
        """execute-api:Invoke on POST /tools/* of this stage, and nothing else."""
        return self.api.arn_for_execute_api("POST", "/tools/*", STAGE)
