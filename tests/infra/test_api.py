"""The REST API, its routes and auth, and the functions: ARM64 Python 3.12, the bundled layer, settings
complete, one least-privilege role each."""

import json
from pathlib import Path
from typing import Any

import pytest
from aws_cdk import aws_lambda as lambda_

from switchboard.settings import (
    DialerSettings,
    StatusCallbackSettings,
    ToolActionsSettings,
    VoiceWebhookSettings,
    _Settings,
)
from tests.infra.conftest import Synthesized

REPO = Path(__file__).resolve().parents[2]
IAM_ROUTES = ("/calls", "/schedules", "/tools")


def _paths(deployment: Synthesized) -> dict[str, str]:
    """Resource logical id → full path, from the template's AWS::ApiGateway::Resource tree."""
    resources = deployment.resources("AWS::ApiGateway::Resource")
    paths: dict[str, str] = {}

    def path_of(logical_id: str) -> str:
        if logical_id not in paths:
            props = resources[logical_id]["Properties"]
            parent = props["ParentId"]
            prefix = path_of(parent["Ref"]) if "Ref" in parent else ""
            paths[logical_id] = f"{prefix}/{props['PathPart']}"
        return paths[logical_id]

    for logical_id in resources:
        path_of(logical_id)
    return paths


def _methods(deployment: Synthesized) -> dict[tuple[str, str], dict[str, Any]]:
    paths = _paths(deployment)
    methods = {}
    for method in deployment.resources("AWS::ApiGateway::Method").values():
        props = method["Properties"]
        if props["HttpMethod"] == "OPTIONS":
            continue
        methods[(paths[props["ResourceId"]["Ref"]], props["HttpMethod"])] = props
    return methods


def _functions(deployment: Synthesized) -> dict[str, lambda_.Function]:
    api = deployment.stack.api
    return {
        "voice_webhook": api.voice_webhook,
        "status_callback": api.status_callback,
        "tool_actions": api.tool_actions,
        "dialer": api.dialer,
    }


def test_every_route_of_the_openapi_spec_and_no_other(default_deployment: Synthesized) -> None:
    spec = json.loads((REPO / "docs" / "openapi.json").read_text())
    expected = {(path, method.upper()) for path, item in spec["paths"].items() for method in item}
    assert set(_methods(default_deployment)) == expected


def test_iam_auth_on_calls_schedules_and_tools_and_none_on_twilio(default_deployment: Synthesized) -> None:
    for (path, method), props in _methods(default_deployment).items():
        if path.startswith(IAM_ROUTES):
            assert props["AuthorizationType"] == "AWS_IAM", (path, method)
        else:
            assert path.startswith("/twilio/"), path
            assert props["AuthorizationType"] == "NONE", (path, method)


def test_routes_reach_their_functions(default_deployment: Synthesized) -> None:
    owner = {
        "/twilio/voice": "voice_webhook",
        "/twilio/stream-ended": "voice_webhook",
        "/twilio/amd": "voice_webhook",
        "/twilio/status": "status_callback",
        "/tools/{name}": "tool_actions",
        "/calls": "dialer",
        "/calls/{sid}": "dialer",
        "/schedules": "dialer",
    }
    functions = _functions(default_deployment)
    for (path, _), props in _methods(default_deployment).items():
        uri = json.dumps(props["Integration"]["Uri"])
        assert props["Integration"]["Type"] == "AWS_PROXY"
        assert default_deployment.logical_id(functions[owner[path]]) in uri, path


def test_stage_has_access_logs_execution_logs_tracing_and_throttling(default_deployment: Synthesized) -> None:
    stage = next(iter(default_deployment.resources("AWS::ApiGateway::Stage").values()))["Properties"]
    assert stage["StageName"] == "prod"
    assert "DestinationArn" in stage["AccessLogSetting"]
    assert "$context.requestId" in stage["AccessLogSetting"]["Format"]
    assert stage["TracingEnabled"] is True
    settings = stage["MethodSettings"][0]
    assert settings["LoggingLevel"] == "ERROR"
    assert settings["DataTraceEnabled"] is False
    assert settings["ThrottlingRateLimit"] == 50
    assert settings["ThrottlingBurstLimit"] == 100


@pytest.mark.parametrize("name", ["voice_webhook", "status_callback", "tool_actions", "dialer"])
def test_function_runs_python_312_on_arm64_with_the_layer(default_deployment: Synthesized, name: str) -> None:
    function = _functions(default_deployment)[name]
    props = default_deployment.resources("AWS::Lambda::Function")[default_deployment.logical_id(function)]["Properties"]
    assert props["Runtime"] == "python3.12"
    assert props["Architectures"] == ["arm64"]
    assert props["Handler"] == "handler.lambda_handler"
    assert props["TracingConfig"] == {"Mode": "Active"}
    assert props["Layers"] == [{"Ref": default_deployment.logical_id(default_deployment.stack.api.layer)}]
    assert props["Environment"]["Variables"]["AGENTS_DIR"] == "/opt/agents"
    code = default_deployment.asset_dir(props["Code"]["S3Key"].removesuffix(".zip"))
    assert (code / "handler.py").is_file()


SETTINGS: dict[str, type[_Settings]] = {
    "voice_webhook": VoiceWebhookSettings,
    "status_callback": StatusCallbackSettings,
    "tool_actions": ToolActionsSettings,
    "dialer": DialerSettings,
}


@pytest.mark.parametrize("name", list(SETTINGS))
def test_function_environment_fills_its_settings_model(default_deployment: Synthesized, name: str) -> None:
    function = _functions(default_deployment)[name]
    props = default_deployment.resources("AWS::Lambda::Function")[default_deployment.logical_id(function)]["Properties"]
    variables = props["Environment"]["Variables"]
    model = SETTINGS[name]
    # AWS_REGION is set by the Lambda runtime itself (and reserved).
    required = {field.upper() for field, info in model.model_fields.items() if info.is_required()} - {"AWS_REGION"}
    assert required <= set(variables), required - set(variables)
    known = {field.upper() for field in model.model_fields} | {"POWERTOOLS_LOG_LEVEL"}
    assert set(variables) <= known, set(variables) - known
    assert "TWILIO_API_BASE_URL" not in variables
    # Secrets only by ARN: each *_SECRET_ARN is a reference to a stack secret, nothing else is secret-like.
    secrets = set(default_deployment.resources("AWS::SecretsManager::Secret"))
    for key, value in variables.items():
        if key.endswith("_SECRET_ARN"):
            assert value["Ref"] in secrets, key
        else:
            assert not any(word in key for word in ("TOKEN", "PASSWORD", "AUTH", "KEY")), key


def test_layer_holds_arm64_wheels_the_shared_package_and_the_agents(default_deployment: Synthesized) -> None:
    layer = next(iter(default_deployment.resources("AWS::Lambda::LayerVersion").values()))["Properties"]
    assert layer["CompatibleRuntimes"] == ["python3.12"]
    assert layer["CompatibleArchitectures"] == ["arm64"]
    bundle = default_deployment.asset_dir(layer["Content"]["S3Key"].removesuffix(".zip"))
    assert (bundle / "python" / "switchboard" / "records.py").is_file()
    assert list((bundle / "python" / "pydantic_core").glob("*cpython-312-aarch64-linux-gnu.so"))
    assert (bundle / "python" / "aws_lambda_powertools").is_dir()
    assert (bundle / "python" / "twilio").is_dir()
    assert sorted(p.name for p in (bundle / "agents").glob("*.yaml")) == sorted(
        p.name for p in (REPO / "agents").glob("*.yaml")
    )
    assert not list(bundle.rglob("__pycache__"))


def _role_statements(deployment: Synthesized, function: lambda_.Function) -> list[dict[str, Any]]:
    assert function.role is not None
    role_id = deployment.logical_id(function.role)
    statements = []
    for policy in deployment.resources("AWS::IAM::Policy").values():
        if {"Ref": role_id} in policy["Properties"]["Roles"]:
            statements.extend(policy["Properties"]["PolicyDocument"]["Statement"])
    return statements


def _actions(statements: list[dict[str, Any]]) -> set[str]:
    actions: set[str] = set()
    for statement in statements:
        assert statement["Effect"] == "Allow"
        value = statement["Action"]
        actions.update([value] if isinstance(value, str) else value)
    return actions


LOGS_AND_TRACES = {"logs:CreateLogStream", "logs:PutLogEvents", "xray:PutTraceSegments", "xray:PutTelemetryRecords"}
RECORDS = {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query"}


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("voice_webhook", LOGS_AND_TRACES | RECORDS | {"secretsmanager:GetSecretValue", "events:PutEvents"}),
        ("status_callback", LOGS_AND_TRACES | RECORDS | {"secretsmanager:GetSecretValue", "events:PutEvents"}),
        (
            "tool_actions",
            LOGS_AND_TRACES | RECORDS | {"dynamodb:DeleteItem", "secretsmanager:GetSecretValue", "events:PutEvents"},
        ),
        (
            "dialer",
            LOGS_AND_TRACES | RECORDS | {"secretsmanager:GetSecretValue", "scheduler:CreateSchedule", "iam:PassRole"},
        ),
    ],
)
def test_each_function_has_its_own_role_with_only_its_actions(
    default_deployment: Synthesized, name: str, expected: set[str]
) -> None:
    function = _functions(default_deployment)[name]
    statements = _role_statements(default_deployment, function)
    assert _actions(statements) == expected
    roles = {default_deployment.logical_id(f.role) for f in _functions(default_deployment).values() if f.role}
    assert len(roles) == 4
    role = default_deployment.resources("AWS::IAM::Role")[default_deployment.logical_id(function.role)]["Properties"]
    assert "ManagedPolicyArns" not in role


def _resources_for(statements: list[dict[str, Any]], action: str) -> list[Any]:
    found = []
    for statement in statements:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        if action in actions:
            resources = statement["Resource"]
            found.extend(resources if isinstance(resources, list) else [resources])
    return found


def test_secrets_are_scoped_per_function(default_deployment: Synthesized) -> None:
    secrets = default_deployment.stack.secrets
    twilio = {"Ref": default_deployment.logical_id(secrets.twilio)}
    token = {"Ref": default_deployment.logical_id(secrets.stream_token)}
    functions = _functions(default_deployment)
    webhook = _resources_for(
        _role_statements(default_deployment, functions["voice_webhook"]), "secretsmanager:GetSecretValue"
    )
    assert sorted(map(json.dumps, webhook)) == sorted(map(json.dumps, [twilio, token]))
    for name in ("status_callback", "tool_actions", "dialer"):
        assert _resources_for(
            _role_statements(default_deployment, functions[name]), "secretsmanager:GetSecretValue"
        ) == [twilio], name


def test_tables_are_scoped_per_function(default_deployment: Synthesized) -> None:
    tables = default_deployment.stack.tables
    arn = {
        t: {"Fn::GetAtt": [default_deployment.logical_id(t), "Arn"]}
        for t in (tables.calls, tables.appointments, tables.idempotency, tables.do_not_call)
    }
    functions = _functions(default_deployment)
    webhook = _role_statements(default_deployment, functions["voice_webhook"])
    assert _resources_for(webhook, "dynamodb:PutItem") == [arn[tables.calls]]
    tools = _role_statements(default_deployment, functions["tool_actions"])
    assert sorted(map(json.dumps, _resources_for(tools, "dynamodb:DeleteItem"))) == sorted(
        map(json.dumps, [arn[tables.appointments], arn[tables.idempotency]])
    )
    dialer = _role_statements(default_deployment, functions["dialer"])
    assert sorted(map(json.dumps, _resources_for(dialer, "dynamodb:GetItem"))) == sorted(
        map(json.dumps, [arn[tables.calls], arn[tables.do_not_call]])
    )
    assert _resources_for(dialer, "dynamodb:PutItem") == [arn[tables.calls]]


def test_dialer_passes_only_the_scheduler_role_and_creates_only_in_its_group(default_deployment: Synthesized) -> None:
    statements = _role_statements(default_deployment, default_deployment.stack.api.dialer)
    scheduling = default_deployment.stack.scheduling
    assert _resources_for(statements, "iam:PassRole") == [
        {"Fn::GetAtt": [default_deployment.logical_id(scheduling.role), "Arn"]}
    ]
    pass_role = next(s for s in statements if s["Action"] == "iam:PassRole")
    assert pass_role["Condition"] == {"StringEquals": {"iam:PassedToService": "scheduler.amazonaws.com"}}
    (schedules,) = _resources_for(statements, "scheduler:CreateSchedule")
    assert json.dumps(schedules).endswith(':schedule/switchboard-dials/*"]]}')


def test_dialer_is_told_its_own_arn_and_the_scheduler_s(default_deployment: Synthesized) -> None:
    api = default_deployment.stack.api
    props = default_deployment.resources("AWS::Lambda::Function")[default_deployment.logical_id(api.dialer)][
        "Properties"
    ]
    variables = props["Environment"]["Variables"]
    assert props["FunctionName"] == "switchboard-dialer"
    assert json.dumps(variables["DIALER_FUNCTION_ARN"]).endswith(':function:switchboard-dialer"]]}')
    assert variables["SCHEDULE_GROUP"] == "switchboard-dials"
    assert props["Timeout"] == 300


def test_webhooks_answer_within_twilio_s_budget(default_deployment: Synthesized) -> None:
    functions = _functions(default_deployment)
    lambdas = default_deployment.resources("AWS::Lambda::Function")
    for name in ("voice_webhook", "status_callback"):
        assert lambdas[default_deployment.logical_id(functions[name])]["Properties"]["Timeout"] < 15
