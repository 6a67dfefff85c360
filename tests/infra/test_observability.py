"""Dashboard, alarms, saved queries and log retention; and every metric name the dashboard uses is one
the code emits."""

import json
import re
from pathlib import Path

from infra import observability
from tests.infra.conftest import Synthesized

REPO = Path(__file__).resolve().parents[2]


def _source() -> str:
    return "\n".join(
        path.read_text() for folder in ("streaming", "layers", "functions") for path in (REPO / folder).rglob("*.py")
    )


def test_every_metric_name_on_the_dashboard_is_emitted_by_the_code() -> None:
    source = _source()
    names = [
        observability.VOICE_TO_VOICE,
        observability.ACTIVE_CALLS,
        "Errors",
        "EndOfTurn",
        "ToolErrors",
        "RejectedStream",
        *observability.TURN_STAGES,
        *observability.CALL_COUNTS,
        *observability.CONVERSATION_COUNTS,
        *observability.TOOL_COUNTS,
        *observability.DIAL_COUNTS,
        *observability.SECURITY_COUNTS,
    ]
    for name in names:
        # Quoted as a literal somewhere, or as the value of a constant (FORGED_WEBHOOK_METRIC = "...").
        assert re.search(rf"[\"']{name}[\"']", source), f"{name} is not a metric name in the code"
    for kind in observability.ERROR_KINDS:
        assert re.search(rf"count_error\([\"']{kind}[\"']\)|kind=[\"']{kind}[\"']", source), kind


def test_dashboard_shows_calls_latency_stages_tools_errors_and_health(default_deployment: Synthesized) -> None:
    (dashboard,) = default_deployment.resources("AWS::CloudWatch::Dashboard").values()
    # The body is JSON joined with references (function names, ARNs): put a marker where each goes.
    parts = dashboard["Properties"]["DashboardBody"]["Fn::Join"][1]
    widgets = json.loads("".join(part if isinstance(part, str) else "ref" for part in parts))["widgets"]
    body = json.dumps(widgets)
    for name in (
        "ActiveCalls",
        "VoiceToVoice",
        *observability.TURN_STAGES,
        "Interruptions",
        "ToolSucceeded",
        "ToolFailed",
        "CallAnswered",
        "Invocations",
        "Throttles",
        "RunningTaskCount",
        "CPUUtilization",
        "HealthyHostCount",
        "5XXError",
    ):
        assert name in body, name
    assert '"stat": "p50"' in body
    assert '"stat": "p95"' in body
    expressions = [
        metric[0]["expression"]
        for widget in widgets
        for metric in widget["properties"].get("metrics", [])
        if isinstance(metric[0], dict) and "expression" in metric[0]
    ]
    # SEARCH matches exactly the dimension names a count is emitted with (streaming/counters.py).
    assert "SEARCH('{Switchboard,service,tool,kind} MetricName=\"ToolErrors\"', 'Sum', 300)" in expressions
    assert "SEARCH('{Switchboard,service,reason} MetricName=\"EndOfTurn\"', 'Sum', 300)" in expressions


def _alarms(deployment: Synthesized) -> list[dict[str, object]]:
    return [alarm["Properties"] for alarm in deployment.resources("AWS::CloudWatch::Alarm").values()]


def test_alarms_cover_errors_latency_5xx_and_task_count(default_deployment: Synthesized) -> None:
    alarms = _alarms(default_deployment)
    text = json.dumps(alarms)
    v2v = next(a for a in alarms if a.get("MetricName") == "VoiceToVoice")
    assert v2v["ExtendedStatistic"] == "p95"
    assert v2v["Threshold"] == observability.V2V_P95_ALARM_MS
    assert next(a for a in alarms if a.get("MetricName") == "5XXError")["Namespace"] == "AWS/ApiGateway"
    tasks = next(a for a in alarms if a.get("MetricName") == "RunningTaskCount")
    assert tasks["ComparisonOperator"] == "LessThanThreshold"
    assert tasks["Threshold"] == 2
    assert tasks["TreatMissingData"] == "breaching"
    assert text.count("100 * errors / MAX([invocations, 1])") == 4
    assert "HTTPCode_Target_5XX_Count" in text
    assert "HealthyHostCount" in text
    assert "ApproximateNumberOfMessagesVisible" in text
    topic = default_deployment.logical_id(default_deployment.stack.observability.topic)
    for alarm in alarms:
        assert alarm["AlarmActions"] == [{"Ref": topic}]


def test_alarm_email_subscribes_when_given(default_deployment: Synthesized, cluster_deployment: Synthesized) -> None:
    default_deployment.template.resource_count_is("AWS::SNS::Subscription", 0)
    cluster_deployment.template.has_resource_properties(
        "AWS::SNS::Subscription", {"Protocol": "email", "Endpoint": "oncall@example.com"}
    )
    tasks = next(a for a in _alarms(cluster_deployment) if a.get("MetricName") == "RunningTaskCount")
    assert tasks["Threshold"] == 3


def test_saved_queries_over_every_log_group(default_deployment: Synthesized) -> None:
    queries = {
        q["Properties"]["Name"]: q["Properties"]
        for q in default_deployment.resources("AWS::Logs::QueryDefinition").values()
    }
    assert set(queries) == {"switchboard/call-timeline", "switchboard/slow-turns", "switchboard/failed-tool-calls"}
    api = default_deployment.stack.api
    groups = {
        json.dumps({"Ref": default_deployment.logical_id(group)})
        for group in (
            api.voice_webhook.log_group,
            api.status_callback.log_group,
            api.tool_actions.log_group,
            api.dialer.log_group,
            default_deployment.stack.media.log_group,
        )
    }
    for query in queries.values():
        assert {json.dumps(name) for name in query["LogGroupNames"]} == groups
    assert 'filter correlation_id = "<CallSid>"' in queries["switchboard/call-timeline"]["QueryString"]
    assert "sort @timestamp asc" in queries["switchboard/call-timeline"]["QueryString"]
    assert 'message = "agent turn"' in queries["switchboard/slow-turns"]["QueryString"]
    assert "Tool call failed" in queries["switchboard/failed-tool-calls"]["QueryString"]


def test_turn_log_and_tool_failure_messages_the_queries_read_exist() -> None:
    source = _source()
    assert 'logger.info("agent turn", extra=report.as_log())' in source
    assert '"Tool call failed"' in source
    assert '"tool action failed"' in source
    assert '"correlation_id"' in source
    assert 'count("ToolErrors", tool=name.value, kind=kind)' in source
    assert 'counters.count("EndOfTurn", reason=reason)' in source


def test_every_log_group_keeps_logs_for_the_configured_time(default_deployment: Synthesized) -> None:
    groups = default_deployment.resources("AWS::Logs::LogGroup")
    assert len(groups) >= 6
    for group in groups.values():
        assert group["Properties"]["RetentionInDays"] == 30
