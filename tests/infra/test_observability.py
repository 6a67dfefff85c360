"""Dashboard, alarms, saved queries and log retention; and every metric name the dashboard uses is one
the code emits."""

import json
import re
from pathlib import Path
from typing import Any

from infra import observability
from switchboard.observability import NAMESPACE
from tests.infra.conftest import Synthesized
from tests.infra.emitted_metrics import emitted_metrics, literal_arguments

REPO = Path(__file__).resolve().parents[2]


def _code() -> list[Path]:
    return [path for folder in ("streaming", "layers", "functions") for path in (REPO / folder).rglob("*.py")]


def _source() -> str:
    return "\n".join(path.read_text() for path in _code())


def _widgets(deployment: Synthesized) -> list[dict[str, Any]]:
    (dashboard,) = deployment.resources("AWS::CloudWatch::Dashboard").values()
    # The body is JSON joined with references (function names, ARNs): put a marker where each goes.
    parts = dashboard["Properties"]["DashboardBody"]["Fn::Join"][1]
    widgets: list[dict[str, Any]] = json.loads("".join(part if isinstance(part, str) else "ref" for part in parts))[
        "widgets"
    ]
    return widgets


_SEARCH = re.compile(r"SEARCH\('\{(?P<schema>[^}]*)\} MetricName=\"(?P<name>\w+)\"'")
_SELECT = re.compile(r"SELECT SUM\((?P<name>\w+)\) FROM SCHEMA\((?P<schema>[^)]*)\)")


def _switchboard_metrics(deployment: Synthesized) -> set[tuple[str, frozenset[str]]]:
    """Every Switchboard metric the dashboard and the alarms read, with its dimensions besides `service`."""
    used: set[tuple[str, frozenset[str]]] = set()

    def add(name: str, dimensions: list[str]) -> None:
        assert "service" in dimensions, name
        used.add((name, frozenset(dimensions) - {"service"}))

    def expression(text: str) -> None:
        for match in (*_SEARCH.finditer(text), *_SELECT.finditer(text)):
            namespace, *dimensions = match["schema"].split(",")
            if namespace == NAMESPACE:
                add(match["name"], dimensions)

    for widget in _widgets(deployment):
        for metric in widget["properties"].get("metrics", []):
            if metric[0] == NAMESPACE:
                add(metric[1], [item for item in metric[2:-1:2] if isinstance(item, str)])
            elif isinstance(metric[0], dict) and "expression" in metric[0]:
                expression(metric[0]["expression"])
    for alarm in _alarms(deployment):
        if alarm.get("Namespace") == NAMESPACE:
            add(str(alarm["MetricName"]), [d["Name"] for d in alarm.get("Dimensions", [])])
        for query in alarm.get("Metrics", []):
            stat = query.get("MetricStat", {}).get("Metric", {})
            if stat.get("Namespace") == NAMESPACE:
                add(stat["MetricName"], [d["Name"] for d in stat.get("Dimensions", [])])
            if "Expression" in query:
                expression(query["Expression"])
    return used


def test_every_metric_on_the_dashboard_and_in_the_alarms_is_emitted_by_the_code(
    default_deployment: Synthesized,
) -> None:
    emitted = {(emission.name, emission.dimensions) for emission in emitted_metrics(_code())}
    used = _switchboard_metrics(default_deployment)
    names = {name for name, _ in used}
    assert {*observability.PROVIDER_COUNTS, *observability.TURN_STAGES, "Errors", "EndOfTurn", "ToolErrors"} <= names
    # Emitted under that name and with exactly those dimensions: a SEARCH, a SCHEMA or a metric with any
    # other set would find nothing.
    assert sorted(used - emitted, key=str) == []
    # The engine-errors alarm adds up Errors{kind} for these kinds: each is one the code counts.
    assert set(observability.ERROR_KINDS) <= literal_arguments(_code(), "count_error")


def test_a_metric_only_named_in_text_or_an_unused_constant_is_not_emitted(tmp_path: Path) -> None:
    """The check above fails for a metric the code no longer emits, even if its name is still written down."""
    module = tmp_path / "module.py"
    module.write_text(
        '''"""Emits "InDocstring"? No: only named here."""
from typing import Final
from aws_lambda_powertools.metrics import single_metric
from streaming import counters

UNUSED_METRIC: Final = "NoLongerEmitted"
USED_METRIC: Final = "Emitted"
_BY_OUTCOME = {"ok": "OutcomeOk", "failed": "OutcomeFailed"}
_STAGES = (("StageA", "a_ms"), ("StageB", "b_ms"))


def count(metric: str, value: int = 1, **dimensions: str) -> None:
    with single_metric(name=metric, unit="Count", value=value, namespace="Switchboard") as emitted:
        for name, dimension in dimensions.items():
            emitted.add_dimension(name=name, value=dimension)


def work(metrics, outcome: str, reason: str) -> None:
    logger.info("NotAMetric happened")
    count(USED_METRIC, reason=reason)
    counters.count("Literal")
    metrics.add_metric(name=_BY_OUTCOME[outcome], unit="Count", value=1)
    for name, _ in _STAGES:
        metrics.add_metric(name=name, unit="Milliseconds", value=1.0)
'''
    )
    emitted = {(emission.name, tuple(sorted(emission.dimensions))) for emission in emitted_metrics([module])}
    assert emitted == {
        ("Emitted", ("reason",)),
        ("Literal", ()),
        ("OutcomeOk", ()),
        ("OutcomeFailed", ()),
        ("StageA", ()),
        ("StageB", ()),
    }


def test_dashboard_shows_calls_latency_stages_tools_errors_and_health(default_deployment: Synthesized) -> None:
    widgets = _widgets(default_deployment)
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


def test_providers_row_shows_each_provider_count_by_its_dimensions(default_deployment: Synthesized) -> None:
    widgets = _widgets(default_deployment)
    titles = [widget["properties"].get("title", "") for widget in widgets]
    providers = next(i for i, w in enumerate(widgets) if w["properties"].get("markdown", "").startswith("## Providers"))
    row = widgets[providers + 1 : providers + 5]
    assert {widget["y"] for widget in row} == {widgets[providers]["y"] + widgets[providers]["height"]}
    assert sum(widget["width"] for widget in row) == 24
    expressions = {
        metric[0]["expression"]
        for widget in row
        for metric in widget["properties"]["metrics"]
        if isinstance(metric[0], dict) and "expression" in metric[0]
    }
    assert expressions == {
        "SEARCH('{Switchboard,service,reason} MetricName=\"TranscribeStreamReopened\"', 'Sum', 300)",
        "SEARCH('{Switchboard,service,provider,reason} MetricName=\"TtsErrors\"', 'Sum', 300)",
        "SEARCH('{Switchboard,service,provider,reason} MetricName=\"TtsRetries\"', 'Sum', 300)",
        "SEARCH('{Switchboard,service,provider,reason} MetricName=\"LlmRetries\"', 'Sum', 300)",
        "SEARCH('{Switchboard,service,operation} MetricName=\"PhraseCacheErrors\"', 'Sum', 300)",
    }
    (dropped,) = [m for widget in row for m in widget["properties"]["metrics"] if m[0] == "Switchboard"]
    assert dropped[:4] == ["Switchboard", "TranscribeAudioDroppedMs", "service", "switchboard"]
    assert dropped[4] == {"label": "audio dropped (ms)", "stat": "Sum", "yAxis": "right"}
    assert "Transcribe streams reopened, by reason" in titles


def test_provider_alarms_watch_every_provider_and_reason(default_deployment: Synthesized) -> None:
    by_expression = {
        query["Expression"]: alarm
        for alarm in _alarms(default_deployment)
        for query in alarm.get("Metrics", [])
        if "Expression" in query
    }
    # A Metrics Insights query, not SEARCH (which an alarm cannot use): a reason first counted after the
    # deploy is still in the sum.
    tts = by_expression[
        "SELECT SUM(TtsErrors) FROM SCHEMA(Switchboard,service,provider,reason) WHERE service = 'switchboard'"
    ]
    assert tts["Threshold"] == observability.TTS_ERRORS_PER_5_MIN
    assert tts["EvaluationPeriods"] == 1
    assert tts["ComparisonOperator"] == "GreaterThanThreshold"
    assert tts["TreatMissingData"] == "notBreaching"
    reopened = by_expression[
        "SELECT SUM(TranscribeStreamReopened) FROM SCHEMA(Switchboard,service,reason) "
        "WHERE service = 'switchboard' AND reason != 'age'"
    ]
    assert reopened["Threshold"] == observability.TRANSCRIBE_REOPENS_PER_5_MIN
    assert (reopened["EvaluationPeriods"], reopened["DatapointsToAlarm"]) == (2, 2)
    for alarm in (tts, reopened):
        (query,) = alarm["Metrics"]
        assert query["Period"] == 300
        assert query["ReturnData"] is True


def test_the_routine_transcribe_reopen_reason_is_the_one_the_code_counts() -> None:
    transcribe = (REPO / "streaming" / "providers" / "transcribe.py").read_text()
    assert f'raise _Replace("{observability.ROUTINE_REOPEN_REASON}")' in transcribe


def _alarms(deployment: Synthesized) -> list[dict[str, Any]]:
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
    assert len(alarms) == 13
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
