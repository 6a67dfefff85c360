"""What a person looks at to see how calls go: one dashboard, alarms to an SNS topic, and saved Logs
Insights queries over every function's log group and the media service's.

Metric names are the ones the code emits (namespace Switchboard, dimension service=switchboard); the
tests check each name used here against the source, so a renamed metric cannot leave a flat line here.
"""

from collections.abc import Sequence

from aws_cdk import Duration, Stack
from aws_cdk import aws_apigateway as apigateway
from aws_cdk import aws_cloudwatch as cloudwatch
from aws_cdk import aws_cloudwatch_actions as cloudwatch_actions
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subscriptions
from aws_cdk import aws_sqs as sqs
from constructs import Construct

from infra.config import DeploymentConfig
from streaming.server import ACTIVE_CALLS_METRIC
from switchboard.observability import NAMESPACE, SERVICE

FIVE_MINUTES = Duration.minutes(5)
ONE_MINUTE = Duration.minutes(1)

# The per-turn stage times the media service publishes (streaming/telemetry.py), in critical-path order.
TURN_STAGES = ("EndpointingWait", "SttFinal", "LlmFirstToken", "FirstSentence", "TtsFirstByte", "EngineOverhead")
VOICE_TO_VOICE = "VoiceToVoice"
CALL_COUNTS = ("CallAnswered", "CallCompleted", "CallRefused", "StreamResumed", "StreamLost")
CONVERSATION_COUNTS = ("Interruptions", "BackchannelsIgnored", "SpeculationDropped")
TOOL_COUNTS = ("ToolSucceeded", "ToolRefused", "ToolFailed", "ToolReplayed")
DIAL_COUNTS = ("DialPlaced", "DialRefused", "DialFailed", "DialDeferred", "DialRateLimited", "RetryScheduled")
SECURITY_COUNTS = ("ForgedWebhook", "UnsignedToolRequest", "UnsignedDialerRequest")
# Errors{kind} from the media service (streaming/telemetry.py count_error).
ERROR_KINDS = ("stt", "llm", "tts", "tool", "state", "records", "events", "engine")
# The providers' own trouble, counted by the media service (streaming/providers, streaming/phrases.py), each
# with the dimensions besides `service` it is emitted with: SEARCH and SCHEMA match exactly those.
TRANSCRIBE_REOPENED = "TranscribeStreamReopened"
TRANSCRIBE_DROPPED_MS = "TranscribeAudioDroppedMs"
TTS_ERRORS = "TtsErrors"
TTS_RETRIES = "TtsRetries"
LLM_RETRIES = "LlmRetries"
PHRASE_CACHE_ERRORS = "PhraseCacheErrors"
PROVIDER_COUNTS: dict[str, tuple[str, ...]] = {
    TRANSCRIBE_REOPENED: ("reason",),
    TRANSCRIBE_DROPPED_MS: (),
    TTS_ERRORS: ("provider", "reason"),
    TTS_RETRIES: ("provider", "reason"),
    LLM_RETRIES: ("provider", "reason"),
    PHRASE_CACHE_ERRORS: ("operation",),
}
# Transcribe replaces every stream before its maximum age (reason "age"): routine, not trouble.
ROUTINE_REOPEN_REASON = "age"
# Alarm thresholds: a reply slower than this at p95 is heard as a broken conversation.
V2V_P95_ALARM_MS = 1500
# The slow-turns query: replies the caller hears as a pause (the reference target is a p50 of 700 ms).
SLOW_TURN_MS = 750
LAMBDA_ERROR_RATE_PERCENT = 5
ENGINE_ERRORS_PER_5_MIN = 20
# A TtsError is counted only once Polly's retries are spent (or it refused, or its stream broke off): each
# one is a sentence the caller did not hear. One or two are a stray refusal or a broken connection; more
# than five in five minutes is throttling (the account's Polly TPS quota) or an outage, calls going silent.
TTS_ERRORS_PER_5_MIN = 5
# A stream reopened for any reason but its age stalled or broke: the call goes on (the kept audio is sent
# again), so a few are network noise. More than ten in each of two 5-minute periods is Transcribe
# refusing or throttling streams (its concurrent-stream quota) and callers' words being lost or late.
TRANSCRIBE_REOPENS_PER_5_MIN = 10


def switchboard_metric(
    name: str, statistic: str = "Sum", period: Duration = FIVE_MINUTES, **dimensions: str
) -> cloudwatch.Metric:
    return cloudwatch.Metric(
        namespace=NAMESPACE,
        metric_name=name,
        dimensions_map={"service": SERVICE, **dimensions},
        statistic=statistic,
        period=period,
    )


def _search(metric: str, *dimensions: str, label: str) -> cloudwatch.MathExpression:
    """Every value of a dimensioned count (EndOfTurn by reason, ToolErrors by tool and kind...). SEARCH
    matches metrics with exactly these dimension names, so all of the metric's dimensions are listed."""
    schema = ",".join((NAMESPACE, "service", *dimensions))
    return cloudwatch.MathExpression(
        expression=f"SEARCH('{{{schema}}} MetricName=\"{metric}\"', 'Sum', 300)",
        label=label,
        period=FIVE_MINUTES,
    )


def _insights(metric: str, *dimensions: str, where: str = "", label: str) -> cloudwatch.MathExpression:
    """The sum over every value of a dimensioned count, as a Metrics Insights query: unlike SEARCH, one an
    alarm can watch, and it still counts a reason or provider that appears after the deploy."""
    schema = ",".join((NAMESPACE, "service", *dimensions))
    condition = f"service = '{SERVICE}'" + (f" AND {where}" if where else "")
    return cloudwatch.MathExpression(
        expression=f"SELECT SUM({metric}) FROM SCHEMA({schema}) WHERE {condition}",  # noqa: S608 - our constants only
        label=label,
        period=FIVE_MINUTES,
    )


class Observability(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: DeploymentConfig,
        functions: dict[str, lambda_.Function],
        api: apigateway.RestApi,
        service_log_group: logs.ILogGroup,
        cluster_name: str,
        service_name: str,
        target_group: elbv2.ApplicationTargetGroup,
        load_balancer: elbv2.ApplicationLoadBalancer,
        dead_letters: sqs.IQueue,
    ) -> None:
        super().__init__(scope, construct_id)
        stack = Stack.of(self)
        self.topic = sns.Topic(self, "Alarms", display_name="Switchboard alarms", enforce_ssl=True)
        if config.alarm_email is not None:
            self.topic.add_subscription(subscriptions.EmailSubscription(config.alarm_email))
        self._action = cloudwatch_actions.SnsAction(self.topic)
        self.alarms: list[cloudwatch.Alarm] = []

        running_tasks = cloudwatch.Metric(
            namespace="ECS/ContainerInsights",
            metric_name="RunningTaskCount",
            dimensions_map={"ClusterName": cluster_name, "ServiceName": service_name},
            statistic="Minimum",
            period=ONE_MINUTE,
        )
        self._alarms(config, functions, api, target_group, load_balancer, running_tasks, dead_letters)
        self.dashboard = cloudwatch.Dashboard(
            self, "Dashboard", dashboard_name=f"{stack.stack_name}-calls", default_interval=Duration.hours(3)
        )
        self._dashboard(functions, api, target_group, load_balancer, running_tasks, cluster_name, service_name)
        self._queries([*(f.log_group for f in functions.values()), service_log_group])

    # -- alarms ---------------------------------------------------------------------------------------------

    def _alarm(
        self,
        construct_id: str,
        *,
        comparison_operator: cloudwatch.ComparisonOperator = cloudwatch.ComparisonOperator.GREATER_THAN_THRESHOLD,
        # A quiet period (no calls, no errors) is not a problem unless an alarm says otherwise.
        treat_missing_data: cloudwatch.TreatMissingData = cloudwatch.TreatMissingData.NOT_BREACHING,
        **props: object,
    ) -> cloudwatch.Alarm:
        alarm = cloudwatch.Alarm(
            self,
            construct_id,
            comparison_operator=comparison_operator,
            treat_missing_data=treat_missing_data,
            **props,  # type: ignore[arg-type]
        )
        alarm.add_alarm_action(self._action)
        alarm.add_ok_action(self._action)
        self.alarms.append(alarm)
        return alarm

    def _alarms(
        self,
        config: DeploymentConfig,
        functions: dict[str, lambda_.Function],
        api: apigateway.RestApi,
        target_group: elbv2.ApplicationTargetGroup,
        load_balancer: elbv2.ApplicationLoadBalancer,
        running_tasks: cloudwatch.Metric,
        dead_letters: sqs.IQueue,
    ) -> None:
        for name, function in functions.items():
            rate = cloudwatch.MathExpression(
                expression="100 * errors / MAX([invocations, 1])",
                using_metrics={
                    "errors": function.metric_errors(period=FIVE_MINUTES),
                    "invocations": function.metric_invocations(period=FIVE_MINUTES),
                },
                label=f"{name} error rate (%)",
                period=FIVE_MINUTES,
            )
            self._alarm(
                f"{name}ErrorRate",
                alarm_description=f"More than {LAMBDA_ERROR_RATE_PERCENT}% of the {name} invocations failed",
                metric=rate,
                threshold=LAMBDA_ERROR_RATE_PERCENT,
                evaluation_periods=2,
                datapoints_to_alarm=2,
            )
        engine_errors = cloudwatch.MathExpression(
            expression=" + ".join(f"FILL(e{i}, 0)" for i in range(len(ERROR_KINDS))),
            using_metrics={f"e{i}": switchboard_metric("Errors", kind=kind) for i, kind in enumerate(ERROR_KINDS)},
            label="media service errors",
            period=FIVE_MINUTES,
        )
        self._alarm(
            "EngineErrors",
            alarm_description="The media service counted many errors (Errors by kind: stt, llm, tts, tool, ...)",
            metric=engine_errors,
            threshold=ENGINE_ERRORS_PER_5_MIN,
            evaluation_periods=1,
        )
        self._alarm(
            "TtsErrors",
            alarm_description=f"More than {TTS_ERRORS_PER_5_MIN} sentences in 5 minutes could not be synthesized "
            "(TtsErrors, after the retries): Polly throttling or failing",
            metric=_insights(TTS_ERRORS, *PROVIDER_COUNTS[TTS_ERRORS], label="TTS errors"),
            threshold=TTS_ERRORS_PER_5_MIN,
            evaluation_periods=1,
        )
        self._alarm(
            "TranscribeStreamReopened",
            alarm_description=f"More than {TRANSCRIBE_REOPENS_PER_5_MIN} Transcribe streams in 5 minutes, twice, "
            "stalled or broke and were reopened (their routine replacement by age not counted)",
            metric=_insights(
                TRANSCRIBE_REOPENED,
                *PROVIDER_COUNTS[TRANSCRIBE_REOPENED],
                where=f"reason != '{ROUTINE_REOPEN_REASON}'",
                label="Transcribe streams reopened (not by age)",
            ),
            threshold=TRANSCRIBE_REOPENS_PER_5_MIN,
            evaluation_periods=2,
            datapoints_to_alarm=2,
        )
        self._alarm(
            "VoiceToVoiceP95",
            alarm_description=f"Voice-to-voice latency p95 above {V2V_P95_ALARM_MS} ms for 15 minutes",
            metric=switchboard_metric(VOICE_TO_VOICE, "p95"),
            threshold=V2V_P95_ALARM_MS,
            evaluation_periods=3,
        )
        self._alarm(
            "Api5xx",
            alarm_description="The API answered 5xx (Twilio webhooks, dialer or tools)",
            metric=api.metric_server_error(period=FIVE_MINUTES, statistic="Sum"),
            threshold=5,
            evaluation_periods=1,
        )
        self._alarm(
            "Media5xx",
            alarm_description="The media load balancer or its targets answered 5xx",
            metric=cloudwatch.MathExpression(
                expression="FILL(elb, 0) + FILL(target, 0)",
                using_metrics={
                    "elb": load_balancer.metrics.http_code_elb(
                        elbv2.HttpCodeElb.ELB_5XX_COUNT, period=FIVE_MINUTES, statistic="Sum"
                    ),
                    "target": target_group.metrics.http_code_target(
                        elbv2.HttpCodeTarget.TARGET_5XX_COUNT, period=FIVE_MINUTES, statistic="Sum"
                    ),
                },
                label="media 5xx",
                period=FIVE_MINUTES,
            ),
            threshold=5,
            evaluation_periods=1,
        )
        self._alarm(
            "TaskCount",
            alarm_description=f"Fewer media tasks running than the minimum ({config.min_tasks})",
            metric=running_tasks,
            threshold=config.min_tasks,
            evaluation_periods=3,
            comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
            # No data means no task reports at all: the worst case, not a quiet one.
            treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
        )
        self._alarm(
            "HealthyTargets",
            alarm_description="No healthy media task behind the load balancer",
            metric=target_group.metrics.healthy_host_count(period=ONE_MINUTE, statistic="Minimum"),
            threshold=1,
            evaluation_periods=2,
            comparison_operator=cloudwatch.ComparisonOperator.LESS_THAN_THRESHOLD,
            treat_missing_data=cloudwatch.TreatMissingData.BREACHING,
        )
        self._alarm(
            "UndeliveredDials",
            alarm_description="Scheduler or EventBridge could not deliver a dial or a retry to the dialer",
            metric=dead_letters.metric_approximate_number_of_messages_visible(period=FIVE_MINUTES, statistic="Maximum"),
            threshold=0,
            evaluation_periods=1,
        )

    # -- dashboard ------------------------------------------------------------------------------------------

    def _dashboard(
        self,
        functions: dict[str, lambda_.Function],
        api: apigateway.RestApi,
        target_group: elbv2.ApplicationTargetGroup,
        load_balancer: elbv2.ApplicationLoadBalancer,
        running_tasks: cloudwatch.Metric,
        cluster_name: str,
        service_name: str,
    ) -> None:
        def graph(
            title: str, left: Sequence[cloudwatch.IMetric], width: int = 8, **props: object
        ) -> cloudwatch.GraphWidget:
            return cloudwatch.GraphWidget(title=title, left=list(left), width=width, height=6, **props)  # type: ignore[arg-type]

        def counts(names: Sequence[str]) -> list[cloudwatch.IMetric]:
            return [switchboard_metric(name).with_(label=name) for name in names]

        active = switchboard_metric(ACTIVE_CALLS_METRIC, "Sum", ONE_MINUTE).with_(label="active calls (all tasks)")
        per_task = switchboard_metric(ACTIVE_CALLS_METRIC, "Average", ONE_MINUTE).with_(
            label="per task (scaling signal)"
        )
        v2v = [
            switchboard_metric(VOICE_TO_VOICE, stat).with_(label=f"voice-to-voice {stat}")
            for stat in ("p50", "p95", "p99")
        ]
        self.dashboard.add_widgets(
            cloudwatch.TextWidget(
                markdown="# Switchboard calls\nOne call's whole story: Logs Insights, saved query "
                "**switchboard/call-timeline**, with its CallSid. Latencies are per agent turn, at the caller's ear.",
                width=24,
                height=2,
            )
        )
        self.dashboard.add_widgets(
            graph("Calls", counts(CALL_COUNTS)),
            graph("Active calls", [active, per_task]),
            cloudwatch.SingleValueWidget(title="Voice-to-voice (ms)", metrics=v2v, width=8, height=6),
        )
        self.dashboard.add_widgets(
            graph("Voice-to-voice latency (ms)", v2v, width=12),
            graph(
                "Per-stage latency p50 (ms)",
                [switchboard_metric(stage, "p50").with_(label=stage) for stage in TURN_STAGES],
                width=12,
            ),
        )
        self.dashboard.add_widgets(
            graph(
                "Per-stage latency p95 (ms)",
                [switchboard_metric(stage, "p95").with_(label=stage) for stage in TURN_STAGES],
                width=12,
            ),
            graph("Interruptions and turn-taking", counts(CONVERSATION_COUNTS), width=6),
            graph("End of turn, by reason", [_search("EndOfTurn", "reason", label="EndOfTurn")], width=6),
        )
        self.dashboard.add_widgets(
            graph("Tool calls", counts(TOOL_COUNTS)),
            graph(
                "Tool errors (media service), by tool and kind",
                [_search("ToolErrors", "tool", "kind", label="ToolErrors")],
            ),
            graph("Outbound dials", counts(DIAL_COUNTS)),
        )
        self.dashboard.add_widgets(
            graph("Media service errors, by kind", [_search("Errors", "kind", label="Errors")]),
            graph(
                "Rejected and forged",
                [*counts(SECURITY_COUNTS), _search("RejectedStream", "reason", label="RejectedStream")],
            ),
            graph(
                "API",
                [
                    api.metric_count(period=FIVE_MINUTES, label="requests"),
                    api.metric_client_error(period=FIVE_MINUTES, label="4xx"),
                    api.metric_server_error(period=FIVE_MINUTES, label="5xx"),
                ],
                right=[api.metric_latency(period=FIVE_MINUTES, statistic="p95", label="latency p95 (ms)")],
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.TextWidget(
                markdown="## Providers\nTranscribe, the speech and language models and the phrase cache, as the "
                "media service sees them: retries that hid a failure, and failures the caller noticed.",
                width=24,
                height=2,
            )
        )

        def provider_counts(metric: str) -> cloudwatch.MathExpression:
            return _search(metric, *PROVIDER_COUNTS[metric], label=metric)

        self.dashboard.add_widgets(
            graph(
                "Transcribe streams reopened, by reason",
                [provider_counts(TRANSCRIBE_REOPENED)],
                width=6,
                right=[switchboard_metric(TRANSCRIBE_DROPPED_MS).with_(label="audio dropped (ms)")],
            ),
            graph(
                "Speech synthesis errors and retries, by provider and reason",
                [provider_counts(TTS_ERRORS), provider_counts(TTS_RETRIES)],
                width=6,
            ),
            graph("Language model retries, by provider and reason", [provider_counts(LLM_RETRIES)], width=6),
            graph("Phrase cache (Redis) errors, by operation", [provider_counts(PHRASE_CACHE_ERRORS)], width=6),
        )
        self.dashboard.add_widgets(
            graph(
                "Lambda invocations and errors",
                [
                    metric
                    for name, function in functions.items()
                    for metric in (
                        function.metric_invocations(period=FIVE_MINUTES, label=f"{name} invocations"),
                        function.metric_errors(period=FIVE_MINUTES, label=f"{name} errors"),
                    )
                ],
                width=12,
            ),
            graph(
                "Lambda duration p95 (ms) and throttles",
                [
                    function.metric_duration(period=FIVE_MINUTES, statistic="p95", label=name)
                    for name, function in functions.items()
                ],
                width=12,
                right=[
                    function.metric_throttles(period=FIVE_MINUTES, label=f"{name} throttles")
                    for name, function in functions.items()
                ],
            ),
        )
        container = {"ClusterName": cluster_name, "ServiceName": service_name}
        self.dashboard.add_widgets(
            graph(
                "Fargate tasks",
                [
                    running_tasks.with_(label="running"),
                    target_group.metrics.healthy_host_count(period=ONE_MINUTE, label="healthy"),
                ],
            ),
            graph(
                "Fargate CPU and memory (%)",
                [
                    cloudwatch.Metric(
                        namespace="AWS/ECS",
                        metric_name="CPUUtilization",
                        dimensions_map=container,
                        period=ONE_MINUTE,
                        label="CPU",
                    ),
                    cloudwatch.Metric(
                        namespace="AWS/ECS",
                        metric_name="MemoryUtilization",
                        dimensions_map=container,
                        period=ONE_MINUTE,
                        label="memory",
                    ),
                ],
            ),
            graph(
                "Media load balancer",
                [
                    load_balancer.metrics.active_connection_count(period=ONE_MINUTE, label="open sockets"),
                    load_balancer.metrics.new_connection_count(period=ONE_MINUTE, label="new sockets"),
                    target_group.metrics.http_code_target(
                        elbv2.HttpCodeTarget.TARGET_5XX_COUNT, period=ONE_MINUTE, label="target 5xx"
                    ),
                ],
            ),
        )
        self.dashboard.add_widgets(
            cloudwatch.AlarmStatusWidget(title="Alarms", alarms=list(self.alarms), width=24, height=4)
        )

    # -- saved queries --------------------------------------------------------------------------------------

    def _queries(self, log_groups: list[logs.ILogGroup]) -> None:
        logs.QueryDefinition(
            self,
            "CallTimeline",
            query_definition_name="switchboard/call-timeline",
            log_groups=log_groups,
            # Logs Insights has no parameters: put the CallSid between the quotes.
            query_string=logs.QueryString(
                fields=[
                    "@timestamp",
                    "@log",
                    "level",
                    "message",
                    "function_name",
                    "turn",
                    "v2v_ms",
                    "tool",
                    "outcome",
                    "error",
                ],
                filter_statements=['correlation_id = "<CallSid>"'],
                sort="@timestamp asc",
                limit=1000,
            ),
        )
        logs.QueryDefinition(
            self,
            "SlowTurns",
            query_definition_name="switchboard/slow-turns",
            log_groups=log_groups,
            query_string=logs.QueryString(
                fields=[
                    "@timestamp",
                    "correlation_id",
                    "turn",
                    "v2v_ms",
                    "endpointing_wait_ms",
                    "stt_final_ms",
                    "llm_first_token_ms",
                    "first_chunk_ms",
                    "tts_first_byte_ms",
                    "overhead_ms",
                    "speculative",
                    "filler_played",
                ],
                filter_statements=['message = "agent turn"', f"v2v_ms > {SLOW_TURN_MS}"],
                sort="v2v_ms desc",
                limit=200,
            ),
        )
        logs.QueryDefinition(
            self,
            "FailedToolCalls",
            query_definition_name="switchboard/failed-tool-calls",
            log_groups=log_groups,
            query_string=logs.QueryString(
                fields=[
                    "@timestamp",
                    "@log",
                    "correlation_id",
                    "message",
                    "tool",
                    "outcome",
                    "kind",
                    "detail",
                    "error",
                ],
                filter_statements=[
                    'message in ["Tool call failed", "tool action failed", "ToolInvoked event not published"]'
                ],
                sort="@timestamp desc",
                limit=200,
            ),
        )
